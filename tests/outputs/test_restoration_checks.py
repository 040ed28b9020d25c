import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from innerssl.data.biapy_layout import read_image
from innerssl.outputs.restoration_checks import (
    MAE_PANELS,
    middle_slice,
    slice_positions,
    write_mae_checks,
    write_restoration_preview,
    write_slice_picture,
)


def mae_panels(shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    original = torch.rand(shape, generator=generator)
    mask = torch.zeros((1, *shape[1:]), dtype=torch.bool)
    mask[..., : shape[-1] // 2] = True  # left half masked
    masked = torch.where(mask, original.mean(), original)
    reconstruction = torch.rand(shape, generator=generator)
    return original, masked, reconstruction, mask


def test_middle_slice():
    volume = torch.arange(2 * 5 * 3 * 4, dtype=torch.float32).reshape(2, 5, 3, 4)
    np.testing.assert_array_equal(middle_slice(volume), volume[:, 2].numpy())
    assert middle_slice(volume[:, 0]).shape == (2, 3, 4)
    with pytest.raises(ValueError):
        middle_slice(volume[0, 0])


@pytest.mark.parametrize(("shape", "spatial_dims"), [((2, 12, 16), 2), ((1, 6, 12, 16), 3)])
def test_tiff_mae_checks_have_biapy_names_and_full_images(tmp_path, shape, spatial_dims):
    original, masked, reconstruction, mask = mae_panels(shape)
    paths = write_mae_checks(tmp_path, "cell_01", original, masked, reconstruction, mask, ".tiff", spatial_dims)
    assert [path.name for path in paths] == [f"cell_01_{panel}.tif" for panel in MAE_PANELS]
    assert all(path.parent == tmp_path for path in paths)
    stored = [read_image(path, spatial_dims)[0] for path in paths]
    assert all(array.shape == shape for array in stored)
    np.testing.assert_array_equal(stored[0], original.numpy())
    np.testing.assert_array_equal(stored[2], reconstruction.numpy())
    pasted, visible = stored[3], ~np.broadcast_to(mask.numpy(), shape)
    np.testing.assert_array_equal(pasted[visible], original.numpy()[visible])
    np.testing.assert_array_equal(pasted[~visible], reconstruction.numpy()[~visible])
    assert tifffile.TiffFile(paths[0]).is_imagej == (spatial_dims == 3)


def test_png_mae_checks_in_an_epoch_folder(tmp_path):
    original, masked, reconstruction, mask = mae_panels((1, 12, 16))
    paths = write_mae_checks(tmp_path, "img", original, masked, reconstruction, mask, ".png", 2, epoch=4)
    assert [path.relative_to(tmp_path).as_posix() for path in paths] == [
        f"epoch_004/img_{panel}.png" for panel in MAE_PANELS
    ]
    pixels = [np.asarray(Image.open(path)) for path in paths]
    assert all(array.shape == (12, 16) and array.dtype == np.uint8 for array in pixels)
    np.testing.assert_array_equal(pixels[3][:, 8:], pixels[0][:, 8:])  # visible half: the original
    np.testing.assert_array_equal(pixels[3][:, :8], pixels[2][:, :8])  # masked half: the reconstruction


def test_png_mae_checks_of_3d_data_show_the_middle_slice(tmp_path):
    original, masked, reconstruction, mask = mae_panels((1, 5, 12, 16))
    paths = write_mae_checks(tmp_path, "vol", original, masked, reconstruction, mask, ".nii.gz", 3)
    assert [path.suffix for path in paths] == [".png"] * 4
    expected = np.round(original[0, 2].numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(paths[0])), expected)


@pytest.mark.parametrize("shape", [(3, 1, 16, 16), (10, 2, 6, 16, 16), (2, 3, 16, 16)])
def test_restoration_preview_png(tmp_path, shape):
    targets = torch.rand(shape)
    inputs = targets + 0.2 * torch.randn(shape)  # a crappified input leaves [0, 1]
    path = write_restoration_preview(tmp_path / "aug" / "crappify.png", inputs, targets, "crappify", max_images=4)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one_row = write_restoration_preview(tmp_path / "one.png", inputs[:1], targets[:1], "crappify")
    assert Image.open(path).size[1] > Image.open(one_row).size[1]  # one row per image (at most 4)
    assert Image.open(path).size[0] == Image.open(one_row).size[0]  # two columns
    assert not list(path.parent.glob(".*"))
    with pytest.raises(ValueError):
        write_restoration_preview(tmp_path / "bad.png", inputs[:1], targets, "bad")


def test_slice_positions_spread_inside_the_volume():
    assert slice_positions(35) == [8, 17, 26]
    assert slice_positions(2) == [0, 1] and slice_positions(1) == [0]


def test_slice_picture_shows_three_axial_slices_of_each_panel(tmp_path):
    volume = torch.zeros(1, 12, 10, 8)
    volume[:, 3] = 1.0  # slice 3 (the first shown) white, the others black
    path = write_slice_picture(
        tmp_path / "slices" / "a.png", "a", {"original": volume, "view 1": volume * 0, "restoration": volume}, 3
    )
    picture = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    top, bottom = picture[: picture.shape[0] // 3], picture[2 * picture.shape[0] // 3 :]
    assert top.mean() - bottom.mean() > 40  # the white slice fills two panels of the first row only
    with pytest.raises(ValueError, match="one"):
        write_slice_picture(tmp_path / "b.png", "b", {"original": volume, "other": volume[:, :5]}, 3)
