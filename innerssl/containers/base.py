"""Container: parameters declared with ``param`` become command-line flags, validated with clear errors.

A container declares and validates; it does not load data or build models in ``__init__`` (flags are
applied after construction). Work happens in the ``create_*`` methods, called by ``innerssl.training``.
Concrete configs in ``configs/`` are thin subclasses that only set parameter values.
"""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import param
import pytorch_lightning as pl

from innerssl.errors import UserError

TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}
NONE_WORDS = {"none", "null", ""}
PRECISIONS = ["32", "bf16-mixed", "16-mixed"]


def _type_name(parameter: param.Parameter) -> str:
    if isinstance(parameter, param.Boolean):
        return "bool"
    if isinstance(parameter, param.Integer):
        return "int"
    if isinstance(parameter, param.Number):
        return "float"
    if isinstance(parameter, param.Selector):
        return "one of " + "|".join(str(o) for o in parameter.objects)
    if isinstance(parameter, param.List):
        return "comma-separated list"
    return "str"


def parse_value(name: str, parameter: param.Parameter, text: str) -> Any:
    """Turn a flag's text into the parameter's type; a wrong value names the flag and what it expects."""
    lowered = text.strip().lower()
    if parameter.allow_None and lowered in NONE_WORDS and not isinstance(parameter, param.List):
        return None
    if isinstance(parameter, param.Boolean):
        if lowered in TRUE_WORDS:
            return True
        if lowered in FALSE_WORDS:
            return False
        raise UserError(f"--{name} expects true or false, got '{text}'")
    if isinstance(parameter, param.Integer):
        try:
            return int(text)
        except ValueError:
            raise UserError(f"--{name} expects an integer, got '{text}'") from None
    if isinstance(parameter, param.Number):
        try:
            return float(text)
        except ValueError:
            raise UserError(f"--{name} expects a number, got '{text}'") from None
    if isinstance(parameter, param.Selector):
        for option in parameter.objects:
            if str(option) == text:
                return option
        allowed = ", ".join(str(o) for o in parameter.objects)
        raise UserError(f"--{name}='{text}' is not allowed. Allowed values: {allowed}")
    if isinstance(parameter, param.List):
        items = [item.strip() for item in text.split(",") if item.strip()]
        item_type = parameter.item_type
        if item_type in (int, float):
            try:
                return [item_type(item) for item in items]
            except ValueError:
                raise UserError(
                    f"--{name} expects a comma-separated list of {item_type.__name__}, got '{text}'"
                ) from None
        return items
    return text


