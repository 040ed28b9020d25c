"""The restoration group: which pretext task (innerssl.restoration registry) with its own parameters (added when
it is chosen, as SSL methods' are), which dense network, and the mae_checks outputs."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import param

from innerssl.errors import UserError
from innerssl.restoration import PRETEXT_TASKS, PretextTask, pretext_task
from innerssl.ssl.parameters import method_parameters


def task_parameters(task: type[PretextTask]) -> dict:
    return method_parameters(task, PretextTask)


class RestorationParameters(param.Parameterized):
    """The pretext task and its outputs."""

    group_order: ClassVar[int] = 40
    group_title: ClassVar[str] = "Restoration pretext task"

    pretext_task: str = param.String(
        "crappify",
        doc="Restoration pretext task: crappify (restore noisy, lower-resolution copies; U-Nets) or masking (a "
        "masked-autoencoder ViT reconstructs masked tokens), or your own (@register_task in --config_module). Its "
        "own parameters (--crappify_..., --mae_...) follow; --help with --pretext_task=NAME lists them.",
    )

    checks_every_n_epochs: int = param.Integer(
        5,
        bounds=(0, None),
        doc="Write pictures of validation images every N epochs (0: never): mae_checks/epoch_NNN/ for masking, "
        "slices/epoch_NNN/<image>.png (axial slices: original | network input | restoration) for other tasks.",
    )

    checks_num_images: int = param.Integer(
        2, bounds=(0, None), doc="Validation images written to mae_checks/ or slices/ each time."
    )

    monitor_labels: str | None = param.String(
        None,
        allow_None=True,
        doc="CSV of image,label (image: the file name without suffix) for a kNN monitor of a ViT's pooled tokens "
        "(vit_autoenc, vit_mae): labeled training images are the bank, labeled validation images are scored "
        "(knn/val_accuracy, knn/val_auroc).",
    )

    monitor_every_n_epochs: int = param.Integer(
        1, bounds=(1, None), doc="Run the --monitor_labels kNN monitor every N epochs (and at the last)."
    )

    leading_parameters: ClassVar[tuple[str, ...]] = ("pretext_task",)

    def __new__(cls, **values: Any) -> RestorationParameters:
        task = values.get("pretext_task", cls.pretext_task)
        return super().__new__(cls.for_task(task))

    @classmethod
    def for_task(cls, task_name: str) -> type[RestorationParameters]:
        """This container class with the parameters of pretext task ``task_name`` added (cached)."""
        base: type[RestorationParameters] = vars(cls).get("_unspecialised", cls)
        task = pretext_task(task_name)
        key = (base, task)
        if key not in _SPECIALISED:
            _SPECIALISED[key] = _with_task_parameters(base, task)
        return _SPECIALISED[key]

    @classmethod
    def unknown_parameter_hint(cls, name: str) -> str:
        owners = [task for task in PRETEXT_TASKS.names() if name in task_parameters(PRETEXT_TASKS.get(task))]
        if not owners:
            return ""
        chosen = vars(cls).get("_task_name", "the chosen task")
        return f" It is a parameter of {', '.join(owners)}, not of {chosen}: add --pretext_task={owners[0]}."

    @param.depends("pretext_task", watch=True)
    def _follow_task(self) -> None:
        wanted = type(self).for_task(self.pretext_task)
        if type(self) is not wanted:
            self.__class__ = wanted

    def task_arguments(self) -> dict[str, Any]:
        """The chosen task's own arguments, from its flags."""
        return {
            parameter.argument: getattr(self, flag)
            for flag, parameter in task_parameters(pretext_task(self.pretext_task)).items()
        }


_SPECIALISED: dict[tuple[type, type], type] = {}


def _with_task_parameters(base: type[RestorationParameters], task: type[PretextTask]) -> type[RestorationParameters]:
    attributes: dict[str, Any] = {
        "_unspecialised": base,
        "_task_name": task.task_name,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        "group_title": f"{task.task_name} parameters",
        "group_order": vars(RestorationParameters)["group_order"] + 1,
    }
    for flag, parameter in task_parameters(task).items():
        configured = getattr(base, flag, inspect.Parameter.empty)
        try:
            attributes[flag] = parameter.to_param(configured, task.task_name)
        except ValueError as error:
            message = str(error).split("\n")[0]
            raise UserError(
                f"{base.__name__}.{flag} = {configured!r} is not valid for {task.task_name}: {message}"
            ) from None
    return type(base.__name__, (base,), attributes)
