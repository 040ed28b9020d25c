"""Demo configs on the embedded synthetic radiographs: a laptop CPU runs them in minutes, no download."""

from innerssl.containers.classifier import SSLClassifierContainer
from innerssl.containers.ssl import SSLContainer


class DemoBYOL(SSLContainer):
    """BYOL on the embedded demo radiographs, monitored by a linear head on their opacity labels."""

    ssl_training_dataset_name = "Demo"
    linear_head_dataset_name = "Demo"
    ssl_training_type = "BYOL"
    ssl_encoder = "resnet18"
    in_channels = 1
    ssl_augmentation_config = "augmentations/demo_ssl_augmentations.yaml"
    linear_head_augmentation_config = "augmentations/demo_linear_head_augmentations.yaml"
    num_epochs = 6
    warmup_epochs = 1
    learning_rate = 2e-3
    ssl_training_batch_size = 64
    linear_head_batch_size = 64
    projection_hidden_dim = 1024
    projection_dim = 128
    learning_rate_linear_head_during_ssl_training = 1e-2
    # Few optimizer steps in a demo: a faster-moving target network than BYOL's usual 0.99-0.996.
    byol_base_momentum = 0.9
    num_workers = 2


class DemoSimCLR(DemoBYOL):
    """SimCLR on the embedded demo radiographs, with the same data and schedule as DemoBYOL."""

    ssl_training_type = "SimCLR"
    projection_hidden_dim = 512


class DemoDINO(DemoBYOL):
    """DINO with multi-crop (2 global views, 6 local crops of 28 px) on the demo radiographs, DemoBYOL's schedule."""

    ssl_training_type = "DINO"
    dino_output_dim = 2048
    # Few optimizer steps in a demo: a faster-moving teacher than DINO's usual 0.996.
    dino_base_momentum = 0.9


class DemoVICReg(DemoSimCLR):
    """VICReg on the embedded demo radiographs, with the same data and schedule as DemoSimCLR."""

    ssl_training_type = "VICReg"
    projection_hidden_dim = 1024
    projection_dim = 1024


class DemoBarlowTwins(DemoSimCLR):
    """Barlow Twins on the embedded demo radiographs, with the same data and schedule as DemoSimCLR."""

    ssl_training_type = "BarlowTwins"
    projection_hidden_dim = 1024
    projection_dim = 1024


class DemoMoCoV3(DemoBYOL):
    """MoCo v3 on the embedded demo radiographs, with the same data, schedule and heads as DemoBYOL."""

    ssl_training_type = "MoCoV3"
    # Few optimizer steps in a demo: a faster-moving momentum encoder than MoCo v3's usual 0.99.
    mocov3_base_momentum = 0.9


class DemoClassifier(SSLClassifierContainer):
    """Classifier of the demo opacity label, from a Demo<method> SSL checkpoint (--local_weights_path)."""

    linear_head_dataset_name = "Demo"
    ssl_encoder = "resnet18"
    in_channels = 1
    linear_head_augmentation_config = "augmentations/demo_linear_head_augmentations.yaml"
    num_epochs = 10
    warmup_epochs = 0
    learning_rate = 1e-2
    weight_decay = 1e-4
    linear_head_batch_size = 64
    num_workers = 2
