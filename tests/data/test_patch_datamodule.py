"""Loading splits into memory, random patches (reproducible per epoch and index), whole images, the data module."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import tifffile
import torch
from torch.utils.data import DataLoader

from innerssl.data.biapy_layout import BiaPyLayout
from innerssl.data.datasets.base import BadFileLog, read_bad_file_log
from innerssl.data.image_layouts import find_layout
from innerssl.data.normalisation import Normalisation
from innerssl.data.patch_datamodule import (
    LoadedImage,
    PatchDataModule,
    PatchSampler,
    RandomPatchDataset,
    WholeImageDataset,
    load_split,
    parse_label_mapping,
)
from innerssl.data.tiling import reflect_pad
from innerssl.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NUCLEI_2D = SHARED_DATA / "microscopy-sample" / "nuclei-2d"
NUCLEI_3D = SHARED_DATA / "microscopy-sample" / "nuclei-3d"
HIPPOCAMPUS = SHARED_DATA / "hippocampus-sample"


def needs(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"real sample data {folder} is absent (../shared/data beside the checkout)")


def coordinates(shape: tuple[int, ...]) -> torch.Tensor:
    """(1, *shape) float image whose value is the pixel's flat index, so a patch tells where it came from."""
    return torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(1, *shape)


def loaded(name: str, image: torch.Tensor, target: torch.Tensor | None = None) -> LoadedImage:
    return LoadedImage(name, image, target, Path(f"/nowhere/{name}.tif"), ".tif", 65535.0)


def write_tiff(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, pixels)
    return path


# --- loading ---------------------------------------------------------------------------------------------------


def test_nuclei_2d_loads_with_instance_masks_as_foreground() -> None:
    needs(NUCLEI_2D)
    layout = find_layout(NUCLEI_2D, 2, val_fraction=0, test_fraction=0, seed=0)
    train = load_split(layout, "train", Normalisation("div"), "labels")
    test = load_split(layout, "test", Normalisation("div"), "labels")
    assert [item.name for item in train] == ["nuclei-0", "nuclei-1", "nuclei-2"] and len(test) == 1
    first = train[0]
    assert first.image.shape == (1, 256, 256) and first.image.dtype == torch.float32
    assert 0 <= float(first.image.min()) and float(first.image.max()) <= 1
    assert first.target is not None and first.target.shape == (256, 256) and first.target.dtype == torch.int64
    assert set(first.target.unique().tolist()) == {0, 1}
    raw = tifffile.imread(NUCLEI_2D / "train" / "y" / "nuclei-0.tif")
    assert torch.equal(first.target, torch.from_numpy((raw > 0).astype(np.int64)))
    assert first.suffix == ".tif" and first.dtype_max == 65535.0 and first.source.name == "nuclei-0.tif"
    restoration = load_split(layout, "train", Normalisation("div"), "none")
    assert restoration[0].target is None and torch.equal(restoration[0].image, first.image)


def test_nuclei_3d_loads_volumes_and_targets_as_images() -> None:
    needs(NUCLEI_3D)
    layout = find_layout(NUCLEI_3D, 3, val_fraction=0, test_fraction=0, seed=0)
    (item,) = load_split(layout, "train", Normalisation("percentile"), "image")
    assert item.image.shape == (1, 31, 61, 29)
    assert item.target is not None and item.target.dtype == torch.float32 and item.target.shape == (1, 31, 61, 29)
    assert float(item.target.max()) == 1.0  # normalised like images


def test_hippocampus_labels_follow_the_label_mapping(tmp_path: Path) -> None:
    needs(HIPPOCAMPUS)
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).mkdir()
        for path in sorted((HIPPOCAMPUS / folder).glob("hippocampus_*.nii.gz"))[:3]:
            shutil.copy(path, tmp_path / folder / path.name)
    layout = find_layout(tmp_path, 3, val_fraction=0, test_fraction=0, seed=0)
    normalisation = Normalisation("percentile")
    three = load_split(layout, "train", normalisation, "labels", {0: 0, 1: 1, 2: 2})
    assert all(set(item.target.unique().tolist()) == {0, 1, 2} for item in three if item.target is not None)
    merged = load_split(layout, "train", normalisation, "labels", parse_label_mapping("0:0,1:1,2:1"))
    for whole, binary in zip(three, merged):
        assert binary.target is not None and whole.target is not None
        assert torch.equal(binary.target, (whole.target > 0).long()) and binary.suffix == ".nii.gz"
        assert binary.target.shape == whole.image.shape[1:]
    with pytest.raises(UserError, match=r"hippocampus_\d+\.nii\.gz holds the label value\(s\) 2.*--label_mapping"):
        load_split(layout, "train", normalisation, "labels", {0: 0, 1: 1})


