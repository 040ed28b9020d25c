"""Augmentation YAML files: the schema as frozen dataclasses, and a strict loader.

The layout follows InnerEye's ``cxr_ssl_encoder_augmentations.yaml`` (a ``preprocess`` section and an
``augmentation`` section holding ``use_*`` switches next to one sub-section of parameters per
transform), so InnerEye's own files load unchanged. Example::

    preprocess:
      resize: 256              # shorter side, pixels; null = keep the input size
      center_crop_size: 224    # null = no crop
    augmentation:
      use_random_crop: True
      use_random_affine: True
      random_crop:
        scale: [0.4, 1.0]
      random_affine:
        max_angle: 180
        max_shear: 40

Every switch defaults to off, so a missing section means "not applied". Parameters that are left out
take InnerEye's defaults (``ssl_augmentation_config.py``) or, for transforms InnerEye did not have,
the BYOL paper's values:

=========================  =======================================================================
sub-section                keys (default)
=========================  =======================================================================
random_horizontal_flip     prob (0.5)
random_affine              max_angle (0, degrees), max_horizontal_shift / max_vertical_shift
                           (0.0, fraction of the width / height), max_shear (5, degrees)
random_color               brightness (0.0), contrast (0.1), saturation (0.0), hue (0.0),
                           p_apply (1.0)
random_crop                scale ([0.9, 1.0], area fraction), ratio ([3/4, 4/3], aspect ratio)
gamma                      scale ([0.5, 1.5], range of the exponent)
gaussian_noise             std (0.01), p_apply (0.5)
random_erasing             scale ([0.01, 0.1]), ratio ([0.3, 3.3]), p_apply (0.5)
elastic_transform          sigma (4, pixels), alpha (35, pixels), p_apply (0.5)
gaussian_blur              kernel_fraction (0.1 of the shorter side), sigma ([0.1, 2.0]), p_apply (0.5)
solarize                   threshold (0.5), p_apply (0.2)
=========================  =======================================================================

Switches: ``use_random_horizontal_flip``, ``use_random_affine``, ``use_random_color``,
``use_random_crop``, ``use_gamma_transform``, ``use_gaussian_noise``, ``use_random_erasing``,
``use_elastic_transform``, ``use_gaussian_blur``, ``use_solarize``.

Deviations from InnerEye, on purpose:

- The noise switch is ``use_gaussian_noise`` like all the others; InnerEye's ``add_gaussian_noise`` is
  accepted as an alias (giving both is an error).
- Ranges are YAML lists ``[min, max]``; InnerEye's tuple strings such as ``(0.4, 1.0)`` (which yacs
  evaluated) are accepted too.
- Added, for BYOL/SimCLR: ``gaussian_blur``, ``solarize``, ``random_color.hue`` and
  ``random_color.p_apply``, ``random_crop.ratio``, ``random_erasing.p_apply`` (InnerEye used
  torchvision's implicit 0.5).
- InnerEye's unused ``augmentation.label_smoothing`` node is not part of the schema: label smoothing
  is a loss setting, not an augmentation, so the key is rejected like any other unknown key.
- Unknown keys and out-of-range values are errors (yacs merged anything silently).
- The order of transforms (see :mod:`innerssl.augment.per_sample`) applies the preprocess step first
  and the random crop inside its output, where InnerEye random-cropped the raw image to ``resize``
  and center-cropped afterwards; ``random_crop.scale`` is therefore relative to the preprocessed image.
- ``elastic_transform.alpha`` and ``sigma`` are in pixels, with InnerEye's (Simard 2003) meaning:
  displacement = alpha * (uniform[-1, 1] noise smoothed by a Gaussian of std sigma).

All validation happens here, when the file is read; the builders trust a parsed config.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import yaml

from innerssl.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
"""Relative config paths that do not exist from the working directory are also tried from here."""

Range = tuple[float, float]


# ----------------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True)
class PreprocessConfig:
    """Deterministic resizing applied to every image, with or without augmentation."""

    resize: int | None = None
    """Target length of the shorter side in pixels (aspect ratio kept); None keeps the input size."""
    center_crop_size: int | None = None
    """Side of the square center crop in pixels, taken after the resize; None for no crop."""


@dataclass(frozen=True)
class HorizontalFlipConfig:
    prob: float = 0.5


@dataclass(frozen=True)
class AffineConfig:
    max_angle: float = 0.0
    """Rotation angle is drawn from [-max_angle, max_angle] degrees."""
    max_horizontal_shift: float = 0.0
    """Shift is drawn from [-max, max] times the image width."""
    max_vertical_shift: float = 0.0
    """Shift is drawn from [-max, max] times the image height."""
    max_shear: float = 5.0
    """Shear parallel to the x axis, drawn from [-max_shear, max_shear] degrees."""


@dataclass(frozen=True)
class ColorConfig:
    """Colour jitter; each factor f is drawn from [max(0, 1 - x), 1 + x] (hue shift from [-hue, hue])."""

    brightness: float = 0.0
    contrast: float = 0.1
    saturation: float = 0.0
    """Only applies to 3-channel images; grayscale images have no saturation."""
    hue: float = 0.0
    """Only applies to 3-channel images."""
    p_apply: float = 1.0


@dataclass(frozen=True)
class CropConfig:
    """Random resized crop, resized back to the size the image had (the preprocess output)."""

    scale: Range = (0.9, 1.0)
    """Fraction of the image area kept."""
    ratio: Range = (3 / 4, 4 / 3)
    """Aspect ratio (width / height) of the crop."""


@dataclass(frozen=True)
class GammaConfig:
    scale: Range = (0.5, 1.5)
    """Each pixel x becomes x ** gamma, gamma drawn uniformly from this range."""


@dataclass(frozen=True)
class GaussianNoiseConfig:
    std: float = 0.01
    """Standard deviation of the additive noise, in intensity units ([0, 1] images)."""
    p_apply: float = 0.5


@dataclass(frozen=True)
class ErasingConfig:
    scale: Range = (0.01, 0.1)
    """Fraction of the image area erased (set to 0)."""
    ratio: Range = (0.3, 3.3)
    """Aspect ratio of the erased rectangle."""
    p_apply: float = 0.5


@dataclass(frozen=True)
class ElasticConfig:
    sigma: float = 4.0
    """Smoothness of the displacement field: std of its Gaussian filter, in pixels."""
    alpha: float = 35.0
    """Magnitude of the displacement field, in pixels."""
    p_apply: float = 0.5


@dataclass(frozen=True)
class BlurConfig:
    kernel_fraction: float = 0.1
    """Kernel side as a fraction of the image's shorter side (rounded to an odd number >= 3)."""
    sigma: Range = (0.1, 2.0)
    """Blur std in pixels, drawn uniformly from this range."""
    p_apply: float = 0.5


