"""The restoration group: which pretext task (innerssl.restoration registry) with its own parameters (added when
it is chosen, as SSL methods' are), which dense network, and the mae_checks outputs."""

from __future__ import annotations

from typing import Any, ClassVar

import param

from innerssl.containers.groups.plugin_choice import PluginChoice
from innerssl.restoration import PRETEXT_TASKS, PretextTask, pretext_task
from innerssl.ssl.parameters import method_parameters


def task_parameters(task: type[PretextTask]) -> dict:
    return method_parameters(task, PretextTask)


TASK_CHOICE = PluginChoice(
    kind="pretext task",
    choice_flag="pretext_task",
    names=PRETEXT_TASKS.names,
    lookup=pretext_task,
    parameters_of=task_parameters,
    name_of=lambda task: task.task_name,
)


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
        return TASK_CHOICE.specialised(RestorationParameters, cls, task_name)

    @classmethod
    def unknown_parameter_hint(cls, name: str) -> str:
        return TASK_CHOICE.unknown_parameter_hint(cls, name)

    @param.depends("pretext_task", watch=True)
    def _follow_task(self) -> None:
        wanted = type(self).for_task(self.pretext_task)
        if type(self) is not wanted:
            self.__class__ = wanted

    def task_arguments(self) -> dict[str, Any]:
        """The chosen task's own arguments, from its flags."""
        return TASK_CHOICE.arguments(self)
