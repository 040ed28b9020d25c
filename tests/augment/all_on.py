"""The augmentation config with every switch on, shared by the per-sample and the batched tests."""

from __future__ import annotations

from typing import Any


def all_on_config(resize: int, center_crop_size: int) -> dict[str, Any]:
    """Every augmentation on, with visible strengths and always-applied noise and erasing."""
    return {
        "preprocess": {"resize": resize, "center_crop_size": center_crop_size},
        "augmentation": {
            "use_random_crop": True,
            "use_random_horizontal_flip": True,
            "use_random_affine": True,
            "use_random_color": True,
            "use_gamma_transform": True,
            "use_gaussian_blur": True,
            "use_solarize": True,
            "use_elastic_transform": True,
            "use_gaussian_noise": True,
            "use_random_erasing": True,
            "random_affine": {"max_angle": 30, "max_horizontal_shift": 0.1, "max_vertical_shift": 0.1},
            "random_color": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
            "gaussian_noise": {"std": 0.05, "p_apply": 1.0},
            "random_erasing": {"p_apply": 1.0},
        },
    }
