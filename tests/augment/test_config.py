"""The augmentation YAML schema: shipped files load, defaults are off, every mistake names its key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from innerssl.augment.config import (
    AffineConfig,
    AugmentationConfig,
    AugmentationSection,
    ElasticConfig,
    GaussianNoiseConfig,
    load_augmentation_config,
    parse_augmentation_config,
)
from innerssl.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
AUGMENTATIONS = REPO_ROOT / "augmentations"
SHIPPED = sorted(AUGMENTATIONS.glob("*.yaml"))
SOURCE = "augmentations/x.yaml"

# InnerEye's own file, verbatim in layout: tuple strings and the old add_gaussian_noise switch.
INNEREYE_SSL_YAML = """\
preprocess:
  center_crop_size: 224
  resize: 256
augmentation:
  use_random_horizontal_flip: True
  use_random_affine: True
  use_random_color: True
  use_random_crop: True
  use_gamma_transform: True
  use_random_erasing: True
  add_gaussian_noise: True
  use_elastic_transform: True
  random_horizontal_flip:
    prob: 0.5
  random_erasing:
      scale: (0.15, 0.4)
      ratio: (0.33, 3)
  random_affine:
    max_angle: 180
    max_horizontal_shift: 0.00
    max_vertical_shift: 0.00
    max_shear: 40
  elastic_transform:
    sigma: 4
    alpha: 34
    p_apply: 0.4
  random_color:
    brightness: 0.2
    contrast: 0.2
    saturation: 0.0
  random_crop:
    scale: (0.4, 1.0)
  gaussian_noise:
    std: 0.05