@dataclass(frozen=True)
class SolarizeConfig:
    threshold: float = 0.5
    """Pixels at or above this intensity are inverted (x -> 1 - x)."""
    p_apply: float = 0.2


@dataclass(frozen=True)
class AugmentationSection:
    """The random transforms: one switch and one parameter block each; all off by default."""

    use_random_horizontal_flip: bool = False
    random_horizontal_flip: HorizontalFlipConfig = field(default_factory=HorizontalFlipConfig)
    use_random_affine: bool = False
    random_affine: AffineConfig = field(default_factory=AffineConfig)
    use_random_color: bool = False
    random_color: ColorConfig = field(default_factory=ColorConfig)
    use_random_crop: bool = False
    random_crop: CropConfig = field(default_factory=CropConfig)
    use_gamma_transform: bool = False
    gamma: GammaConfig = field(default_factory=GammaConfig)
    use_gaussian_noise: bool = False
    gaussian_noise: GaussianNoiseConfig = field(default_factory=GaussianNoiseConfig)
    use_random_erasing: bool = False
    random_erasing: ErasingConfig = field(default_factory=ErasingConfig)
    use_elastic_transform: bool = False
    elastic_transform: ElasticConfig = field(default_factory=ElasticConfig)
    use_gaussian_blur: bool = False
    gaussian_blur: BlurConfig = field(default_factory=BlurConfig)
    use_solarize: bool = False
    solarize: SolarizeConfig = field(default_factory=SolarizeConfig)

    @property
    def enabled(self) -> tuple[str, ...]:
        """Names of the switched-on transforms, in the order the pipelines apply them (for logs)."""
        return tuple(name for name, switch in _SWITCHES.items() if getattr(self, switch))


