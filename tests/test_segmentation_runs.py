"""Segmentation (2D and 3D) from BiaPy-layout masks, from random init and from restoration checkpoints: the
pretrained tensors land in the network (BiaPy#165: a transfer that silently loads nothing), --strict_weights,
--weights_part, --freeze_encoder, a masking ViT into UNETR, and the pretrained-vs-random comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from configs.biapy import TIF2D_Segmentation
from innerssl.networks.dense import encoder_keys
from innerssl.outputs.checkpoints import load_checkpoint
from innerssl.runner import main
from tests.test_restoration_runs import MAE_2D, UNET_2D, UNET_3D, run, run_flags, samples


@pytest.fixture(scope="module")
def crappify_checkpoint(tmp_path_factory) -> Path:
    """A 2D crappify run's last checkpoint (one tiny epoch on nuclei-2d)."""
    tmp_path = tmp_path_factory.mktemp("crappify")
    dataset = samples() / "microscopy-sample" / "nuclei-2d"
    folder = run("TIF2D_Crappify", run_flags(tmp_path, dataset, "--patch_size=64", UNET_2D, "--num_epochs=1"), tmp_path)
    return folder / "checkpoints" / "last.ckpt"


def segmentation_flags(tmp_path: Path, *extra: str, run_name: str = "run") -> list[str]:
    dataset = samples() / "microscopy-sample" / "nuclei-2d"
    return run_flags(tmp_path, dataset, "--patch_size=64", UNET_2D, *extra, run_name=run_name)


def container_with(flags: list[str]) -> TIF2D_Segmentation:
    container = TIF2D_Segmentation()
    parsed = {name: value if equals else None for name, equals, value in (flag[2:].partition("=") for flag in flags)}
    container.apply_flags(parsed)
    container.validate()
    return container


def test_segmentation_2d_from_random_init_writes_masks_and_dice(tmp_path):
    folder = run("TIF2D_Segmentation", segmentation_flags(tmp_path), tmp_path)
    assert "segmentation/val_dice" in pd.read_csv(folder / "metrics.csv")
    table = pd.read_csv(folder / "test_metrics.csv")
    assert list(table["name"]) == ["nuclei-3"] and {"dice", "dice_class1"} <= set(table.columns)
    assert 0 <= table["dice"].iloc[0] <= 1
    labels = tifffile.imread(folder / "per_image" / "nuclei-3.tif")
    assert labels.shape == (256, 256) and set(np.unique(labels)) <= {0, 1}
    splits = pd.read_csv(folder / "splits.csv")
    assert all(str(path).endswith(".tif") and "/y/" in str(path) for path in splits.target_path)


def test_pretrained_tensors_land_in_the_segmentation_network(tmp_path, crappify_checkpoint, caplog):
    state = load_checkpoint(crappify_checkpoint)["state_dict"]
    container = container_with(segmentation_flags(tmp_path, f"--local_weights_path={crappify_checkpoint}"))
    datamodule = container.create_datamodule()
    with caplog.at_level("INFO"):
        network = container.create_lightning_module(datamodule).network
    loaded = network.state_dict()
    output = tuple(network.output_layer_prefixes)
    compared = [key for key in loaded if not key.startswith(output)]
    assert compared and all(torch.equal(loaded[key], state[f"network.{key}"]) for key in compared)
    # The new last layer (2 classes instead of 1 restored channel) is skipped and said so.
    assert any(key.startswith(output) and loaded[key].shape != state[f"network.{key}"].shape for key in loaded)
    assert "model.2.conv.weight" in caplog.text


def test_encoder_only_transfer_and_strict_weights(tmp_path, crappify_checkpoint, capsys):
    state = load_checkpoint(crappify_checkpoint)["state_dict"]
    container = container_with(
        segmentation_flags(tmp_path, f"--local_weights_path={crappify_checkpoint}", "--weights_part=encoder")
    )
    network = container.create_lightning_module(container.create_datamodule()).network
    encoder = set(encoder_keys(network))
    loaded = network.state_dict()
    assert encoder and all(torch.equal(loaded[key], state[f"network.{key}"]) for key in encoder)
    decoder = [key for key in loaded if key not in encoder and key.endswith("weight")]
    assert decoder and not any(torch.equal(loaded[key], state[f"network.{key}"]) for key in decoder)
    flags = segmentation_flags(tmp_path, f"--local_weights_path={crappify_checkpoint}", "--strict_weights")
    assert main(["--model=TIF2D_Segmentation", *flags]) != 0
    assert "--strict_weights" in capsys.readouterr().err


