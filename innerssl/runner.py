"""Command line: ``python runner.py --model=NAME [--param=value ...]``.

Resolves NAME to a container class in ``configs/`` (or in ``--config_module``), turns every parameter
into a flag, validates, and trains. Mistakes a user can make end with a one-line error and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from innerssl.errors import UserError

if TYPE_CHECKING:
    from innerssl.containers.base import Container

USAGE = (
    "usage: python runner.py --model=NAME [--config_module=MODULE_OR_FILE.py] [--help] [--param=value ...]\n"
    "  --model          the model (a container class in configs/ or in --config_module)\n"
    "  --config_module  a module (dotted name or .py file) with your own container classes\n"
    "  --help           with --model, lists every parameter of that model with its documentation (with\n"
    "                   --ssl_training_type=NAME, that SSL method's parameters)"
)
RUNNER_FLAGS = ("model", "config_module", "help")
EXIT_USER_ERROR = 2


def parse_flags(argv: Sequence[str]) -> dict[str, str | None]:
    """``--name=value``, ``--name value`` and bare ``--name`` (None) into an ordered dict."""
    flags: dict[str, str | None] = {}
    items = list(argv)
    index = 0
    while index < len(items):
        item = items[index]
        if item in ("-h",):
            item = "--help"
        if not item.startswith("--") or len(item) == 2:
            raise UserError(f"Unexpected argument '{item}': parameters are given as --name=value")
        name, equals, value = item[2:].partition("=")
        if not equals:
            following = items[index + 1] if index + 1 < len(items) else None
            if following is not None and not following.startswith("--"):
                value, index = following, index + 1
            else:
                value = None  # type: ignore[assignment]
        if name in flags:
            raise UserError(f"--{name} is given twice")
        flags[name] = value
        index += 1
    return flags


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)


def submitted_or_prepared(
    container: Container, model: str, flags: dict[str, str | None], config_module: str | None
) -> bool:
    """Azure ML flags: True when the run was submitted (--azureml) or written as a job (--azureml_dry_run).

    Otherwise the run happens here; a classifier's --pretraining_run_id is resolved to its checkpoint first.
    The Azure SDK is imported only when one of these flags is given.
    """
    # Containers without the cloud group (innerssl.cloud.parameters) run here.
    wanted = (
        getattr(container, "azureml", False),
        getattr(container, "azureml_dry_run", False),
        getattr(container, "pretraining_run_id", None) is not None,
        getattr(container, "pretraining_outputs_folder", None) is not None,
    )
    if not any(wanted):
        return False
    from innerssl.cloud.azureml import dispatch

    job_flags = {"config_module": config_module, **flags} if config_module else dict(flags)
    return dispatch(container, model, job_flags)


def run(argv: Sequence[str]) -> int:
    flags = parse_flags(argv)
    model = flags.pop("model", None)
    config_module = flags.pop("config_module", None)
    wants_help = "help" in flags
    flags.pop("help", None)
    if model is None:
        if wants_help:
            print(USAGE)
            return 0
        raise UserError("No --model given: run python runner.py --model=NAME (--help lists the options)")

    from innerssl.registry import find_model

    container_class = find_model(model, [config_module] if config_module else [])
    container = container_class()
    if wants_help:
        # Flags that decide which parameters exist (the SSL method) apply first, so their parameters are listed.
        leading = getattr(container, "leading_parameters", ())
        container.apply_flags({name: flags[name] for name in leading if name in flags})
        print(USAGE)
        print()
        print(type(container).help_text())
        return 0
    container.apply_flags(flags)
    if submitted_or_prepared(container, model, flags, config_module):
        return 0

    if getattr(container, "compare_with_random_init", False):
        from innerssl.containers.segmentation import SegmentationContainer

        if isinstance(container, SegmentationContainer):
            from innerssl.compare_segmentation import run_segmentation_comparison

            print(f"Comparison finished: outputs in {run_segmentation_comparison(container, model)}")
            return 0
        from innerssl.compare import run_comparison

        print(f"Comparison finished: outputs in {run_comparison(container, model)}")  # type: ignore[arg-type]
        return 0

    from innerssl.training import train

    result = train(container, model)
    if result.checked_data_only:
        print(f"Data checked (--check_data, nothing trained): splits.csv, aug/ and log.txt in {result.folder.root}")
        if result.bad_files:
            print(f"{result.bad_files} unreadable image files (listed in {result.folder.root}/bad_files.txt)")
        return 0
    print(f"Run finished: outputs in {result.folder.root}")
    if result.best_metric is not None:
        print(f"Best {result.best_metric}: {result.best_value}")
    print(f"Last checkpoint: {result.folder.last_checkpoint}")
    if result.test_metrics:
        print("Test: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.test_metrics.items())))
    if result.bad_files:
        print(f"Skipped {result.bad_files} unreadable image files (listed in {result.folder.root}/bad_files.txt)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("Interrupted: continue later with the same command and --resume", file=sys.stderr)
        return 130