class Container(param.Parameterized):
    """Run-level parameters shared by every model: seeds, hardware, precision, outputs.

    A concrete container is composed of this and parameter groups (innerssl.containers.groups, the cloud group
    innerssl.cloud.parameters): each group has a ``group_title`` (a heading of --help), a ``group_order`` (where
    the heading comes) and may check its parameters in ``validate_group``.
    """

    group_title: ClassVar[str] = "Run"
    group_order: ClassVar[int] = 0

    num_epochs: int = param.Integer(100, bounds=(1, None), doc="Number of training epochs.")
    random_seed: int = param.Integer(42, doc="Seed for Python, NumPy, torch and data loader workers.")
    num_workers: int = param.Integer(
        4, bounds=(0, None), doc="Data loader worker processes per GPU/process (0 loads in the main process)."
    )
    precision: str = param.Selector(
        objects=PRECISIONS, default="32", doc="Numeric precision: 32, bf16-mixed (CPU/GPU) or 16-mixed (GPU only)."
    )
    max_num_gpus: int = param.Integer(
        -1, bounds=(-1, None), doc="GPUs per node to use: -1 all available, 0 train on the CPU."
    )
    num_nodes: int = param.Integer(1, bounds=(1, None), doc="Number of machines for multi-node DDP training.")
    channels_last: bool = param.Boolean(
        False, doc="Run convolutions in channels_last memory format (faster with mixed precision on GPUs)."
    )
    compile: bool = param.Boolean(
        False,
        doc="torch.compile the networks (encoders and heads, in place: checkpoints keep their keys). Faster steps "
        "on GPUs after a compilation of a minute or so at the start; needs a C++ compiler on the CPU.",
    )
    output_dir: str = param.String("outputs", doc="Root folder of run outputs: <output_dir>/<model>/<run_name>/.")
    run_name: str | None = param.String(
        None, allow_None=True, doc="Name of the run folder; default: the start time, e.g. 20260101-120000."
    )
    resume: bool = param.Boolean(
        False,
        doc="Continue the run <run_name> (default: the latest run of this model) from checkpoints/last.ckpt, "
        "also after the process was killed: from the last epoch's end or the last timed checkpoint "
        "(--checkpoint_every_n_minutes), whichever is later.",
    )
    check_data: bool = param.Boolean(
        False,
        doc="Build the datasets and decode caches, log per split and class how many images were found and how many "
        "were unreadable (listed in bad_files.txt), write splits.csv and the augmentation previews in aug/, and "
        "exit without training: the first step with a new dataset.",
    )
    auto_resume: bool = param.Boolean(
        False,
        doc="With --run_name: continue that run from its checkpoints/last.ckpt when it has one, else start it. "
        "Azure ML jobs set it, so that a preempted job that is restarted (or resubmitted with the same "
        "--run_name and --azureml_output_path) continues instead of starting again.",
    )
    checkpoint_every_n_minutes: float = param.Number(
        30.0,
        bounds=(0, None),
        doc="Besides after every epoch, also write checkpoints/last.ckpt after the first training step that ends "
        "this many minutes after the previous save, so that --resume continues mid-epoch and a killed run loses "
        "at most these minutes (and the partial epoch's statistics). 0: only at epoch ends.",
    )

    # --- distributed ---------------------------------------------------------------------------------
    scale_learning_rate_with_batch_size: bool = param.Boolean(
        True,
        doc="When more than one process trains (GPUs x nodes), scale the learning rate with the global batch "
        "(linear scaling rule): learning_rate x per-process batch x processes / "
        "learning_rate_reference_batch_size. One process always uses learning_rate as given.",
    )
    learning_rate_reference_batch_size: int = param.Integer(
        256,
        bounds=(1, None),
        doc="The global batch size at which learning_rate applies unchanged under the linear scaling rule.",
    )
    num_cpu_processes: int = param.Integer(
        1,
        bounds=(1, None),
        doc="With --max_num_gpus=0: CPU training processes per node; more than one runs DDP with the gloo "
        "backend (mainly for testing the distributed code paths without GPUs).",
    )
    force_ddp: bool = param.Boolean(
        False,
        doc="Train with Lightning's DDP (strategy=ddp: NCCL on GPUs, gloo on the CPU, SyncBatchNorm where the run "
        "uses it) also when only one process trains, so that one GPU runs the multi-GPU code path "
        "(benchmarks/gpu_check.py does). The learning rate still follows the number of processes.",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Let thin configs set values as plain class attributes (``num_epochs = 8``).

        In a class body such an attribute would shadow the inherited Parameter, losing its checks and
        documentation; re-assigning it on the class instead makes param copy the Parameter with the new
        default, validated now, with bounds and doc kept.
        """
        super().__init_subclass__(**kwargs)
        declared: set[str] = set()
        for base in cls.__bases__:
            if issubclass(base, param.Parameterized):
                declared.update(base.param.objects("existing"))
        overrides = {
            name: value
            for name, value in list(vars(cls).items())
            if name in declared and name != "name" and not isinstance(value, param.Parameter)
        }
        for name, value in overrides.items():
            delattr(cls, name)
            setattr(cls, name, value)

    # --- command line --------------------------------------------------------------------------------
    @classmethod
    def parameter_groups(cls) -> list[tuple[str, dict[str, param.Parameter]]]:
        """Every user-settable parameter by group (title, parameters), in ``group_order``; a parameter belongs to
        the most basic class that declares it (a thin config's new value stays in its group)."""
        declared = {name: p for name, p in cls.param.objects("existing").items() if name != "name"}
        titled = sorted(
            (klass for klass in cls.__mro__ if "group_title" in vars(klass)),
            key=lambda klass: vars(klass).get("group_order", 50),
        )
        owner: dict[str, type] = {}
        for klass in reversed(cls.__mro__):
            if "group_title" not in vars(klass):
                continue
            for name, value in vars(klass).items():
                if isinstance(value, param.Parameter) and name in declared:
                    owner.setdefault(name, klass)
        groups = [
            (str(vars(klass)["group_title"]), {n: p for n, p in declared.items() if owner.get(n) is klass})
            for klass in titled
        ]
        others = {n: p for n, p in declared.items() if n not in owner}
        return [(title, parameters) for title, parameters in [*groups, ("Other", others)] if parameters]

    @classmethod
    def parameters(cls) -> dict[str, param.Parameter]:
        """Every user-settable parameter, group by group (see ``parameter_groups``)."""
        return {name: p for _title, group in cls.parameter_groups() for name, p in group.items()}

    @classmethod
    def flag_aliases(cls) -> dict[str, str]:
        """Other names of parameters, from every group's ``parameter_aliases`` (alias -> parameter): the names
        users bring from other tools (MONAI's ``samples_per_volume`` for ``patches_per_image``)."""
        aliases: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            aliases.update(vars(klass).get("parameter_aliases", {}))
        return aliases

    def apply_flags(self, flags: Mapping[str, str | None]) -> None:
        """Set parameters from ``--name=value`` flags (None means a bare ``--name``, true for booleans)."""
        flags = self._resolve_aliases(flags)
        # A group's leading_parameters decide which parameters exist (the SSL method): they apply first.
        leading = {name: flags[name] for name in getattr(self, "leading_parameters", ()) if name in flags}
        for name, text in {**leading, **flags}.items():
            parameters = self.parameters()  # a leading parameter can change them
            if name not in parameters:
                close = difflib.get_close_matches(name, parameters, n=1)
                # A group may know where the flag belongs (another SSL method's parameter).
                known_elsewhere = getattr(self, "unknown_parameter_hint", lambda _name: "")(name)
                hint = known_elsewhere or (f" Did you mean --{close[0]}?" if close else "")
                raise UserError(
                    f"Unknown parameter --{name} for {type(self).__name__}.{hint} "
                    "Run with --help to list the parameters"
                )
            parameter = parameters[name]
            if text is None:
                if not isinstance(parameter, param.Boolean):
                    raise UserError(f"--{name} needs a value: --{name}=<{_type_name(parameter)}>")
                text = "true"
            value = parse_value(name, parameter, text)
            try:
                setattr(self, name, value)
            except ValueError as error:
                message = str(error).split("\n")[0]
                raise UserError(f"--{name}={text} is not valid: {message}") from None

    def _resolve_aliases(self, flags: Mapping[str, str | None]) -> dict[str, str | None]:
        aliases = self.flag_aliases()
        resolved: dict[str, str | None] = {}
        for name, text in flags.items():
            target = aliases.get(name, name)
            if target in resolved:
                raise UserError(f"--{name} is another name of --{target}: give one of them")
            resolved[target] = text
        return resolved

    @classmethod
    def help_text(cls) -> str:
        lines = [f"Parameters of {cls.__name__} (set with --name=value):"]
        for title, parameters in cls.parameter_groups():
            lines.extend(["", f"{title}:"])
            for name, parameter in parameters.items():
                default = parameter.default
                if isinstance(default, list):
                    default = ",".join(str(d) for d in default)
                lines.append(f"  --{name} ({_type_name(parameter)}, default: {default})")
                doc = " ".join((parameter.doc or "").split())
                others = [alias for alias, target in cls.flag_aliases().items() if target == name]
                if others:
                    doc += f" Also --{', --'.join(others)}."
                lines.extend(textwrap.wrap(doc, width=96, initial_indent="      ", subsequent_indent="      "))
        return "\n".join(lines)

    def config_dict(self) -> dict[str, Any]:
        """Every resolved parameter value, for config.yaml."""
        return {name: getattr(self, name) for name in self.parameters()}

    # --- validation and work -------------------------------------------------------------------------
    def validate(self, check_this_machine: bool = True) -> None:
        """Check parameter combinations; raise UserError with a one-line message naming the flag.

        ``check_this_machine=False`` skips what depends on this machine (local folders and files, a GPU),
        for runs that are submitted to run elsewhere.
        """
        for klass in reversed(type(self).__mro__):
            if "validate_group" in vars(klass):
                vars(klass)["validate_group"](self, check_this_machine)
        if self.auto_resume and self.run_name is None:
            raise UserError("--auto_resume needs --run_name: the run to continue when its folder holds last.ckpt")
        if check_this_machine and self.precision == "16-mixed" and not _cuda_available():
            raise UserError("--precision=16-mixed needs a GPU; use --precision=bf16-mixed or 32 on the CPU")

    def create_datamodule(self, run_folder: Path | None = None) -> pl.LightningDataModule:
        """The data of the run; ``run_folder`` receives the list of unreadable files."""
        raise NotImplementedError

    def create_lightning_module(self, datamodule: pl.LightningDataModule) -> pl.LightningModule:
        raise NotImplementedError

    def create_callbacks(self, datamodule: pl.LightningDataModule) -> list[pl.Callback]:
        """Callbacks specific to this kind of run (checkpointing, metrics files and charts are added for all)."""
        return []

    def checkpoint_monitor(self) -> tuple[str, str] | None:
        """(metric, "max" or "min") that selects checkpoints/best.ckpt; None for no best checkpoint."""
        return None

    def uses_sync_batchnorm(self) -> bool:
        return False

    def has_test_stage(self) -> bool:
        """Whether, after training, the run evaluates its best checkpoint on the test split (classifiers)."""
        return False

    def test_only_checkpoint_path(self) -> Path | None:
        """A checkpoint to evaluate on the test split instead of training; None: train as usual."""
        return None

    def output_root(self) -> Path:
        return Path(self.output_dir)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
