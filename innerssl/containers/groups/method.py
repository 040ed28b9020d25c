"""The SSL method group: which registered method, its own parameters (added when it is chosen), its optimizer and
batch size."""

from __future__ import annotations

from typing import Any, ClassVar

import param

from innerssl.containers.groups.plugin_choice import PluginChoice
from innerssl.optim import OPTIMIZER_NAMES
from innerssl.ssl import METHODS, ssl_method
from innerssl.ssl.parameters import method_parameters

METHOD_CHOICE = PluginChoice(
    kind="SSL method",
    choice_flag="ssl_training_type",
    names=METHODS.names,
    lookup=ssl_method,
    parameters_of=method_parameters,
    name_of=lambda method: method.method_name,
)


class MethodParameters(param.Parameterized):
    """The SSL method (innerssl.ssl registry) and how it is optimised."""

    group_order: ClassVar[int] = 40
    group_title: ClassVar[str] = "SSL method"

    ssl_training_type: str = param.String(
        "BYOL",
        doc="SSL method: a registered name (BYOL, SimCLR, DINO, VICReg, BarlowTwins, MoCoV3, MAE) or your own through "
        "--config_module (@register_method). The chosen method's own parameters (--<method>_..., --projection_dim, "
        "--projection_hidden_dim) follow, with the method's defaults; --help with --ssl_training_type=NAME lists them.",
    )

    ssl_training_batch_size: int = param.Integer(256, bounds=(2, None), doc="SSL batch size per process.")

    optimizer: str = param.Selector(
        objects=list(OPTIMIZER_NAMES),
        default="adamw",
        doc="Optimizer of SSL pretraining (classifiers train with AdamW), with the warmup-cosine schedule either "
        "way. adamw: AdamW. lars: LARS (SGD with momentum and layer-wise adaptive learning rates, for large "
        "batches; it needs a far larger learning_rate than AdamW, e.g. 0.3 x global batch / 256 as in SimCLR); "
        "norm layers and biases get neither weight decay nor layer-wise adaptation, and weight_decay must be "
        "> 0 for any adaptation.",
    )

    lars_momentum: float = param.Number(0.9, bounds=(0, 1), doc="LARS: SGD momentum (--optimizer=lars).")

    lars_trust_coefficient: float = param.Number(
        1e-3, bounds=(0, None), doc="LARS: trust coefficient of the layer-wise learning rates (--optimizer=lars)."
    )

    leading_parameters: ClassVar[tuple[str, ...]] = ("ssl_training_type",)

    def __new__(cls, **values: Any) -> MethodParameters:
        # An instance is always of the class that carries its method's parameters (see for_method).
        method = values.get("ssl_training_type", cls.ssl_training_type)
        return super().__new__(cls.for_method(method))

    @classmethod
    def for_method(cls, method_name: str) -> type[MethodParameters]:
        """This container class with the parameters of SSL method ``method_name`` added (cached).

        A method's parameters are not parameters of every container: they are made from the method's
        ``__init__`` (innerssl.ssl.parameters) when the method is chosen, with the module's defaults unless a thin
        config sets a value as a class attribute of the flag's name (``byol_base_momentum = 0.9``).
        """
        return METHOD_CHOICE.specialised(MethodParameters, cls, method_name)

    @classmethod
    def unknown_parameter_hint(cls, name: str) -> str:
        """A flag of other methods than the chosen one says which methods have it."""
        return METHOD_CHOICE.unknown_parameter_hint(cls, name)

    @param.depends("ssl_training_type", watch=True)
    def _follow_method(self) -> None:
        """Choosing another method (a flag, a comparison's copy) swaps in the class with its parameters."""
        wanted = type(self).for_method(self.ssl_training_type)
        if type(self) is not wanted:
            self.__class__ = wanted

    def method_hyperparameters(self) -> dict:
        """The chosen method's own arguments, from its flags (from which it also declares its views)."""
        return METHOD_CHOICE.arguments(self)