def test_parse_label_mapping() -> None:
    assert parse_label_mapping(" 0:0, 1:1,2:1 ") == {0: 0, 1: 1, 2: 1}
    for bad in ("", "0-1", "a:1", "0:1,0:2", "1:-1", "1"):
        with pytest.raises(UserError, match="--label_mapping"):
            parse_label_mapping(bad)


def test_unreadable_pixels_are_skipped_and_counted(tmp_path: Path) -> None:
    for name in "abc":
        write_tiff(tmp_path / "train" / "x" / f"{name}.tif", np.full((64, 64), 7, dtype=np.uint16))
    cut = tmp_path / "train" / "x" / "b.tif"
    tifffile.imwrite(cut, (np.arange(64 * 64) % 4000).astype(np.uint16).reshape(64, 64), compression="zlib")
    cut.write_bytes(cut.read_bytes()[: int(cut.stat().st_size * 0.6)])  # header fine, pixels broken
    layout = BiaPyLayout.find(tmp_path, 2, val_fraction=0)
    assert len(layout.splits["train"]) == 3  # the header passes the scan
    log = BadFileLog(tmp_path / "bad.txt")
    images = load_split(layout, "train", Normalisation(), "none", bad_file_log=log)
    assert [item.name for item in images] == ["a", "c"]
    assert cut in layout.bad_files and set(read_bad_file_log(tmp_path / "bad.txt")) == {str(cut)}


def test_target_of_another_shape_names_both_files(tmp_path: Path) -> None:
    write_tiff(tmp_path / "train" / "x" / "a.tif", np.zeros((16, 16), dtype=np.uint8))
    write_tiff(tmp_path / "train" / "y" / "a.tif", np.zeros((16, 15), dtype=np.uint8))
    layout = BiaPyLayout.find(tmp_path, 2, val_fraction=0)
    with pytest.raises(UserError, match=r"y/a\.tif has the spatial shape .* its image .*x/a\.tif"):
        load_split(layout, "train", Normalisation(), "labels")


def test_a_label_placed_elsewhere_in_space_is_refused_and_a_rounding_difference_is_not(tmp_path: Path) -> None:
    import nibabel as nib

    image_affine = np.diag([1.5, 1.5, 2.0, 1.0])
    image = np.arange(6 * 7 * 5, dtype=np.int16).reshape(6, 7, 5)
    label = (image % 3).astype(np.uint8)
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).mkdir()
    nib.save(nib.Nifti1Image(image, image_affine), tmp_path / "imagesTr" / "case_001.nii.gz")
    rounded = image_affine + 1e-5  # float32 headers round like this
    nib.save(nib.Nifti1Image(label, rounded), tmp_path / "labelsTr" / "case_001.nii.gz")
    layout = find_layout(tmp_path, 3, val_fraction=0, test_fraction=0, seed=0)
    (item,) = load_split(layout, "train", Normalisation(), "labels")
    assert item.target is not None and item.target.shape == item.image.shape[1:]
    shifted = image_affine.copy()
    shifted[:3, 3] = (0.0, 0.0, 10.0)  # same shape, 10 mm further along z: every voxel pairs with the wrong one
    nib.save(nib.Nifti1Image(label, shifted), tmp_path / "labelsTr" / "case_001.nii.gz")
    with pytest.raises(UserError, match=r"labelsTr/case_001\.nii\.gz and its image .*different affines .*10 mm"):
        load_split(layout, "train", Normalisation(), "labels")


# --- random patches --------------------------------------------------------------------------------------------


def test_patches_are_reproducible_per_epoch_and_index_and_lie_in_the_image() -> None:
    shape = (40, 50)
    dataset = RandomPatchDataset([loaded("a", coordinates(shape))], (8, 12), patches_per_image=6, seed=5)
    assert len(dataset) == 6
    image = coordinates(shape)[0]
    for index in range(len(dataset)):
        patch = dataset[index]["image"]
        assert patch.shape == (1, 8, 12) and "target" not in dataset[index]
        y, x = divmod(int(patch[0, 0, 0]), shape[1])
        assert y + 8 <= shape[0] and x + 12 <= shape[1]
        assert torch.equal(patch[0], image[y : y + 8, x : x + 12])
    epoch0 = [dataset[index]["image"] for index in range(6)]
    twin = RandomPatchDataset([loaded("a", coordinates(shape))], (8, 12), patches_per_image=6, seed=5)
    assert all(torch.equal(twin[index]["image"], epoch0[index]) for index in range(6))
    assert all(torch.equal(dataset[(0, index)]["image"], epoch0[index]) for index in range(6))
    dataset.set_epoch(1)
    epoch1 = [dataset[index]["image"] for index in range(6)]
    assert any(not torch.equal(a, b) for a, b in zip(epoch0, epoch1))
    assert all(torch.equal(dataset[(0, index)]["image"], epoch0[index]) for index in range(6))  # explicit epoch


