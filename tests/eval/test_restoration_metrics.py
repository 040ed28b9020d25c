import math

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from innerssl.errors import UserError
from innerssl.eval.restoration_metrics import (
    RESTORATION_METRICS,
    RestorationMetrics,
    data_range_of,
    dice_per_class,
    image_metrics,
    mean_dice,
    ssim_window,
)


def noisy_pair(shape, seed=0, noise=0.1):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=generator)
    prediction = (target + noise * torch.randn(shape, generator=generator)).clamp(0, 1)
    return prediction, target


@pytest.mark.parametrize("shape", [(1, 32, 32), (2, 24, 20), (1, 12, 16, 16), (2, 7, 13, 9)])
def test_psnr_mae_mse_follow_their_formulas(shape):
    prediction, target = noisy_pair(shape)
    metrics = image_metrics(prediction, target, 1.0)
    assert set(metrics) == set(RESTORATION_METRICS)
    mse = (prediction.double() - target.double()).square().mean().item()
    assert metrics["mse"] == pytest.approx(mse, rel=1e-5)
    assert metrics["mae"] == pytest.approx((prediction.double() - target.double()).abs().mean().item(), rel=1e-5)
    assert metrics["psnr"] == pytest.approx(10 * math.log10(1.0 / mse), rel=1e-5)
    assert 0 < metrics["ssim"] < 1


def test_psnr_with_a_tuple_range_clamps_to_it_and_uses_its_width():
    generator = torch.Generator().manual_seed(1)
    target = torch.randn(1, 10, 12, 12, generator=generator)
    prediction = target + 0.3 * torch.randn(target.shape, generator=generator)
    low, high = float(target.min()), float(target.max())
    metrics = image_metrics(prediction, target, (low, high))
    clamped_mse = (prediction.clamp(low, high) - target).double().square().mean().item()
    assert metrics["psnr"] == pytest.approx(10 * math.log10((high - low) ** 2 / clamped_mse), rel=1e-5)
    assert metrics["mse"] == pytest.approx((prediction - target).double().square().mean().item(), rel=1e-5)  # raw


def test_ssim_is_one_for_identical_images_and_equals_torchmetrics():
    prediction, target = noisy_pair((1, 32, 32))
    assert image_metrics(target, target, 1.0)["ssim"] == pytest.approx(1.0, abs=1e-6)
    expected = structural_similarity_index_measure(prediction[None], target[None], data_range=1.0).item()
    assert image_metrics(prediction, target, 1.0)["ssim"] == pytest.approx(expected, rel=1e-6)
    volume_prediction, volume_target = noisy_pair((1, 16, 16, 16), seed=2)
    expected_3d = structural_similarity_index_measure(volume_prediction[None], volume_target[None], data_range=1.0)
    assert image_metrics(volume_prediction, volume_target, 1.0)["ssim"] == pytest.approx(expected_3d.item(), rel=1e-6)


