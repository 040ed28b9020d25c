"""BiaPy's self-supervised restoration workflow (crappify, masking) and segmentation from its checkpoints, on 2D
images and 3D volumes. Pass the dataset with --local_dataset: BiaPy's layout (train/x, test/x, optional y/), the
Decathlon's (imagesTr, labelsTr) or a flat folder of images; e.g. the shared samples
../shared/data/microscopy-sample/nuclei-2d, nuclei-3d, nih-sample and hippocampus-sample."""

from innerssl.containers.restoration import RestorationContainer
from innerssl.containers.segmentation import SegmentationContainer


class TIF2D_Crappify(RestorationContainer):
    """Crappify pretraining of a 2D U-Net on 16-bit fluorescence TIFFs (BiaPy's noise 0.2 and factor 4)."""

    spatial_dims = 2
    patch_size = [128]
    normalisation = "percentile"
    network = "unet"
    network_options = ["channels=16x32x64x128", "strides=2x2x2"]
    patches_per_image = 8
    batch_size = 4
    num_epochs = 60
    learning_rate = 2e-3
    warmup_epochs = 1
    test_padding = 16
    num_workers = 0


class TIF3D_Crappify(TIF2D_Crappify):
    """Crappify pretraining of a 3D U-Net on TIFF stacks (z, y, x); z is down-sampled too."""

    spatial_dims = 3
    patch_size = [16, 16, 16]
    network_options = ["channels=16x32x64", "strides=2x2"]
    patches_per_image = 16
    test_padding = 2
    num_epochs = 40


class TIF2D_MAE(RestorationContainer):
    """Masking pretraining of a small ViT masked autoencoder on 2D TIFFs (BiaPy's mask ratio 0.5).

    8 px tokens (64 per 64 px patch) instead of BiaPy's 16: on these small images a 16 px token hides whole nuclei,
    and the ViT then learns no more than the mean-filled baseline (measured: 13.8 vs 14.3 dB test PSNR on the
    masked patches, where 8 px tokens give 19.2 dB). A ViT needs many steps before it uses the visible
    neighbours (about 400 on this sample), hence 64 patches per image and 100 epochs.
    """

    pretext_task = "masking"
    spatial_dims = 2
    patch_size = [64]
    normalisation = "percentile"
    network = "vit_mae"
    network_options = [
        "token_size=8",
        "hidden_size=96",
        "mlp_dim=192",
        "num_layers=2",
        "num_heads=4",
        "decoder_hidden_size=64",
        "decoder_mlp_dim=128",
        "decoder_num_layers=1",
        "decoder_num_heads=4",
    ]
    patches_per_image = 64
    batch_size = 8
    num_epochs = 100
    learning_rate = 1e-3
    weight_decay = 0.05
    warmup_epochs = 2
    checks_every_n_epochs = 25
    num_workers = 0


class TIF3D_MAE(TIF2D_MAE):
    """Masking pretraining of a small 3D ViT masked autoencoder on TIFF stacks (8 voxel tokens, 64 per 32^3 patch;
    3D sin-cos embeddings need widths divisible by 6)."""

    spatial_dims = 3
    patch_size = [32, 32, 32]
    network_options = [
        "token_size=8",
        "hidden_size=96",
        "mlp_dim=192",
        "num_layers=2",
        "num_heads=4",
        "decoder_hidden_size=48",
        "decoder_mlp_dim=96",
        "decoder_num_layers=1",
        "decoder_num_heads=4",
    ]
    patches_per_image = 32


class NIH_Crappify(TIF2D_Crappify):
    """Crappify pretraining on NIH ChestX-ray14 PNGs (a flat images/ folder; patient-level test / val carve).

    Whole 1024 px radiographs are validated and tested by about 100 tiles each: without overlap, and with a small
    validation carve, so that a CPU epoch is not mostly validation.
    """

    normalisation = "div"
    in_channels = 1  # two of the sample's PNGs are RGBA copies of gray radiographs
    patches_per_image = 2
    num_epochs = 20
    val_fraction = 0.05
    test_fraction = 0.1
    test_overlap = 0.0
    test_padding = 8
    tile_batch_size = 16


class Hippocampus_Crappify(TIF3D_Crappify):
    """Crappify pretraining of a 3D U-Net on the Decathlon hippocampus MR crops (NIfTI, about 35 x 50 x 35)."""

    patch_size = [32, 32, 32]
    network_options = ["channels=16x32x64", "strides=2x2"]
    test_padding = 4
    patches_per_image = 4


class TIF2D_Segmentation(SegmentationContainer):
    """Nucleus segmentation of 2D TIFFs from instance masks (> 0 is a nucleus), from random init or
    --local_weights_path=<TIF2D_Crappify run>/checkpoints/last.ckpt."""

    spatial_dims = 2
    patch_size = [64]
    normalisation = "percentile"
    network_options = ["channels=16x32x64x128", "strides=2x2x2"]
    patches_per_image = 16
    batch_size = 8
    num_epochs = 30
    learning_rate = 2e-3
    warmup_epochs = 1
    test_padding = 8
    num_workers = 0


class TIF3D_Segmentation(TIF2D_Segmentation):
    """Nucleus segmentation of 3D TIFF stacks, from random init or a TIF3D_Crappify checkpoint."""

    spatial_dims = 3
    patch_size = [16, 16, 16]
    network_options = ["channels=16x32x64", "strides=2x2"]
    test_padding = 2


class NIH_MAE(TIF2D_MAE):
    """Masking pretraining on NIH ChestX-ray14 PNGs: TIF2D_MAE's ViT on 64 px patches of the 1024 px radiographs,
    NIH_Crappify's data settings."""

    normalisation = "div"
    in_channels = 1  # two of the sample's PNGs are RGBA copies of gray radiographs
    patches_per_image = 8
    num_epochs = 10
    val_fraction = 0.05
    test_fraction = 0.1
    checks_every_n_epochs = 5
    tile_batch_size = 32
