"""Every command line README.md shows runs, with the README's own flags, on small data in the same layout.

The commands are read from README.md itself (indented code blocks), so a changed or new command is tested
as written. Each one gets the quick-run size flags it does not set itself (tiny images, one epoch, CPU) and
its placeholders filled: dataset folders (/data/nih -> the NIH sample beside the repository, /data/rsna -> an
RSNA-layout folder built from its pixels), outputs/ -> this test's folder, <run_name> -> the run the earlier
command made. What cannot run here is checked as far as it can: --azureml submissions as dry runs (the job
is built and validated offline), multi-GPU launches (torchrun, srun, --max_num_gpus) by parsing and
validating their flags; install commands are what CI itself runs (.ci/run). A README command that this test
does not know how to run fails the test.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from innerssl.runner import main, parse_flags
from tests.conftest import REPO_ROOT, SHARED_DATA

README = REPO_ROOT / "README.md"
RUN_NAME = "readme"
EXECUTABLES = ("python", "python3", "torchrun", "srun", "pip")

DEMO_QUICK = {
    "demo_num_images": 96,
    "demo_image_size": 32,
    "ssl_training_batch_size": 16,
    "linear_head_batch_size": 16,
    "projection_hidden_dim": 32,
    "projection_dim": 16,
    "num_epochs": 1,
    "warmup_epochs": 0,
    "num_workers": 0,
    "knn_every_n_epochs": 0,
}
IMAGE_QUICK = {
    "ssl_encoder": "resnet18",
    "image_size": 32,
    "ssl_training_batch_size": 16,
    "linear_head_batch_size": 16,
    "projection_hidden_dim": 32,
    "projection_dim": 16,
    "num_epochs": 1,
    "warmup_epochs": 0,
    "num_workers": 0,
    "knn_every_n_epochs": 0,
}


DENSE_QUICK = {
    "num_epochs": 1,
    "warmup_epochs": 0,
    "num_workers": 0,
    "patches_per_image": 1,
    "val_fraction": 0.02,
    "test_fraction": 0.02,
    "compare_repeats": 1,
    "checks_every_n_epochs": 1,
}
"""Restoration and segmentation configs (configs/biapy.py, configs/volumes.py): one patch per image, a few validation
and test images."""


def readme_commands() -> list[str]:
    """Command lines of README.md's indented code blocks (continuation lines joined), in order."""
    commands, current, in_fence = [], None, False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence or not line.startswith("    ") or not line.strip():
            continue
        text = line.strip()
        if current is not None:
            current += " " + text.removesuffix("\\").strip()
            if not text.endswith("\\"):
                commands.append(current)
                current = None
            continue
        if text.split()[0] not in EXECUTABLES:
            continue
        if text.endswith("\\"):
            current = text.removesuffix("\\").strip()
        else:
            commands.append(text)
    return [re.sub(r"\s+#.*$", "", command) for command in commands]


@dataclass
class Session:
    """The folders commands run against and the runs made so far (for ``<run_name>``)."""

    root: Path
    paths: dict[str, str] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)
    """The latest run name of each model."""

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    def new_run(self, model: str, is_run: bool = True) -> str:
        """A fresh run name; ``is_run``: what ``outputs/<model>/<run_name>`` refers to from now on (a comparison
        folder holds no checkpoints of its own)."""
        name = f"{RUN_NAME}{sum(1 for _ in self.root.glob('outputs/*/*'))}"
        if is_run:
            self.runs[model] = name
        return name

    def fill(self, command: str) -> str:
        for placeholder, value in self.paths.items():
            # Whole arguments only: /data/nih must not match inside ../shared/data/nih-sample.
            pattern = rf"(?<=[= ,]){re.escape(placeholder)}(?=[ /,]|$)"
            command = re.sub(pattern, lambda _match, value=value: value, command)

        def latest_run(match: re.Match) -> str:
            model = match.group(1)
            assert model in self.runs, f"README refers to a run of {model} before any command made one"
            return f"{self.outputs}/{model}/{self.runs[model]}"

        command = re.sub(r"(?<![\w/.])outputs/(\w+)/<run_name>", latest_run, command)
        command = command.replace("<SSL job name>", "ssl_job_1")
        return re.sub(r"\s*\[[^\]]*\]", "", command)  # optional [--flag=value] parts are left out


def runner_argv(command: str) -> list[str]:
    words = shlex.split(command)
    start = words.index("runner.py")
    return words[start + 1 :]


def with_quick_flags(argv: list[str], session: Session, quick: dict[str, object]) -> list[str]:
    """The command's own flags, plus the size flags (and this test's folders) it does not set itself."""
    given = parse_flags(argv)
    model = str(given.get("model"))
    added = {
        "output_dir": session.outputs,
        "dataset_cache_dir": session.root / "cache",
        "run_name": session.new_run(model, is_run="compare_with_random_init" not in given),
        "max_num_gpus": 0,
        **quick,
    }
    from innerssl.registry import find_model

    extra = [value for name, value in given.items() if name == "config_module" and value]
    container = find_model(model, extra)()
    leading = {name: given[name] for name in getattr(container, "leading_parameters", ()) if name in given}
    container.apply_flags(leading)  # the SSL method decides which parameters exist
    parameters = type(container).parameters()
    return argv + [f"--{name}={value}" for name, value in added.items() if name not in given and name in parameters]


