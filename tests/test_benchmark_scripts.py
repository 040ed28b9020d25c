"""The measurement scripts the README quotes run end to end on tiny demo data and print what the README reads.

``benchmarks/demo_ssl_gain.py`` (the demo table) and ``benchmarks/monitor_fidelity.py`` (the online head's
fidelity table) are run as a user runs them, with the quick-run size flags passed through to the SSL runs;
``benchmarks/data_throughput.py`` on a few images at 32 px, loaders only; ``benchmarks/volume_throughput.py`` on a few
hippocampus volumes for one epoch.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT, tiny_demo_flags

TIMEOUT_S = 400


def tiny_flags(tmp_path: Path, **overrides: object) -> list[str]:
    """The tiny demo flags, less those the scripts set themselves (run names, output folders)."""
    return [
        flag
        for flag in tiny_demo_flags(tmp_path, knn_every_n_epochs=1, **overrides)
        if not flag.startswith(("--run_name=", "--output_dir="))
    ]


def run_script(script: str, arguments: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / script), *arguments]
    environment = {**os.environ, **(env or {})}
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, env=environment)


def test_demo_ssl_gain_prints_a_row_per_encoder_and_label_fraction(tmp_path):
    result = run_script(
        "demo_ssl_gain.py",
        [
            "--methods=SimCLR",
            "--seeds=1",
            "--label_fractions=0.1,1.0",
            "--pass_fractions=0.1",
            f"--output_dir={tmp_path / 'gain'}",
            *tiny_flags(tmp_path, num_epochs=1),
        ],
    )
    output = result.stdout + result.stderr
    # PASS (0) or FAIL (1) is what the tiny run measured; anything else is a crash.
    assert result.returncode in (0, 1), output[-3000:]
    rows = re.findall(r"^\s*(0\.1|1)\s+(random|SimCLR)\s+([01]\.\d{3})\s", result.stdout, re.M)
    assert sorted((fraction, encoder) for fraction, encoder, _ in rows) == [
        ("0.1", "SimCLR"),
        ("0.1", "random"),
        ("1", "SimCLR"),
        ("1", "random"),
    ], result.stdout
    assert all(0 <= float(auroc) <= 1 for _, _, auroc in rows)
    verdict = "PASS" if result.returncode == 0 else "FAIL"
    assert f"{verdict}: every SSL row's mean test AUROC beats its random encoder's" in result.stdout
    # The SSL run is an ordinary run of the runner: its checkpoint is where the script probed it from.
    assert (tmp_path / "gain" / "DemoSimCLR" / "seed1" / "checkpoints" / "last.ckpt").is_file()


def test_demo_ssl_gain_gives_each_architecture_of_its_models_a_random_row_and_a_chart(tmp_path):
    result = run_script(
        "demo_ssl_gain.py",
        [
            "--models=DemoSimCLR,DemoVICReg,DemoViTSimCLR",
            "--random_only",
            "--seeds=1",
            "--label_fractions=1.0",
            f"--output_dir={tmp_path / 'gain'}",
            *tiny_flags(tmp_path, demo_image_size=64),  # the ViT configs are built for the demo's 64 px
        ],
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    rows = re.findall(r"^\s*1\s+(random \([^)]*\))\s+([01]\.\d{3})\s", result.stdout, re.M)
    # Two ResNet-18 configs share one random row; the ViT gets its own.
    assert [name for name, _ in rows] == [
        "random (resnet18)",
        "random (vit_tiny_patch16_224 img_size=64,patch_size=16)",
    ], result.stdout
    assert (tmp_path / "gain" / "demo_ssl_gain.png").stat().st_size > 10_000


def test_monitor_fidelity_finds_the_online_head_equal_to_the_converged_probe(tmp_path):
    result = run_script(
        "monitor_fidelity.py",
        ["--model=DemoSimCLR", "--seeds=1", f"--output_dir={tmp_path / 'fidelity'}", *tiny_flags(tmp_path)],
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    # One row per epoch: online, kNN, offline AUROC and the gap; the refit at validation makes the gap zero.
    rows = re.findall(
        r"^\s+(\d)\s+([01]\.\d{3})\s+([01]\.\d{3})\s+([01]\.\d{3})\s+\[[^\]]*\]\s+([+-]\d\.\d{3})", output, re.M
    )
    assert [row[0] for row in rows] == ["1", "2"], output[-3000:]
    for _epoch, online, _knn, offline, gap in rows:
        assert abs(float(online) - float(offline)) <= 0.001 and abs(float(gap)) <= 0.001
    assert "PASS: |online - offline| <= 0.03" in output


def test_data_throughput_prints_the_multi_crop_rate_beside_the_two_view_rate():
    from innerssl.ssl.dino import DINO

    parameters = inspect.signature(DINO.__init__).parameters
    local_crops = parameters["num_local_crops"].default
    local_side = round(parameters["local_crop_size"].default * 32)  # DINO's default, relative to the 32 px views
    flags = ["--view_size=32", "--cache_size=40", "--max_images=8", "--num_generated=8", "--batch_size=4"]
    flags += ["--loader_batches=2", "--workers=0", "--skip_training"]
    # One thread: on a small loaded CPU, OpenMP threads waiting for each other make the tiny figures noise.
    result = run_script("data_throughput.py", flags, env={"OMP_NUM_THREADS": "1"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]

    def rate(kind: str, unit: str) -> float:
        found = re.findall(rf"^\s+{kind}\s+([\d.]+) {unit}", result.stdout, re.M)
        assert len(found) == 1, (kind, result.stdout)
        return float(found[0])

    two_view = rate("innerssl", "pairs/s")  # the existing two-view lines are still there
    assert two_view > 0 and rate("baseline", "pairs/s") > 0
    assert f"2 x 32 + {local_crops} x {local_side} px views ({2 + local_crops} per image)" in result.stdout
    multi_crop = rate("innerssl_multi_crop", "images/s")
    assert multi_crop > 0 and rate("baseline_multi_crop", "images/s") > 0
    line = re.search(r"innerssl multi-crop vs two-view: ([\d.]+) vs ([\d.]+) images/s, ratio ([\d.]+)x", result.stdout)
    assert line is not None, result.stdout
    assert (float(line[1]), float(line[2])) == (multi_crop, two_view)
    assert abs(float(line[3]) - multi_crop / two_view) <= 0.01


def test_restoration_gain_prints_the_gain_over_the_baseline_and_the_segmentation_comparison(tmp_path):
    from tests.conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        import pytest

        pytest.skip(f"shared test data not found at {SHARED_DATA} (it lies beside the checkout in CI)")
    result = run_script(
        "restoration_gain.py",
        [
            "--configs=TIF2D_Crappify",
            "--seeds=1",
            f"--output_dir={tmp_path / 'gain'}",
            "--num_epochs=1",
            "--patches_per_image=1",
            "--max_num_gpus=0",
            "--segmentation_sizes=1",  # the comparison's own test is in tests/test_segmentation_runs.py
        ],
    )
    output = result.stdout + result.stderr
    # PASS (0) or FAIL (1) is what the one-epoch run measured; anything else is a crash.
    assert result.returncode in (0, 1), output[-3000:]
    row = re.search(
        r"^\| TIF2D_Crappify \| microscopy-sample/nuclei-2d \| ([\d.]+) ± [\d.]+ \| ([\d.]+) ± ", output, re.M
    )
    assert row, output[-3000:]
    assert float(row.group(2)) > 10  # the degraded input's PSNR, measured in the same run
    assert re.search(r"^\| on_disk \| [\d.]+ ± ", output, re.M)
    assert "| training images | random init | pretrained | difference (pretrained - random) |" in output
    assert re.search(r"^\| 1 \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| [+-][\d.]+ \|$", output, re.M)


def test_volume_throughput_prints_each_pipelines_rate_and_the_ratio():
    from tests.conftest import SHARED_DATA

    dataset = SHARED_DATA / "hippocampus-sample"
    if not dataset.is_dir():
        import pytest

        pytest.skip(f"shared test data not found at {dataset} (it lies beside the checkout in CI)")
    flags = [f"--dataset={dataset}", "--epochs=1", "--max_volumes=3", "--samples_per_volume=2", "--batch_size=2"]
    result = run_script("volume_throughput.py", flags, env={"OMP_NUM_THREADS": "1"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "3 volumes x 1 epochs, ROI 32^3, 2 samples per volume" in result.stdout
    for name in ("tutorial (monai Dataset, uncached)", "monai CacheDataset", "innerssl (load once + patches)"):
        found = re.search(rf"^  {re.escape(name)}\s+([\d.]+) volumes/s\s+([\d.]+) samples/s", result.stdout, re.M)
        assert found is not None and float(found[1]) > 0, result.stdout
        assert abs(float(found[2]) - 2 * float(found[1])) <= 0.01 * float(found[2]) + 0.2  # 2 samples a volume
    ratio = re.search(r"^ratio innerssl / tutorial: ([\d.]+)x$", result.stdout, re.M)
    assert ratio is not None and float(ratio[1]) > 0, result.stdout


def test_hippocampus_unetr_prints_the_comparison_of_random_and_pretrained_unetr(tmp_path):
    from tests.conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        import pytest

        pytest.skip(f"shared test data not found at {SHARED_DATA} (it lies beside the checkout in CI)")
    tiny_vit = "--network_options=token_size=16,hidden_size=48,mlp_dim=64,num_layers=1,num_heads=4"
    result = run_script(
        "hippocampus_unetr.py",
        [
            f"--dataset={SHARED_DATA / 'hippocampus-sample'}",
            f"--output_dir={tmp_path / 'hippocampus'}",
            "--sizes=2",
            "--repeats=1",
            "--ssl_epochs=1",
            f"--ssl_flags=--patches_per_image=1 --num_workers=0 {tiny_vit}",
            "--patches_per_epoch=4",
            "--num_epochs=1",
            "--num_workers=0",
        ],
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Training budget: 4 patches per epoch whatever the number of images" in output
    row = re.search(r"^\| 2 \| ([\d.]+) ± [\d.]+ \| ([\d.]+) ± [\d.]+ \| [+-][\d.]+ \|$", output, re.M)
    assert row, output[-3000:]
    assert re.search(r"^Finetuning: 2 runs in [\d.]+ min", output, re.M)
