"""Chest X-ray configs, as InnerEye's: SSL on NIH ChestX-ray14, monitored and finetuned on RSNA Pneumonia.

Dataset folders come from ``--local_dataset`` (NIH for SSL; RSNA for the classifier) and
``--extra_local_dataset_paths`` (RSNA for the SSL runs' linear head). InnerEye trained NIH_RSNA_BYOL on
16 GPUs with a global batch of 1,200; ``ssl_training_batch_size`` is per GPU here.
"""

from innerssl.containers.classifier import SSLClassifierContainer
from innerssl.containers.ssl import SSLContainer


class NIH_RSNA_BYOL(SSLContainer):
    """BYOL on NIH ChestX-ray14 (unlabeled), linear head on RSNA Pneumonia (balanced loss)."""

    ssl_training_dataset_name = "NIH"
    linear_head_dataset_name = "RSNAPneumonia"
    ssl_training_type = "BYOL"
    ssl_encoder = "resnet50"
    in_channels = 1
    ssl_augmentation_config = "augmentations/cxr_ssl_encoder_augmentations.yaml"
    linear_head_augmentation_config = "augmentations/cxr_linear_head_augmentations.yaml"
    use_balanced_binary_loss_for_linear_head = True
    num_epochs = 1000
    ssl_training_batch_size = 100
    linear_head_batch_size = 100
    random_seed = 1
    byol_base_momentum = 0.996


class NIH_RSNA_SimCLR(NIH_RSNA_BYOL):
    """SimCLR on NIH ChestX-ray14, linear head on RSNA Pneumonia."""

    ssl_training_type = "SimCLR"
    projection_hidden_dim = 2048
    projection_dim = 128


class NIH_RSNA_DINO(NIH_RSNA_BYOL):
    """DINO with the paper's multi-crop (2 global, 6 local crops) and head on NIH ChestX-ray14, linear head on RSNA."""

    ssl_training_type = "DINO"
    projection_hidden_dim = 2048
    projection_dim = 256
    dino_output_dim = 65536


class NIH_RSNA_VICReg(NIH_RSNA_BYOL):
    """VICReg on NIH ChestX-ray14, linear head on RSNA Pneumonia; 8192-wide projector as in the paper."""

    ssl_training_type = "VICReg"
    projection_hidden_dim = 8192
    projection_dim = 8192


class NIH_RSNA_BarlowTwins(NIH_RSNA_BYOL):
    """Barlow Twins on NIH ChestX-ray14, linear head on RSNA Pneumonia; 8192-wide projector as in the paper."""

    ssl_training_type = "BarlowTwins"
    projection_hidden_dim = 8192
    projection_dim = 8192


class NIH_RSNA_MoCoV3(NIH_RSNA_BYOL):
    """MoCo v3 on NIH ChestX-ray14, linear head on RSNA Pneumonia; the paper's 4096/256 heads."""

    ssl_training_type = "MoCoV3"
    projection_hidden_dim = 4096
    projection_dim = 256


class NIH_BYOL(NIH_RSNA_BYOL):
    """BYOL on NIH ChestX-ray14 with the linear head on NIH's own Pneumonia labels (no second dataset)."""

    linear_head_dataset_name = "NIHBinary"
    label_names = ["Pneumonia"]


class CXRImageClassifier(SSLClassifierContainer):
    """RSNA Pneumonia classifier (folder in --local_dataset) from an NIH SSL checkpoint (--local_weights_path)."""

    linear_head_dataset_name = "RSNAPneumonia"
    ssl_encoder = "resnet50"
    in_channels = 1
    linear_head_augmentation_config = "augmentations/cxr_linear_head_augmentations.yaml"
    use_balanced_binary_loss_for_classifier = True
    num_epochs = 200
    linear_head_batch_size = 100
    random_seed = 1
