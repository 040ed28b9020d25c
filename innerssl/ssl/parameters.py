"""A method's own parameters as command-line flags, derived from its ``__init__``.

The keyword arguments a method class adds to ``SSLModule``'s (its own ``__init__`` and those of intermediate
bases) are its parameters: the default written in the signature is the flag's default (so a command-line run
gets the paper's values the module declares), the type hint the flag's type, ``parameter_docs`` its help and
``parameter_bounds`` its bounds. The flag is ``<flag_prefix>_<argument>`` (``--byol_base_momentum``), except
for the head sizes every projection method has (``--projection_dim``, ``--projection_hidden_dim``).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import param

UNPREFIXED_ARGUMENTS = ("projection_dim", "projection_hidden_dim")
"""Arguments of many methods whose flags carry no method prefix (their defaults are still each method's own)."""


@dataclass(frozen=True)
class MethodParameter:
    """One argument of a method's ``__init__`` and the flag that sets it."""

    flag: str
    argument: str
    default: Any
    annotation: Any
    doc: str
    bounds: tuple[float | None, float | None] | None

    def to_param(self, default: Any = inspect.Parameter.empty, method_name: str = "") -> param.Parameter:
        """A ``param`` Parameter of the flag, with ``default`` (a config's value) instead of the module's."""
        value = self.default if default is inspect.Parameter.empty else default
        doc = f"{method_name}: {self.doc}" if method_name else self.doc
        return parameter_for(self.annotation, value, doc, self.bounds)


def own_arguments(method: type, base: type | None = None) -> list[tuple[str, inspect.Parameter, type]]:
    """(argument, signature parameter, owner class) of every keyword argument ``method`` adds to ``base``
    (default SSLModule; restoration pretext tasks pass theirs)."""
    if base is None:
        from innerssl.ssl.base import SSLModule

        base = SSLModule
    found: dict[str, tuple[str, inspect.Parameter, type]] = {}
    for klass in method.__mro__:
        if klass is base or not issubclass(klass, base):
            break
        if "__init__" not in vars(klass):
            continue
        for name, parameter in inspect.signature(klass.__init__).parameters.items():
            if name == "self" or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                continue
            found.setdefault(name, (name, parameter, klass))
    return list(found.values())


def method_parameters(method: type, base: type | None = None) -> dict[str, MethodParameter]:
    """The method's parameters by flag name, in the order of its signature (arguments it adds to ``base``)."""
    result: dict[str, MethodParameter] = {}
    docs: dict[str, str] = getattr(method, "parameter_docs", {})
    bounds: dict[str, tuple[float | None, float | None]] = getattr(method, "parameter_bounds", {})
    for name, parameter, owner in own_arguments(method, base):
        if parameter.default is inspect.Parameter.empty:
            raise TypeError(f"{method.__name__}.__init__ argument {name} needs a default (the paper's value)")
        hints = typing.get_type_hints(owner.__init__)
        flag = name if name in UNPREFIXED_ARGUMENTS else f"{method.flag_prefix}_{name}"
        result[flag] = MethodParameter(
            flag=flag,
            argument=name,
            default=parameter.default,
            annotation=hints.get(name, type(parameter.default)),
            doc=docs.get(name, ""),
            bounds=bounds.get(name),
        )
    return result


def parameter_for(annotation: Any, default: Any, doc: str, bounds: tuple | None) -> param.Parameter:
    """The ``param`` Parameter that parses and checks a value of ``annotation``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return param.Selector(objects=list(typing.get_args(annotation)), default=default, doc=doc)
    if annotation is bool:
        return param.Boolean(default, doc=doc)
    if annotation is int:
        return param.Integer(default, bounds=bounds, doc=doc)
    if annotation is float:
        return param.Number(default, bounds=bounds, doc=doc)
    if annotation is str:
        return param.String(default, doc=doc)
    if origin in (list, tuple, Sequence, typing.Sequence) or isinstance(default, (list, tuple)):
        arguments = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        item_type = arguments[0] if arguments and isinstance(arguments[0], type) else None
        return param.List(list(default), item_type=item_type, doc=doc)
    raise TypeError(f"Method parameter type {annotation} has no flag type: use bool, int, float, str, Literal, list")
