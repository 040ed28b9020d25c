"""benchmarks/gpu_check.py in its CPU mode: every check reports figures or a reason, and failures set the exit code.

The script is what a rare, short GPU session runs, so its own bugs must show here first. One run of the tiny CPU
mode (under a minute) with three injected failures covers the ways a check can go wrong: a check that raises
inside a section that goes on (an end-to-end measurement), a check that raises alone in its section (the
classifier run), and a section that hangs until its budget kills its process (ddp.two_gpus).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"
RAISES_INSIDE_A_SECTION = "throughput.BYOL.fp32.innerssl_end_to_end"
RAISES_ALONE = "training.classifier_run"
HANGS = "ddp.two_gpus"
SECTION_PREFIXES = (
    "data.",
    "augmentation.",
    "throughput.BYOL.",
    "goal.",
    "training.ssl_run",
    "training.classifier_run",
    "ddp.one_gpu",
    "ddp.two_gpus",
    "training.fp16_run",
    "throughput.SimCLR.",
    "throughput.ViT",
    "throughput.DINO_multi_crop",
)
SETTINGS = ("fp32", "bf16_channels_last", "bf16_channels_last_compile")
PIPELINES = ("compute_only", "innerssl_end_to_end", "baseline_end_to_end")
DINO_ROWS = tuple(f"throughput.DINO_multi_crop.fp32.{pipeline}" for pipeline in PIPELINES)
"""The CPU mode's DINO multi-crop steps (fp32, batch 4): measured, not skipped."""


def test_cpu_mode_reports_every_check_and_exits_non_zero_on_failures(tmp_path):
    injected = f"{RAISES_INSIDE_A_SECTION},{RAISES_ALONE},{HANGS}:hang"
    command = [sys.executable, str(SCRIPT), "--mode=cpu", f"--output_folder={tmp_path}", f"--inject_failure={injected}"]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output[-3000:]
    assert output.lstrip("=\n").startswith("CPU MODE"), output[:500]  # said first, before any figure

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "cpu"
    checks = {check["id"]: check for check in report["checks"]}
    for prefix in SECTION_PREFIXES:
        assert any(check_id.startswith(prefix) for check_id in checks), f"no {prefix} check in {sorted(checks)}"
    for method in ("BYOL", "SimCLR"):
        for setting in SETTINGS:
            for pipeline in PIPELINES:
                assert f"throughput.{method}.{setting}.{pipeline}" in checks
    assert sorted(report["summary"]["failed"]) == sorted([RAISES_INSIDE_A_SECTION, RAISES_ALONE, HANGS])
    assert "injected failure" in checks[RAISES_INSIDE_A_SECTION]["reason"]
    assert "injected failure" in checks[RAISES_ALONE]["reason"]
    assert "timed out" in checks[HANGS]["reason"]

    for check_id, check in checks.items():
        assert check_id in output  # in the printed table too
        if check_id in report["summary"]["failed"]:
            continue
        assert check["status"] in ("ok", "skipped"), check
        if check["status"] == "skipped":
            assert check["reason"], check
        elif check_id.startswith("throughput."):
            assert check["figures"]["pairs_per_s"] > 0, check
    # A failing check does not stop its section: the next measurement of the same setting has its figure.
    assert checks["throughput.BYOL.fp32.baseline_end_to_end"]["status"] == "ok"
    assert checks["throughput.BYOL.fp32.compute_only"]["figures"]["pairs_per_s"] > 0
    assert checks["training.ssl_run"]["status"] == "ok"
    assert checks["training.ssl_run"]["figures"]["steps"] > 0
    # Sections after the hung one still ran.
    assert checks["throughput.SimCLR.fp32.compute_only"]["status"] == "ok"
    # DINO's multi-crop steps (2 global views + 6 local crops of DINO's relative size, 14 px of 32) are measured.
    for check_id in DINO_ROWS:
        figures = checks[check_id]["figures"]
        assert checks[check_id]["status"] == "ok", checks[check_id]
        assert figures["views"].startswith("8 (2 x 32 + 6 x 14 px"), figures
        assert figures["steps_per_s"] > 0
        assert abs(figures["steps_per_s"] * 4 - figures["pairs_per_s"]) <= 0.01 * figures["pairs_per_s"] + 0.01
    assert 0 < checks[DINO_ROWS[1]]["figures"]["vs_compute"]
    # The no-sync cases (run on the CPU without the sync check) include the multi-crop views.
    cases = checks["augmentation.no_sync"]["figures"]["configs"].split(", ")
    assert "benchmark views/1ch/multi-crop" in cases and "all_on (tests/augment/all_on.py)/3ch/multi-crop" in cases
    assert any(case.startswith("pinned copy + DINO's 2 x 32 + 6 x 14 px views") for case in cases), cases
    assert (tmp_path / "logs" / "throughput.BYOL.log").is_file()


def test_the_wheel_list_is_innerssls_dependencies_beyond_the_gpu_image():
    """What ``python benchmarks/gpu_wheels.py`` downloads, worked out offline from this environment's metadata."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_wheels", REPO_ROOT / "benchmarks" / "gpu_wheels.py")
    assert spec is not None and spec.loader is not None
    gpu_wheels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_wheels)
    packages, missing_image = gpu_wheels.needed_packages(f"{sys.version_info.major}.{sys.version_info.minor}")
    for needed in ("lightly", "param", "monai", "pydicom", "einops", "pylibjpeg-openjpeg"):
        assert needed in packages, needed
    for on_the_image in (
        "torch",
        "torchvision",
        "pytorch-lightning",
        "timm",
        "safetensors",
        "torchmetrics",
        "pandas",
        "numpy",
    ):
        assert on_the_image not in packages, on_the_image
    assert not missing_image