# Parameter block -> its switch, in pipeline order (see innerssl.augment.per_sample).
_SWITCHES: dict[str, str] = {
    "random_crop": "use_random_crop",
    "random_horizontal_flip": "use_random_horizontal_flip",
    "random_affine": "use_random_affine",
    "random_color": "use_random_color",
    "gamma": "use_gamma_transform",
    "gaussian_blur": "use_gaussian_blur",
    "solarize": "use_solarize",
    "elastic_transform": "use_elastic_transform",
    "gaussian_noise": "use_gaussian_noise",
    "random_erasing": "use_random_erasing",
}
_NOISE_ALIAS = "add_gaussian_noise"
"""InnerEye's name for ``use_gaussian_noise``."""


@dataclass(frozen=True)
class AugmentationConfig:
    """One augmentation YAML file, parsed and validated."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augmentation: AugmentationSection = field(default_factory=AugmentationSection)
    source: str = field(default="<defaults>", compare=False)
    """Where the config came from, for messages."""

    @property
    def is_random(self) -> bool:
        return bool(self.augmentation.enabled)

    def preprocess_only(self) -> AugmentationConfig:
        """The same preprocessing with every augmentation off: the transform for validation and test."""
        return replace(self, augmentation=AugmentationSection())


# ----------------------------------------------------------------------------------------------------
# Loading


def load_augmentation_config(path: Path | str, parameter_name: str | None = None) -> AugmentationConfig:
    """Read and validate an augmentation YAML file.

    ``parameter_name`` is the flag that chose the file (e.g. ``ssl_augmentation_config``); a missing
    file's message names it so the user knows what to fix.
    """
    given = Path(path)
    source = str(path)
    resolved = _resolve(given)
    if resolved is None:
        fix = f"; set --{parameter_name.lstrip('-')} to an existing YAML file" if parameter_name else ""
        raise UserError(f"Augmentation config {source} does not exist{fix}")
    if not resolved.is_file():
        raise UserError(f"Augmentation config {source} is not a file")
    try:
        text = resolved.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"Cannot read augmentation config {source}: {error}") from error
    try:
        data = yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as error:
        raise UserError(f"{source}: invalid YAML{_yaml_position(error)}: {_yaml_problem(error)}") from error
    return parse_augmentation_config(data, source)


def parse_augmentation_config(data: Mapping[str, Any] | None, source: str) -> AugmentationConfig:
    """Validate already-parsed YAML content; ``source`` names it in error messages. None = empty file."""
    root = _Node({} if data is None else data, "", source)
    preprocess = _parse_preprocess(root.child("preprocess"))
    augmentation = _parse_augmentation(root.child("augmentation"))
    root.close()
    return AugmentationConfig(preprocess=preprocess, augmentation=augmentation, source=source)


def _resolve(path: Path) -> Path | None:
    if path.exists():
        return path
    if not path.is_absolute() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return None


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def _yaml_position(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is None:
        return ""
    return f" at line {mark.line + 1}, column {mark.column + 1}"


def _yaml_problem(error: yaml.YAMLError) -> str:
    return str(getattr(error, "problem", None) or error)


# ----------------------------------------------------------------------------------------------------
# Sections


def _parse_preprocess(node: _Node) -> PreprocessConfig:
    resize = node.optional_size("resize")
    crop = node.optional_size("center_crop_size")
    if resize is not None and crop is not None and crop > resize:
        node.fail(
            "center_crop_size",
            f"<= preprocess.resize ({resize}), since the crop is taken from the resized image",
            crop,
        )
    node.close()
    return PreprocessConfig(resize=resize, center_crop_size=crop)


def _parse_augmentation(node: _Node) -> AugmentationSection:
    switches = {switch: node.flag(switch) for switch in _SWITCHES.values()}
    if _NOISE_ALIAS in node:
        if "use_gaussian_noise" in node:
            raise UserError(
                f"{node.source}: give only one of {node.key_path('use_gaussian_noise')} and "
                f"{node.key_path(_NOISE_ALIAS)} (InnerEye's name for the same switch)"
            )
        switches["use_gaussian_noise"] = node.flag(_NOISE_ALIAS)
    blocks = {
        "random_horizontal_flip": _flip(node.child("random_horizontal_flip")),
        "random_affine": _affine(node.child("random_affine")),
        "random_color": _color(node.child("random_color")),
        "random_crop": _crop(node.child("random_crop")),
        "gamma": _gamma(node.child("gamma")),
        "gaussian_noise": _noise(node.child("gaussian_noise")),
        "random_erasing": _erasing(node.child("random_erasing")),
        "elastic_transform": _elastic(node.child("elastic_transform")),
        "gaussian_blur": _blur(node.child("gaussian_blur")),
        "solarize": _solarize(node.child("solarize")),
    }
    node.close()
    return AugmentationSection(**switches, **blocks)


def _flip(node: _Node) -> HorizontalFlipConfig:
    d = HorizontalFlipConfig()
    result = HorizontalFlipConfig(prob=node.number("prob", d.prob, PROBABILITY))
    node.close()
    return result


def _affine(node: _Node) -> AffineConfig:
    d = AffineConfig()
    result = AffineConfig(
        max_angle=node.number("max_angle", d.max_angle, NON_NEGATIVE),
        max_horizontal_shift=node.number("max_horizontal_shift", d.max_horizontal_shift, FRACTION),
        max_vertical_shift=node.number("max_vertical_shift", d.max_vertical_shift, FRACTION),
        max_shear=node.number("max_shear", d.max_shear, SHEAR),
    )
    node.close()
    return result


def _color(node: _Node) -> ColorConfig:
    d = ColorConfig()
    result = ColorConfig(
        brightness=node.number("brightness", d.brightness, NON_NEGATIVE),
        contrast=node.number("contrast", d.contrast, NON_NEGATIVE),
        saturation=node.number("saturation", d.saturation, NON_NEGATIVE),
        hue=node.number("hue", d.hue, HUE),
        p_apply=node.number("p_apply", d.p_apply, PROBABILITY),
    )
    node.close()
    return result


def _crop(node: _Node) -> CropConfig:
    d = CropConfig()
    result = CropConfig(
        scale=node.range("scale", d.scale, AREA_FRACTION),
        ratio=node.range("ratio", d.ratio, POSITIVE),
    )
    node.close()
    return result


def _gamma(node: _Node) -> GammaConfig:
    result = GammaConfig(scale=node.range("scale", GammaConfig().scale, POSITIVE))
    node.close()
    return result


def _noise(node: _Node) -> GaussianNoiseConfig:
    d = GaussianNoiseConfig()
    result = GaussianNoiseConfig(
        std=node.number("std", d.std, NON_NEGATIVE),
        p_apply=node.number("p_apply", d.p_apply, PROBABILITY),
    )
    node.close()
    return result


def _erasing(node: _Node) -> ErasingConfig:
    d = ErasingConfig()
    result = ErasingConfig(
        scale=node.range("scale", d.scale, AREA_FRACTION),
        ratio=node.range("ratio", d.ratio, POSITIVE),
        p_apply=node.number("p_apply", d.p_apply, PROBABILITY),
    )
    node.close()
    return result


def _elastic(node: _Node) -> ElasticConfig:
    d = ElasticConfig()
    result = ElasticConfig(
        sigma=node.number("sigma", d.sigma, NON_NEGATIVE),
        alpha=node.number("alpha", d.alpha, NON_NEGATIVE),
        p_apply=node.number("p_apply", d.p_apply, PROBABILITY),
    )
    node.close()
    return result


def _blur(node: _Node) -> BlurConfig:
    d = BlurConfig()
    result = BlurConfig(
        kernel_fraction=node.number("kernel_fraction", d.kernel_fraction, AREA_FRACTION),
        sigma=node.range("sigma", d.sigma, POSITIVE),
        p_apply=node.number("p_apply", d.p_apply, PROBABILITY),
    )
    node.close()
    return result


def _solarize(node: _Node) -> SolarizeConfig:
    d = SolarizeConfig()
    result = SolarizeConfig(
        threshold=node.number("threshold", d.threshold, UNIT_INTERVAL),
        p_apply=node.number("p_apply", d.p_apply, PROBABILITY),
    )
    node.close()
    return result


# ----------------------------------------------------------------------------------------------------
# Validation helpers


@dataclass(frozen=True)
class Bounds:
    """An allowed interval for a number, and how to say it in an error message."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        """E.g. ``>= 0 and <= 1``."""
        parts = []
        if self.low > -math.inf:
            parts.append(f"{'>' if self.low_open else '>='} {_fmt(self.low)}")
        if self.high < math.inf:
            parts.append(f"{'<' if self.high_open else '<='} {_fmt(self.high)}")
        return " and ".join(parts)


NON_NEGATIVE = Bounds(low=0.0)
POSITIVE = Bounds(low=0.0, low_open=True)
PROBABILITY = Bounds(low=0.0, high=1.0)
UNIT_INTERVAL = PROBABILITY
FRACTION = Bounds(low=0.0, high=1.0)
AREA_FRACTION = Bounds(low=0.0, high=1.0, low_open=True)
SHEAR = Bounds(low=0.0, high=90.0, high_open=True)
HUE = Bounds(low=0.0, high=0.5)

_PAIR_STRING = re.compile(r"^\s*[(\[]\s*([^,()\[\]]+?)\s*,\s*([^,()\[\]]+?)\s*[)\]]\s*$")
"""InnerEye's yacs-style tuple strings, e.g. ``(0.4, 1.0)``."""