"""


def nested(dotted: str, value: Any) -> dict[str, Any]:
    """``nested("a.b.c", 1)`` -> ``{"a": {"b": {"c": 1}}}``."""
    *parents, leaf = dotted.split(".")
    data: dict[str, Any] = {leaf: value}
    for key in reversed(parents):
        data = {key: data}
    return data


def parse_error(data: Any) -> str:
    with pytest.raises(UserError) as caught:
        parse_augmentation_config(data, SOURCE)
    return str(caught.value)


def test_expected_files_are_shipped() -> None:
    names = {path.name for path in SHIPPED}
    for expected in (
        "cxr_ssl_encoder_augmentations.yaml",
        "cxr_linear_head_augmentations.yaml",
        "cifar_ssl_augmentations.yaml",
        "cifar_linear_head_augmentations.yaml",
        "demo_ssl_augmentations.yaml",
        "demo_linear_head_augmentations.yaml",
    ):
        assert expected in names


@pytest.mark.parametrize("path", SHIPPED, ids=[path.name for path in SHIPPED])
def test_every_shipped_file_loads(path: Path) -> None:
    config = load_augmentation_config(path)
    assert config.source == str(path)
    assert path.read_text(encoding="utf-8").startswith("#"), "each file starts with a comment header"


def test_cxr_encoder_file_matches_innereye() -> None:
    ours = load_augmentation_config(AUGMENTATIONS / "cxr_ssl_encoder_augmentations.yaml")
    innereye = load_from_text(INNEREYE_SSL_YAML)
    assert ours == innereye
    assert ours.augmentation.random_affine == AffineConfig(180, 0.0, 0.0, 40)
    assert ours.augmentation.random_crop.scale == (0.4, 1.0)
    assert ours.augmentation.elastic_transform == ElasticConfig(sigma=4, alpha=34, p_apply=0.4)
    assert ours.augmentation.gaussian_noise == GaussianNoiseConfig(std=0.05, p_apply=0.5)


def load_from_text(text: str) -> AugmentationConfig:
    import yaml

    return parse_augmentation_config(yaml.safe_load(text), "innereye.yaml")


def test_demo_files_values() -> None:
    ssl = load_augmentation_config(AUGMENTATIONS / "demo_ssl_augmentations.yaml")
    # The demo label is a small patch of fine texture: views must keep most of the image, and the noise is mild.
    assert ssl.augmentation.random_crop.scale[0] >= 0.85
    assert ssl.augmentation.random_affine == AffineConfig(5, 0.05, 0.05, 0)
    # The label is texture, not brightness: intensities change more than the images' own exposure and gamma.
    assert "gamma" in ssl.augmentation.enabled and ssl.augmentation.gamma.scale == (0.6, 1.6)
    assert ssl.augmentation.random_color.brightness == ssl.augmentation.random_color.contrast == 0.4
    assert ssl.augmentation.gaussian_noise == GaussianNoiseConfig(std=0.02, p_apply=0.5)
    head = load_augmentation_config(AUGMENTATIONS / "demo_linear_head_augmentations.yaml")
    assert head.augmentation.enabled == ("random_horizontal_flip",)


@pytest.mark.parametrize("data", [None, {}, {"preprocess": None, "augmentation": None}])
def test_missing_sections_mean_everything_off(data: Any) -> None:
    config = parse_augmentation_config(data, SOURCE)
    assert config == AugmentationConfig()
    assert config.preprocess.resize is None and config.preprocess.center_crop_size is None
    assert config.augmentation.enabled == ()
    assert not config.is_random


def test_switch_on_without_parameters_uses_innereye_defaults() -> None:
    config = parse_augmentation_config({"augmentation": {"use_gamma_transform": True}}, SOURCE)
    assert config.augmentation.enabled == ("gamma",)
    assert config.augmentation.gamma.scale == (0.5, 1.5)


def test_parameters_without_switch_stay_off() -> None:
    config = parse_augmentation_config(nested("augmentation.random_affine.max_angle", 10), SOURCE)
    assert config.augmentation.random_affine.max_angle == 10
    assert not config.augmentation.use_random_affine


def test_preprocess_only_keeps_preprocessing() -> None:
    config = load_augmentation_config(AUGMENTATIONS / "cxr_ssl_encoder_augmentations.yaml")
    plain = config.preprocess_only()
    assert plain.preprocess == config.preprocess
    assert plain.augmentation == AugmentationSection()
    assert config.is_random and not plain.is_random


def test_add_gaussian_noise_alias() -> None:
    config = parse_augmentation_config({"augmentation": {"add_gaussian_noise": True}}, SOURCE)
    assert config.augmentation.use_gaussian_noise
    message = parse_error({"augmentation": {"add_gaussian_noise": True, "use_gaussian_noise": True}})
    assert "augmentation.add_gaussian_noise" in message


def test_ranges_accept_lists_and_innereye_tuple_strings() -> None:
    for value in ([0.4, 1.0], (0.4, 1.0), "(0.4, 1.0)", "[0.4, 1]"):
        config = parse_augmentation_config(nested("augmentation.random_crop.scale", value), SOURCE)
        assert config.augmentation.random_crop.scale == (0.4, 1.0)


@pytest.mark.parametrize(
    ("data", "key_path"),
    [
        ({"preprocesss": {}}, "preprocesss"),
        (nested("preprocess.rezise", 256), "preprocess.rezise"),
        (nested("augmentation.use_random_afine", True), "augmentation.use_random_afine"),
        (nested("augmentation.random_affine.max_angel", 10), "augmentation.random_affine.max_angel"),
        (nested("augmentation.label_smoothing.epsilon", 0.1), "augmentation.label_smoothing"),
    ],
)
def test_unknown_key_names_full_path(data: dict[str, Any], key_path: str) -> None:
    message = parse_error(data)
    assert message.startswith(f"{SOURCE}: unknown key {key_path}")
    assert "\n" not in message


def test_unknown_key_suggests_close_match() -> None:
    message = parse_error(nested("augmentation.random_affine.max_angel", 10))
    assert "did you mean max_angle?" in message


def test_message_format_from_the_spec() -> None:
    message = parse_error(nested("augmentation.random_affine.max_angle", "abc"))
    assert message == f"{SOURCE}: augmentation.random_affine.max_angle must be a number >= 0, got 'abc'"


@pytest.mark.parametrize(
    ("key_path", "value", "expectation"),
    [
        ("augmentation.random_affine.max_angle", "abc", "a number >= 0"),
        ("augmentation.random_affine.max_angle", -5, "a number >= 0"),
        ("augmentation.random_affine.max_shear", 90, "< 90"),
        ("augmentation.random_affine.max_horizontal_shift", 1.5, "<= 1"),
        ("augmentation.gaussian_noise.std", -0.1, "a number >= 0"),
        ("augmentation.gaussian_noise.std", True, "a number >= 0"),
        ("augmentation.gaussian_noise.std", float("nan"), "a number >= 0"),
        ("augmentation.gaussian_noise.p_apply", 1.5, "a number >= 0 and <= 1"),
        ("augmentation.random_horizontal_flip.prob", -0.1, "a number >= 0 and <= 1"),
        ("augmentation.random_color.hue", 0.7, "<= 0.5"),
        ("augmentation.random_crop.scale", [0.9, 0.5], "min <= max"),
        ("augmentation.random_crop.scale", [0.0, 1.0], "each > 0 and <= 1"),
        ("augmentation.random_crop.scale", [0.5], "a pair [min, max]"),
        ("augmentation.random_crop.scale", 0.5, "a pair [min, max]"),
        ("augmentation.random_crop.ratio", ["a", 1], "a pair [min, max]"),
        ("augmentation.random_erasing.scale", "(0.5, oops)", "a pair [min, max]"),
        ("augmentation.gamma.scale", [-1, 1], "each > 0"),
        ("augmentation.gaussian_blur.sigma", [2.0, 0.1], "min <= max"),
        ("augmentation.gaussian_blur.kernel_fraction", 0, "> 0 and <= 1"),
        ("augmentation.solarize.threshold", 2, "<= 1"),
        ("augmentation.elastic_transform.alpha", -1, ">= 0"),
        ("augmentation.use_random_affine", "yes please", "true or false"),
        ("augmentation.use_random_affine", 1, "true or false"),
        ("augmentation.random_affine", 5, "a mapping"),
        ("preprocess.resize", 0, "a whole number of pixels >= 1, or null"),
        ("preprocess.resize", 12.5, "a whole number of pixels >= 1, or null"),
        ("preprocess.center_crop_size", True, "a whole number of pixels >= 1, or null"),
    ],
)
def test_bad_value_names_file_and_key_path(key_path: str, value: Any, expectation: str) -> None:
    message = parse_error(nested(key_path, value))
    assert message.startswith(f"{SOURCE}: {key_path} must be ")
    assert expectation in message
    assert "\n" not in message


def test_center_crop_larger_than_resize() -> None:
    message = parse_error({"preprocess": {"resize": 64, "center_crop_size": 96}})
    assert message.startswith(f"{SOURCE}: preprocess.center_crop_size must be <= preprocess.resize (64)")


def test_top_level_must_be_mapping() -> None:
    assert parse_error([1, 2]).startswith(f"{SOURCE}: the file must be a mapping")


@pytest.mark.parametrize("parameter", ["ssl_augmentation_config", "linear_head_augmentation_config"])
def test_missing_file_names_the_parameter(tmp_path: Path, parameter: str) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(UserError) as caught:
        load_augmentation_config(missing, parameter_name=parameter)
    message = str(caught.value)
    assert str(missing) in message
    assert f"--{parameter}" in message


def test_missing_file_without_parameter(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_augmentation_config(tmp_path / "nope.yaml")


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a file"):
        load_augmentation_config(tmp_path)


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("preprocess:\n  resize: 256\naugmentation: [unclosed\n  use_random_crop: True\n")
    with pytest.raises(UserError) as caught:
        load_augmentation_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid YAML at line ")
    assert "\n" not in message


def test_bad_value_in_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("augmentation:\n  random_affine:\n    max_angle: abc\n")
    with pytest.raises(UserError) as caught:
        load_augmentation_config(path)
    assert str(caught.value).startswith(f"{path}: augmentation.random_affine.max_angle must be")


def test_exponent_without_dot_is_a_number(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text("augmentation:\n  gaussian_noise:\n    std: 1e-3\n")
    assert load_augmentation_config(path).augmentation.gaussian_noise.std == pytest.approx(1e-3)


def test_relative_path_falls_back_to_repo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_augmentation_config("augmentations/demo_ssl_augmentations.yaml")
    assert config.source == "augmentations/demo_ssl_augmentations.yaml"
    assert config.augmentation.use_random_crop