def run_runner(argv: list[str]) -> None:
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        code = main(argv)
    assert code == 0, f"python runner.py {' '.join(argv)}\n{errors.getvalue()[-2000:]}"


def validate_only(argv: list[str]) -> None:
    """Parse and validate a command meant for other machines (GPUs, nodes) without running it."""
    from innerssl.registry import find_model

    flags = parse_flags(argv)
    model = flags.pop("model")
    container = find_model(str(model))()
    container.apply_flags(flags)
    container.validate(check_this_machine=False)


def write_image_folder(root: Path) -> None:
    generator = np.random.default_rng(0)
    for label in ("normal", "opacity"):
        for index in range(16):
            pixels = generator.integers(0, 255, (40, 40), dtype=np.uint8)
            if label == "opacity":
                pixels[10:30, 10:30] = 255
            path = root / label / f"{label}_{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)


def my_configs_source() -> str:
    """The README's own example config module (the python block that starts with ``# my_configs.py``)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"```python\n(# my_configs.py\n.*?)```", text, re.S)
    assert match, "README lost its my_configs.py example"
    return match.group(1)


Handler = Callable[[str, Session], None]


# Commands of the GPU section run on another machine (or need the package index): the tests that run them here.
COVERED_ELSEWHERE = {
    "benchmarks/gpu_check.py": "test_cpu_mode_reports_every_check_and_exits_non_zero_on_failures",
    "benchmarks/gpu_wheels.py": "test_the_wheel_list_is_innerssls_dependencies_beyond_the_gpu_image",
}


def covered_elsewhere(command: str) -> bool:
    import tests.test_gpu_check as gpu_check_tests

    scripts = [script for script in COVERED_ELSEWHERE if script in command]
    for script in scripts:
        assert hasattr(gpu_check_tests, COVERED_ELSEWHERE[script]), f"no test runs {script} any more"
    return bool(scripts)


def handle(command: str, session: Session) -> None:
    """Run one README command as described in the module docstring."""
    if covered_elsewhere(command):
        return
    if command.startswith(("pip install", "python3 -m venv")):
        runner_part = command.split("&&")[-1].strip()
        if runner_part.startswith("python runner.py"):
            handle(runner_part, session)  # the install itself is what CI runs
        return
    if "--model=NAME" in command:
        if "--help" in command:
            run_runner(["--model=DemoBYOL", "--help"])
        return  # the syntax line of "Commands"
    filled = session.fill(command)
    if filled.startswith("python -m "):
        words = shlex.split(filled)
        result = subprocess.run(
            [sys.executable, *words[1:]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"{filled}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        return
    argv = runner_argv(filled)
    flags = parse_flags(argv)
    if filled.startswith(("torchrun", "srun")) or "max_num_gpus" in flags:
        validate_only(argv)
        return
    if "azureml" in flags:
        argv = [a if a != "--azureml" else "--azureml_dry_run" for a in argv]
        argv.append(f"--output_dir={session.outputs}")
        run_runner(argv)
        return
    if "azureml_dry_run" in flags:
        run_runner([*argv, f"--output_dir={session.outputs}"])
        return
    model = str(flags["model"])
    quick = DEMO_QUICK if model.startswith("Demo") else IMAGE_QUICK
    if any(model in vars(importlib.import_module(f"configs.{module}")) for module in ("biapy", "volumes")):
        quick = DENSE_QUICK
    if "label_fractions" in flags and model.startswith("Demo"):
        quick = {**quick, "demo_num_images": 400}  # 1% of the training split is still a few images
    run_runner(with_quick_flags(argv, session, quick))


def needs_shared_data(command: str) -> bool:
    return any(
        part in command
        for part in (
            "/data/nih",
            "/data/rsna",
            "nih-sample",
            "rsna-layout",
            "NIH_",
            "CXR",
            "microscopy-sample",
            "hippocampus-sample",
        )
    )


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    root = tmp_path_factory.mktemp("readme")
    session = Session(root)
    write_image_folder(root / "my_images")
    (root / "my_configs.py").write_text(my_configs_source(), encoding="utf-8")
    session.paths = {
        "/data/my_images": str(root / "my_images"),
        "my_configs.py": str(root / "my_configs.py"),
        "../shared/data/nih-sample": str(SHARED_DATA / "nih-sample"),
        "/data/nih": str(SHARED_DATA / "nih-sample"),
        "/tmp/rsna-layout": str(root / "rsna-layout"),
        "/data/rsna": str(root / "rsna-layout"),
    }
    return session


def test_readme_has_the_commands_this_test_knows():
    commands = readme_commands()
    assert any(c.startswith("python runner.py --model=DemoClassifier") for c in commands)
    assert len(commands) >= 15


def test_every_readme_command_runs(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    shared = SHARED_DATA.is_dir()
    # The comparison and export commands start from a DemoSimCLR run the README's text tells the user to make.
    run_runner(with_quick_flags(["--model=DemoSimCLR"], session, DEMO_QUICK))
    skipped = []
    # Folder builders first: the README shows the RSNA-layout builder after the command that names /data/rsna.
    commands = sorted(readme_commands(), key=lambda command: not command.startswith("python -m tests."))
    for command in commands:
        if needs_shared_data(command) and not shared:
            skipped.append(command)
            continue
        print(f"README command: {command}", file=sys.stderr)  # shown with a failure
        handle(command, session)
    if skipped:
        pytest.skip(f"{len(skipped)} README commands need ../shared/data (not found at {SHARED_DATA})")
