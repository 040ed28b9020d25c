"""MONAI's self-supervised recipe on 3D volumes: ViTAutoEnc pretraining (in/out-painting, local pixel shuffle, L1 +
contrastive) on the Decathlon hippocampus MR crops, and UNETR segmentation from random init or from its checkpoint
(the pretrained ViT in UNETR's vit). Pass the dataset with --local_dataset, e.g.
../shared/data/hippocampus-sample (imagesTr, labelsTr)."""

from innerssl.containers.restoration import RestorationContainer
from innerssl.containers.segmentation import SegmentationContainer


class Hippocampus_ViTAutoEnc(RestorationContainer):
    """MONAI's tutorial pretraining of a ViTAutoEnc on the hippocampus crops (about 35 x 50 x 35 voxels).

    The tutorial's 96^3 ROI is adapted to 32^3 patches and its hole sizes scaled by 32/96
    (--autoenc_reference_roi); a CPU-sized ViT (2 layers, width 96) over 16-voxel tokens, which a UNETR takes over.
    Adam at 1e-3, not the tutorial's 1e-4: the tutorial trains for hours; in 20 epochs (1000 steps) at 1e-4 the
    reconstruction had not even reached the images' mean (validation PSNR 5.2 dB), at 1e-3 it reaches 11 dB.
    """

    pretext_task = "vit_autoenc"
    spatial_dims = 3
    patch_size = [32, 32, 32]
    normalisation = "percentile"
    network = "vit_autoenc"
    network_options = ["token_size=16", "hidden_size=96", "mlp_dim=192", "num_layers=2", "num_heads=4"]
    patches_per_image = 4
    batch_size = 4
    num_epochs = 40
    learning_rate = 1e-3
    warmup_epochs = 1
    num_workers = 0
    test_padding = 0


class Hippocampus_Segmentation(SegmentationContainer):
    """Hippocampus segmentation (background, anterior, posterior) on 32^3 patches: a U-Net from random init, or
    with --local_weights_path=<Hippocampus_ViTAutoEnc run>/checkpoints/last.ckpt a UNETR around its ViT."""

    spatial_dims = 3
    patch_size = [32, 32, 32]
    normalisation = "percentile"
    label_mapping = "0:0,1:1,2:2"
    network_options = ["channels=16x32x64", "strides=2x2"]
    num_epochs = 20
    learning_rate = 1e-3
    num_workers = 0


class Hippocampus_UNETR(Hippocampus_Segmentation):
    """MONAI's finetuning on the hippocampus crops: a UNETR (feature size 16, instance norm, residual blocks) whose
    ViT has Hippocampus_ViTAutoEnc's settings, from random init, or with
    --local_weights_path=<Hippocampus_ViTAutoEnc run>/checkpoints/last.ckpt from the pretrained ViT (its settings
    then come from the checkpoint). DiceCE; Dice of both structures; sliding-window inference at the 32^3 ROI."""

    network = "unetr"
    network_options = ["hidden_size=96", "mlp_dim=192", "num_layers=2", "num_heads=4"]
    learning_rate = 1e-3
