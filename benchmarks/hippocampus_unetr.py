"""Did MONAI's self-supervised pretraining help UNETR on the hippocampus sample? Issue 13's table.

Runs what a user runs: ``Hippocampus_ViTAutoEnc`` (SSL on every training volume, no labels), then
``Hippocampus_UNETR --compare_with_random_init`` from its last checkpoint: the same UNETR from random init and from
the pretrained ViT, for each training-set size (``--sizes``, labeled volumes) and ``--repeats`` seeds, each with
``--patches_per_epoch`` patches per epoch whatever its size (the same steps for 6 volumes as for 24), test Dice
(mean of the anterior and posterior hippocampus) on the test split carved by ``--test_fraction``. Prints the
comparison table (also ``comparison.md`` / ``.csv`` / ``.png`` in the comparison folder), the settings and the
wall time of each stage. ``--chart`` copies comparison.png (e.g. to docs/).

Examples::

    python benchmarks/hippocampus_unetr.py                              # 6 and 24 volumes, 3 seeds
    python benchmarks/hippocampus_unetr.py --sizes=2 --repeats=1 --ssl_epochs=1 --num_epochs=1   # a quick check

Unknown flags go to the finetuning runs (e.g. ``--num_epochs=2``); ``--ssl_flags`` to the pretraining.
Finished stages are reused: the pretraining by its checkpoint, the comparison's children by ``--resume``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT.parent / "shared" / "data" / "hippocampus-sample"


def run(flags: list[str]) -> float:
    """One runner command; returns its wall seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO_ROOT / "runner.py"), *flags], cwd=REPO_ROOT, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=SAMPLE, help="Decathlon-layout hippocampus folder")
    parser.add_argument("--output_dir", type=Path, default=REPO_ROOT / "outputs" / "hippocampus_unetr")
    parser.add_argument("--sizes", default="6,24", help="labeled training volumes per comparison setting")
    parser.add_argument("--repeats", type=int, default=3, help="seeds per setting")
    parser.add_argument("--ssl_epochs", type=int, default=None, help="pretraining epochs (default: the config's)")
    parser.add_argument("--ssl_flags", default="", help="more flags for the pretraining, space-separated")
    parser.add_argument("--test_fraction", type=float, default=0.2, help="test volumes carved from the 60")
    parser.add_argument("--chart", type=Path, default=None, help="copy comparison.png here")
    parser.add_argument(
        "--patches_per_epoch", type=int, default=96, help="finetuning patches per epoch, the same for every size"
    )
    arguments, extra = parser.parse_known_args(argv)
    if not arguments.dataset.is_dir():
        print(f"{arguments.dataset} not found: pass --dataset=<hippocampus folder with imagesTr/ and labelsTr/>")
        return 2
    common = [
        f"--local_dataset={arguments.dataset}",
        f"--output_dir={arguments.output_dir}",
        f"--test_fraction={arguments.test_fraction}",
        "--max_num_gpus=0",
    ]
    ssl = ["--model=Hippocampus_ViTAutoEnc", *common, "--run_name=ssl", *arguments.ssl_flags.split()]
    if arguments.ssl_epochs is not None:
        ssl.append(f"--num_epochs={arguments.ssl_epochs}")
    checkpoint = arguments.output_dir / "Hippocampus_ViTAutoEnc" / "ssl" / "checkpoints" / "last.ckpt"
    ssl_seconds = 0.0 if checkpoint.is_file() else run(ssl)
    comparison = [
        "--model=Hippocampus_UNETR",
        *common,
        f"--local_weights_path={checkpoint}",
        "--compare_with_random_init",
        f"--compare_num_training_volumes={arguments.sizes}",
        f"--compare_repeats={arguments.repeats}",
        "--run_name=comparison",
        f"--patches_per_epoch={arguments.patches_per_epoch}",
        *extra,
    ]
    folder = arguments.output_dir / "Hippocampus_UNETR" / "comparison"
    if folder.is_dir():
        comparison.append("--resume")
    finetune_seconds = run(comparison)
    runs = len(arguments.sizes.split(",")) * arguments.repeats * 2
    print()
    print((folder / "comparison.md").read_text(encoding="utf-8"))
    print(f"Dataset: {arguments.dataset}; test fraction {arguments.test_fraction}; finetuning flags: {extra or 'none'}")
    print(f"SSL pretraining: {ssl_seconds / 60:.1f} min (0: reused {checkpoint})")
    print(
        f"Finetuning: {runs} runs in {finetune_seconds / 60:.1f} min ({finetune_seconds / runs / 60:.1f} min per run)"
    )
    if arguments.chart is not None:
        arguments.chart.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / "comparison.png", arguments.chart)
        print(f"Chart: {arguments.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
