"""CIFAR configs (as InnerEye's): SSL on CIFAR10 with a linear head on CIFAR10, and the classifier."""

from innerssl.containers.classifier import SSLClassifierContainer
from innerssl.containers.ssl import SSLContainer


class CIFAR10BYOL(SSLContainer):
    """BYOL on CIFAR10 (folder with cifar-10-batches-py/ given by --local_dataset)."""

    ssl_training_dataset_name = "CIFAR10"
    linear_head_dataset_name = "CIFAR10"
    ssl_training_type = "BYOL"
    ssl_encoder = "resnet18"
    in_channels = 3
    ssl_augmentation_config = "augmentations/cifar_ssl_augmentations.yaml"
    linear_head_augmentation_config = "augmentations/cifar_linear_head_augmentations.yaml"
    num_epochs = 2500
    ssl_training_batch_size = 512
    linear_head_batch_size = 1024
    learning_rate = 1e-3
    warmup_epochs = 10


class CIFAR10SimCLR(CIFAR10BYOL):
    """SimCLR on CIFAR10."""

    ssl_training_type = "SimCLR"
    projection_hidden_dim = 2048
    projection_dim = 128


class SSLClassifierCIFAR(SSLClassifierContainer):
    """CIFAR10 classifier from a CIFAR10BYOL/CIFAR10SimCLR checkpoint (--local_weights_path)."""

    linear_head_dataset_name = "CIFAR10"
    ssl_encoder = "resnet18"
    in_channels = 3
    linear_head_augmentation_config = "augmentations/cifar_linear_head_augmentations.yaml"
    num_epochs = 100
    linear_head_batch_size = 1024
    learning_rate = 1e-3
    warmup_epochs = 0