def test_small_images_are_reflection_padded() -> None:
    image = coordinates((5, 30))
    dataset = RandomPatchDataset([loaded("small", image)], (8, 8), patches_per_image=4, seed=0)
    padded = reflect_pad(image, (0, 0), (3, 0))  # y: 5 -> 8 by reflection at the end; x is long enough
    for index in range(4):
        patch = dataset[index]["image"]
        x = int(patch[0, 0, 0]) % 30
        assert torch.equal(patch, padded[:, :8, x : x + 8])


def test_targets_and_flips_stay_aligned() -> None:
    image = coordinates((20, 24, 28)) / 1000
    restoration = loaded("r", image, image * 2 + 1)
    labels = loaded("l", image, (image[0] > 6).long())
    dataset = RandomPatchDataset([restoration, labels], (6, 8, 10), patches_per_image=8, seed=1, flip=True)
    flipped = 0
    for index in range(len(dataset)):
        item = dataset[index]
        if index < 8:
            assert item["target"].shape == (1, 6, 8, 10)
            assert torch.equal(item["target"], item["image"] * 2 + 1)
        else:
            assert item["target"].shape == (6, 8, 10) and item["target"].dtype == torch.int64
            assert torch.equal(item["target"], (item["image"][0] > 6).long())
        steps = item["image"][0].diff(dim=-1)
        flipped += bool((steps < 0).all())
    assert 0 < flipped < len(dataset)  # some patches flipped along x, not all


def test_foreground_fraction_one_always_sees_foreground() -> None:
    target = torch.zeros(64, 64, dtype=torch.long)
    target[50:53, 5:8] = 1  # one tiny nucleus
    image = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0))
    dataset = RandomPatchDataset([loaded("a", image, target)], (16, 16), 20, seed=0, foreground_fraction=1.0)
    assert all(bool(dataset[index]["target"].any()) for index in range(len(dataset)))
    uniform = RandomPatchDataset([loaded("a", image, target)], (16, 16), 20, seed=0, foreground_fraction=0.0)
    assert not all(bool(uniform[index]["target"].any()) for index in range(len(uniform)))
    with pytest.raises(UserError, match="--foreground_fraction"):
        RandomPatchDataset([loaded("a", image)], (16, 16), 2, foreground_fraction=0.5)
    with pytest.raises(UserError, match="--foreground_fraction"):
        RandomPatchDataset([loaded("a", image, target)], (16, 16), 2, foreground_fraction=1.5)


def test_sampler_shards_and_forwards_the_epoch() -> None:
    dataset = RandomPatchDataset([loaded("a", coordinates((20, 20)))], (4, 4), patches_per_image=7, seed=0)
    sampler = PatchSampler(dataset, seed=3)
    first = list(sampler)
    assert sorted(index for _, index in first) == list(range(7)) and {epoch for epoch, _ in first} == {0}
    sampler.set_epoch(2)
    assert dataset.epoch == 2 and {epoch for epoch, _ in sampler} == {2}
    assert [index for _, index in sampler] != [index for _, index in first]
    shards = [list(PatchSampler(dataset, seed=3, num_replicas=2, rank=rank)) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 4
    assert {index for shard in shards for _, index in shard} == set(range(7))


def test_workers_draw_the_patches_of_the_sampler_epoch() -> None:
    dataset = RandomPatchDataset([loaded("a", coordinates((30, 30)))], (5, 5), patches_per_image=4, seed=0)
    sampler = PatchSampler(dataset, seed=0)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=1, persistent_workers=True)
    batches = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches.append(next(iter(loader))["image"])
    for epoch, batch in enumerate(batches):
        sampler.set_epoch(epoch)
        expected = torch.stack([dataset[pair]["image"] for pair in sampler])
        assert torch.equal(batch, expected)
    assert not torch.equal(batches[0], batches[1])


