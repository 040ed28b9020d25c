"""The layout of a run's outputs: ``<output_dir>/<model>/<run_name>/``."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from innerssl.errors import UserError

LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT_STEM = "best"


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / f"{BEST_CHECKPOINT_STEM}.ckpt"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def charts(self) -> Path:
        return self.root / "charts"

    @property
    def log_file(self) -> Path:
        return self.root / "log.txt"


def new_run_name() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def resolve_run_folder(output_dir: Path, model_name: str, run_name: str | None, resume: bool) -> RunFolder:
    """The folder of a new run, or of the run to resume (default: the latest one with a last.ckpt)."""
    model_dir = output_dir / model_name
    if not resume:
        name = run_name or new_run_name()
        folder = RunFolder(model_dir / name)
        if folder.last_checkpoint.exists():
            raise UserError(
                f"Run folder {folder.root} already holds a run: add --resume to continue it or choose another "
                "--run_name"
            )
        return folder
    if run_name is not None:
        folder = RunFolder(model_dir / run_name)
    else:
        candidates = sorted(
            (RunFolder(p) for p in model_dir.glob("*") if RunFolder(p).last_checkpoint.is_file()),
            key=lambda f: f.last_checkpoint.stat().st_mtime,
        )
        if not candidates:
            raise UserError(f"--resume: no run of {model_name} with checkpoints/{LAST_CHECKPOINT} under {model_dir}")
        folder = candidates[-1]
    if not folder.last_checkpoint.is_file():
        raise UserError(f"--resume: {folder.last_checkpoint} does not exist; check --run_name and --output_dir")
    return folder