def _fmt(value: float) -> str:
    return f"{value:g}"


class _Node:
    """A YAML mapping being read: knows its key path and which keys were used, to report the rest."""

    def __init__(self, data: Any, path: str, source: str) -> None:
        self.path = path
        self.source = source
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            where = f"{path} must be a mapping of keys to values" if path else "the file must be a mapping"
            raise UserError(f"{source}: {where}, got {_show(data)}")
        self.data = data
        self.used: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, expectation: str, value: Any) -> NoReturn:
        raise UserError(f"{self.source}: {self.key_path(key)} must be {expectation}, got {_show(value)}")

    def _take(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def child(self, key: str) -> _Node:
        return _Node(self._take(key), self.key_path(key), self.source)

    def flag(self, key: str, default: bool = False) -> bool:
        if key not in self.data:
            self.used.add(key)
            return default
        value = self._take(key)
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def number(self, key: str, default: float, bounds: Bounds) -> float:
        if key not in self.data:
            self.used.add(key)
            return default
        value = self._take(key)
        if not _is_number(value) or not bounds.contains(float(value)):
            self.fail(key, f"a number {bounds.describe()}", value)
        return float(value)

    def optional_size(self, key: str) -> int | None:
        value = self._take(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail(key, "a whole number of pixels >= 1, or null", value)
        return value

    def range(self, key: str, default: Range, bounds: Bounds) -> Range:
        if key not in self.data:
            self.used.add(key)
            return default
        value = self._take(key)
        expectation = f"a pair [min, max] of numbers, each {bounds.describe()}, with min <= max"
        pair = _as_pair(value)
        if pair is None or not all(bounds.contains(v) for v in pair) or pair[0] > pair[1]:
            self.fail(key, expectation, value)
        return pair

    def close(self) -> None:
        """Reject keys nobody asked for: a typo must not silently switch an augmentation off."""
        unknown = [key for key in self.data if key not in self.used]
        if not unknown:
            return
        key = str(unknown[0])
        known = sorted(self.used)
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; allowed keys: {', '.join(known)}"
        raise UserError(f"{self.source}: unknown key {self.key_path(key)}{hint}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _as_pair(value: Any) -> Range | None:
    if isinstance(value, str):
        match = _PAIR_STRING.match(value)
        if match is None:
            return None
        try:
            value = [float(match.group(1)), float(match.group(2))]
        except ValueError:
            return None
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(_is_number(v) for v in value):
        return None
    return float(value[0]), float(value[1])


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