# --- the data module -------------------------------------------------------------------------------------------


class RecordingModule(pl.LightningModule):
    """Records each training batch with its epoch; trains one scalar so Lightning has something to optimise."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[int, torch.Tensor]] = []
        self.val_names: list[str] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        self.seen.append((self.current_epoch, batch["image"].clone()))
        return (self.weight * batch["image"].mean()) ** 2

    def validation_step(self, batch: dict[str, object], batch_index: int) -> None:
        self.val_names.extend(batch["name"])  # type: ignore[arg-type]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def images(count: int, shape: tuple[int, ...] = (24, 24)) -> list[LoadedImage]:
    return [loaded(f"img{index}", coordinates(shape) + 10_000 * index) for index in range(count)]


def test_trainer_sets_the_sampler_epoch(tmp_path: Path) -> None:
    module = PatchDataModule(images(3), images(2), [], (8, 8), patches_per_image=2, batch_size=3, num_workers=0, seed=0)
    recorder = RecordingModule()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(recorder, datamodule=module)
    assert [epoch for epoch, _ in recorder.seen] == [0, 0, 1, 1]
    for epoch in (0, 1):
        sampler = module.train_sampler()
        sampler.set_epoch(epoch)
        expected = torch.stack([module.train_dataset[pair]["image"] for pair in sampler])
        seen = torch.cat([batch for batch_epoch, batch in recorder.seen if batch_epoch == epoch])
        assert torch.equal(seen, expected)
    assert recorder.val_names == ["img0", "img1"] * 2


def test_whole_image_loader_keeps_names_and_targets() -> None:
    target = torch.ones(1, 20, 30)
    test = [loaded("x", coordinates((20, 30)), target), loaded("y", coordinates((20, 30)), target)]
    module = PatchDataModule(images(2), [], test, (8, 8), 1, 2, 0, 0)
    batches = list(module.test_dataloader())
    assert [batch["name"] for batch in batches] == [["x"], ["y"]]
    assert batches[0]["image"].shape == (1, 1, 20, 30) and batches[0]["target"].shape == (1, 1, 20, 30)
    assert [int(batch["index"]) for batch in batches] == [0, 1]
    assert len(module.val_dataloader()) == 0
    item = WholeImageDataset(images(1))[0]
    assert item["name"] == "img0" and item["index"] == 0 and "target" not in item


def test_num_training_images_and_summary() -> None:
    module = PatchDataModule(images(5), images(1), [], (8, 8), 3, 4, 0, seed=7, num_training_images=2)
    chosen = [item.name for item in module.used_images["train"]]
    assert len(chosen) == 2 and len(module.train_dataset) == 6
    again = PatchDataModule(images(5), [], [], (8, 8), 3, 4, 0, seed=7, num_training_images=2)
    assert [item.name for item in again.used_images["train"]] == chosen
    assert module.layout_summary == {"train": 2, "val": 1, "test": 0}
    assert module.spatial_dims == 2 and module.in_channels == 1
    assert "train 2" in module.describe() and "first 2" in module.describe()
    with pytest.raises(UserError, match="--num_training_images=6"):
        PatchDataModule(images(5), [], [], (8, 8), 3, 4, 0, seed=7, num_training_images=6)
    with pytest.raises(UserError, match="--patch_size"):
        PatchDataModule(images(2), [], [], (8, 8, 8), 3, 4, 0, seed=7)


def test_patches_per_epoch_keeps_the_steps_whatever_the_number_of_images() -> None:
    few = PatchDataModule(images(5), [], [], (8, 8), 3, 4, 0, seed=7, num_training_images=2, patches_per_epoch=12)
    every = PatchDataModule(images(5), [], [], (8, 8), 3, 4, 0, seed=7, patches_per_epoch=12)
    assert few.train_dataset.patches_per_image == 6 and len(few.train_dataset) == 12
    assert every.train_dataset.patches_per_image == 3 and len(every.train_dataset) == 15  # ceil(12 / 5) each


def test_patches_per_epoch_refuses_a_changed_patches_per_image() -> None:
    from configs.volumes import Hippocampus_UNETR

    container = Hippocampus_UNETR()
    container.apply_flags({"patches_per_epoch": "96"})
    container.validate(check_this_machine=False)
    container.apply_flags({"patches_per_image": "4"})
    with pytest.raises(UserError, match="--patches_per_epoch=96 sets the patches per image itself"):
        container.validate(check_this_machine=False)
