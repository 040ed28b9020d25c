"""The SSL method group: which registered method, its own parameters (added when it is chosen), its optimizer and
batch size."""

from __future__ import annotations

import difflib
import inspect
from typing import Any, ClassVar

import param

from innerssl.errors import UserError
from innerssl.optim import OPTIMIZER_NAMES
from innerssl.ssl import METHODS, SSLModule, ssl_method
from innerssl.ssl.parameters import method_parameters


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
        base: type[MethodParameters] = vars(cls).get("_unspecialised", cls)
        method = ssl_method(method_name)
        key = (base, method)
        if key not in _SPECIALISED:
            _SPECIALISED[key] = _with_method_parameters(base, method)
        return _SPECIALISED[key]

    @classmethod
    def unknown_parameter_hint(cls, name: str) -> str:
        """A flag of other methods than the chosen one says which methods have it."""
        owners = [method for method in METHODS.names() if name in method_parameters(METHODS.get(method))]
        if not owners:
            return ""
        chosen = vars(cls).get("_method_name", "the chosen method")
        choice = f"add --ssl_training_type={owners[0]}" if len(owners) == 1 else "choose one of them"
        return f" It is a parameter of {', '.join(owners)}, not of {chosen}: {choice}."

    @param.depends("ssl_training_type", watch=True)
    def _follow_method(self) -> None:
        """Choosing another method (a flag, a comparison's copy) swaps in the class with its parameters."""
        wanted = type(self).for_method(self.ssl_training_type)
        if type(self) is not wanted:
            self.__class__ = wanted

    def method_hyperparameters(self) -> dict:
        """The chosen method's own arguments, from its flags (from which it also declares its views)."""
        return {
            parameter.argument: getattr(self, flag)
            for flag, parameter in method_parameters(ssl_method(self.ssl_training_type)).items()
        }


_SPECIALISED: dict[tuple[type[MethodParameters], type[SSLModule]], type[MethodParameters]] = {}


def _with_method_parameters(base: type[MethodParameters], method: type[SSLModule]) -> type[MethodParameters]:
    check_method_attributes(base, method)
    attributes: dict[str, Any] = {
        "_unspecialised": base,
        "_method_name": method.method_name,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        "group_title": f"{method.method_name} parameters",
        "group_order": vars(MethodParameters)["group_order"] + 1,
    }
    for flag, parameter in method_parameters(method).items():
        configured = getattr(base, flag, inspect.Parameter.empty)
        try:
            attributes[flag] = parameter.to_param(configured, method.method_name)
        except ValueError as error:
            message = str(error).split("\n")[0]
            raise UserError(
                f"{base.__name__}.{flag} = {configured!r} is not valid for {method.method_name}: {message}"
            ) from None
    return type(base.__name__, (base,), attributes)


def check_method_attributes(base: type[MethodParameters], method: type[SSLModule]) -> None:
    """Refuse a thin config's class attribute that looks like a method flag but is none (a typo would be ignored)."""
    known: dict[str, set[str]] = {}
    for name in METHODS.names():
        other = METHODS.get(name)
        known.setdefault(other.flag_prefix, set()).update(method_parameters(other))
    declared = set(base.param.objects("existing"))
    for klass in base.__mro__:
        for attribute in vars(klass):
            if attribute in declared or attribute.startswith("_"):
                continue
            for prefix, flags in known.items():
                if prefix and attribute.startswith(f"{prefix}_") and attribute not in flags:
                    close = difflib.get_close_matches(attribute, sorted(flags), n=1)
                    hint = f" Did you mean {close[0]}?" if close else ""
                    raise UserError(
                        f"{klass.__name__} sets {attribute}, which is no parameter of any SSL method.{hint} "
                        f"{method.method_name}'s parameters: {', '.join(method_parameters(method))}"
                    )
