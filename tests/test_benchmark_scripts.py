"""The measurement scripts the README quotes run end to end on tiny demo data and print what the README reads.

``benchmarks/demo_ssl_gain.py`` (the demo table) and ``benchmarks/monitor_fidelity.py`` (the online head's
fidelity table) are run as a user runs them, with the quick-run size flags passed through to the SSL runs.
"""

from __future__ import annotations

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


def run_script(script: str, arguments: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / script), *arguments]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)


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
    assert f"{verdict}: every SSL method's mean test AUROC beats the random encoder's" in result.stdout
    # The SSL run is an ordinary run of the runner: its checkpoint is where the script probed it from.
    assert (tmp_path / "gain" / "DemoSimCLR" / "seed1" / "checkpoints" / "last.ckpt").is_file()


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