def test_frozen_encoder_stays_as_pretrained(tmp_path, crappify_checkpoint):
    state = load_checkpoint(crappify_checkpoint)["state_dict"]
    flags = segmentation_flags(tmp_path, f"--local_weights_path={crappify_checkpoint}", "--freeze_encoder")
    folder = run("TIF2D_Segmentation", flags, tmp_path)
    trained = load_checkpoint(folder / "checkpoints" / "last.ckpt")["state_dict"]
    container = container_with(flags)
    network = container.create_lightning_module(container.create_datamodule()).network
    encoder = [key for key in encoder_keys(network) if key.endswith("weight")]
    assert encoder and all(torch.equal(trained[f"network.{key}"], state[f"network.{key}"]) for key in encoder)
    decoder = [k for k in trained if k.startswith("network.") and k[8:] not in set(encoder_keys(network))]
    assert any(not torch.equal(trained[key], state[key]) for key in decoder if key in state and "weight" in key)


def test_a_classifier_checkpoint_is_refused(tmp_path, crappify_checkpoint, capsys):
    assert main(["--model=TIF2D_Segmentation", *segmentation_flags(tmp_path, "--local_weights_path=/no/such.ckpt")])
    assert "--local_weights_path" in capsys.readouterr().err


def test_masking_vit_goes_into_unetr(tmp_path):
    dataset = samples() / "microscopy-sample" / "nuclei-2d"
    quick = ["--patch_size=32", MAE_2D, "--num_epochs=1", "--test_overlap=0", "--tile_batch_size=16"]
    pretraining = run("TIF2D_MAE", run_flags(tmp_path, dataset, *quick), tmp_path)
    checkpoint = pretraining / "checkpoints" / "last.ckpt"
    state = load_checkpoint(checkpoint)["state_dict"]
    flags = run_flags(
        tmp_path,
        dataset,
        "--patch_size=32",
        f"--local_weights_path={checkpoint}",
        "--network_options=",
        "--num_epochs=1",
        "--test_overlap=0",  # 64 tiles of the 256 px images
        "--tile_batch_size=16",
    )
    container = container_with(flags)
    network = container.create_lightning_module(container.create_datamodule()).network
    assert network.spec.name == "unetr"
    vit = {key: value for key, value in network.state_dict().items() if key.startswith("vit.")}
    assert vit and all(torch.equal(value, state[f"network.{key[4:]}"]) for key, value in vit.items())
    # The comparison's random arm: the same UNETR, none of the checkpoint's tensors.
    baseline = container_with([*flags, "--weights_part=none"])
    random_network = baseline.create_lightning_module(baseline.create_datamodule()).network
    assert random_network.spec == network.spec
    random_vit = {key: value for key, value in random_network.state_dict().items() if key.startswith("vit.")}
    weights = [key for key in random_vit if key.endswith("weight") and "norm" not in key]
    assert weights and not any(torch.equal(random_vit[key], state[f"network.{key[4:]}"]) for key in weights)
    assert main(["--model=TIF2D_Segmentation", *flags]) == 0


def test_segmentation_3d_on_a_tiff_stack(tmp_path):
    dataset = samples() / "microscopy-sample" / "nuclei-3d"
    flags = run_flags(tmp_path, dataset, "--spatial_dims=3", "--patch_size=16", UNET_3D, "--val_fraction=0")
    folder = run("TIF3D_Segmentation", flags, tmp_path)
    labels = tifffile.imread(folder / "per_image" / "nuclei-stack.tif")
    assert labels.shape == tifffile.imread(dataset / "test" / "y" / "nuclei-stack.tif").shape
    assert "dice" in pd.read_csv(folder / "test_metrics.csv")


def test_comparison_of_pretrained_and_random_init(tmp_path, crappify_checkpoint):
    flags = segmentation_flags(
        tmp_path,
        f"--local_weights_path={crappify_checkpoint}",
        "--compare_with_random_init",
        "--compare_num_training_images=1,2",
        "--compare_repeats=1",
        "--num_epochs=1",
        run_name="comparison",
    )
    assert main(["--model=TIF2D_Segmentation", *flags]) == 0
    folder = tmp_path / "outputs" / "TIF2D_Segmentation" / "comparison"
    table = pd.read_csv(folder / "comparison.csv")
    assert sorted(zip(table.num_training_images, table.init)) == [
        (1, "pretrained"),
        (1, "random"),
        (2, "pretrained"),
        (2, "random"),
    ]
    assert table.test_dice.between(0, 1).all()
    markdown = (folder / "comparison.md").read_text()
    assert "difference (pretrained - random)" in markdown and "| 2 |" in markdown
    assert (folder / "comparison.png").is_file()
    # Each child trained on its number of images.
    for _, row in table.iterrows():
        assert "--num_training_images" not in row.run_folder
        assert Path(row.run_folder, "test_metrics.csv").is_file()


def test_unetr_takes_the_vit_size_of_a_preset_checkpoint():
    from configs.volumes import Hippocampus_UNETR
    from innerssl.networks.dense import DenseNetworkSpec

    source = DenseNetworkSpec("vit_autoenc", 3, 1, 1, (32, 32, 32), {"preset": "tiny", "num_layers": 1})
    options = Hippocampus_UNETR().unetr_options(source)
    assert options == {"hidden_size": 192, "mlp_dim": 768, "num_layers": 1, "num_heads": 3}