def test_ssim_window_fits_small_images():
    assert [ssim_window(size) for size in (2, 3, 4, 7, 8, 10, 11, 64)] == [3, 3, 3, 7, 7, 9, 11, 11]
    for shape in [(1, 5, 40), (1, 2, 16, 16), (3, 1, 16, 16)]:  # small axes, a one-slice volume
        prediction, target = noisy_pair(shape)
        assert 0 < image_metrics(prediction, target, 1.0)["ssim"] < 1
        assert image_metrics(target, target, 1.0)["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(image_metrics(torch.rand(1, 1, 8), torch.rand(1, 1, 8), 1.0)["ssim"])  # a line: no SSIM


def test_identical_images_have_infinite_psnr_and_zero_errors():
    _, target = noisy_pair((1, 8, 16, 16))
    metrics = image_metrics(target.clone(), target, 1.0)
    assert metrics["psnr"] == math.inf
    assert metrics["mae"] == 0 and metrics["mse"] == 0


def test_masked_metrics_count_only_masked_pixels():
    prediction, target = noisy_pair((2, 16, 16))
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[:, :8] = True
    wrong = prediction.clone()
    wrong[:, 8:] = 100.0  # the visible half is wildly wrong
    metrics = image_metrics(wrong, target, 1.0, mask=mask)
    inside_prediction, inside_target = prediction[:, :8].double(), target[:, :8].double()
    mse = (inside_prediction - inside_target).square().mean().item()
    assert metrics["mse"] == pytest.approx(mse, rel=1e-5)
    assert metrics["mae"] == pytest.approx((inside_prediction - inside_target).abs().mean().item(), rel=1e-5)
    assert metrics["psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    assert metrics["ssim"] == pytest.approx(image_metrics(wrong, target, 1.0)["ssim"])  # SSIM: whole image
    empty = image_metrics(wrong, target, 1.0, mask=torch.zeros_like(mask))
    assert math.isnan(empty["psnr"]) and math.isnan(empty["mse"]) and not math.isnan(empty["ssim"])
    with pytest.raises(ValueError, match="mask"):
        image_metrics(wrong, target, 1.0, mask=torch.ones(3, 16, 16, dtype=torch.bool))


def test_data_range_of_each_normalisation():
    target = torch.tensor([[[-1.5, 0.0], [0.5, 2.0]]])
    assert data_range_of("zero_mean_unit_variance", target) == (-1.5, 2.0)
    assert data_range_of("zero_mean_unit_variance", torch.zeros(1, 2, 2)) == (0.0, 1.0)  # constant
    assert data_range_of("percentile", torch.rand(1, 4, 4)) == 1.0
    assert data_range_of("DIV", torch.rand(1, 4, 4)) == 1.0
    assert data_range_of("div", target) == (-1.0, 1.0)  # signed integers divided by their maximum
    with pytest.raises(UserError, match="--normalisation"):
        data_range_of("zscore", target)


def test_accumulator_means_names_and_prefix():
    accumulator = RestorationMetrics(spatial_dims=2, prefix="input_")
    prediction, target = noisy_pair((3, 1, 16, 16))
    accumulator.update(prediction[:2], target[:2], 1.0, name=["a", "b"])
    accumulator.update(prediction[2], target[2], [1.0])
    rows = accumulator.per_image()
    assert [row["name"] for row in rows] == ["a", "b", "image_2"]
    assert set(rows[0]) == {"name", "input_psnr", "input_ssim", "input_mae", "input_mse"}
    means = accumulator.compute()
    assert means["input_mse"] == pytest.approx(sum(row["input_mse"] for row in rows) / 3)
    assert rows[0]["input_psnr"] == pytest.approx(image_metrics(prediction[0], target[0], 1.0)["psnr"])
    assert means["input_psnr"] == pytest.approx(sum(row["input_psnr"] for row in rows) / 3)
    accumulator.reset()
    assert len(accumulator) == 0 and accumulator.compute() == {}
    with pytest.raises(ValueError, match="spatial"):
        accumulator.update(prediction[0, 0], target[0, 0], 1.0)


def test_accumulator_masks_per_image_ranges_and_nan_means():
    accumulator = RestorationMetrics(spatial_dims=3)
    prediction, target = noisy_pair((2, 1, 6, 8, 8))
    masks = torch.zeros(2, 1, 6, 8, 8, dtype=torch.bool)
    masks[0, :, :3] = True  # the second image has no masked pixel: NaN, left out of the mean
    accumulator.update(prediction, target, [1.0, (0.0, 1.0)], mask=masks)
    first = image_metrics(prediction[0], target[0], 1.0, mask=masks[0])
    assert math.isnan(accumulator.per_image()[1]["mse"])
    assert accumulator.compute()["mse"] == pytest.approx(first["mse"])
    accumulator.update(target[0], target[0], 1.0, name="same")
    assert accumulator.compute()["psnr"] == math.inf  # documented: identical images are inf, means follow


def test_dice_against_hand_computed_values():
    prediction = torch.tensor([[0, 1, 1], [2, 2, 0]])
    target = torch.tensor([[0, 1, 0], [2, 0, 0]])
    # class 1: |A|=2, |B|=1, overlap 1 -> 2/3; class 2: |A|=2, |B|=1, overlap 1 -> 2/3; class 3 absent -> NaN
    dice = dice_per_class(prediction, target, num_classes=4)
    assert list(dice) == [1, 2, 3]
    assert dice[1] == pytest.approx(2 / 3) and dice[2] == pytest.approx(2 / 3) and math.isnan(dice[3])
    with_background = dice_per_class(prediction, target, num_classes=4, include_background=True)
    assert with_background[0] == pytest.approx(2 * 2 / (2 + 4))  # |A|=2, |B|=4, overlap 2
    assert mean_dice(dice) == pytest.approx(2 / 3)
    assert math.isnan(mean_dice({1: math.nan}))
    batch = dice_per_class(torch.stack([prediction, prediction]), torch.stack([target, target]), 3)
    assert batch == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3)}  # pooled: same ratio
    assert dice_per_class(target, target, 3) == {1: 1.0, 2: 1.0}
    with pytest.raises(ValueError, match="labels"):
        dice_per_class(prediction, target, num_classes=2)


def test_dice_of_a_perfect_3d_prediction_is_one_for_every_class():
    labels = torch.zeros(6, 7, 5, dtype=torch.int64)
    labels[1:3, 2:5, 1:4] = 1
    labels[4:6, 0:3, 2:5] = 2
    dice = dice_per_class(labels, labels.clone(), num_classes=3)
    assert dice == {1: 1.0, 2: 1.0} and mean_dice(dice) == 1.0
