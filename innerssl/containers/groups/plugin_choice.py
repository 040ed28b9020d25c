"""Parameter groups whose parameters depend on a registry choice: the SSL method (``--ssl_training_type``) and the
restoration pretext task (``--pretext_task``).

A chosen plug-in's ``__init__`` arguments become flags (``innerssl.ssl.parameters``) only when it is chosen, so the
parameters of one method do not live on every container. ``PluginChoice`` holds what both groups share: the
container class specialised with the chosen plug-in's parameters (cached per base class and plug-in), the hint for a
flag that belongs to another plug-in, the chosen plug-in's arguments, and the check that a thin config's class
attribute that looks like a plug-in flag is one (a misspelt ``crappify_nosie = 0.3`` would otherwise be ignored).
The registries are read at call time, so plug-ins registered by a ``--config_module`` count.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import param

from innerssl.errors import UserError
from innerssl.ssl.parameters import MethodParameter


@dataclass(frozen=True)
class PluginChoice:
    """One registry-backed choice of a parameter group."""

    kind: str
    """What a plug-in is, for messages: ``SSL method``, ``pretext task``."""
    choice_flag: str
    """The flag that chooses the plug-in, e.g. ``ssl_training_type``."""
    names: Callable[[], list[str]]
    """The registered names, read at call time."""
    lookup: Callable[[str], type]
    """The plug-in class of a name (a UserError for an unknown one)."""
    parameters_of: Callable[[type], dict[str, MethodParameter]]
    """A plug-in's parameters by flag name."""
    name_of: Callable[[type], str]
    """A plug-in's registry name."""
    _specialised: dict[tuple[type, type], type] = field(default_factory=dict, compare=False, repr=False)

    def specialised(self, group: type[param.Parameterized], cls: type, name: str) -> type:
        """``cls`` (a container class that includes ``group``) with plug-in ``name``'s parameters added (cached).

        Each parameter takes the plug-in's default unless a thin config sets a class attribute of the flag's name.
        """
        base: type = vars(cls).get("_unspecialised", cls)
        plugin = self.lookup(name)
        key = (base, plugin)
        if key not in self._specialised:
            self._specialised[key] = self._with_parameters(group, base, plugin)
        return self._specialised[key]

    def _with_parameters(self, group: type[param.Parameterized], base: type, plugin: type) -> type:
        self.check_attributes(base, plugin)
        name = self.name_of(plugin)
        attributes: dict[str, Any] = {
            "_unspecialised": base,
            "_plugin_name": name,
            "__module__": base.__module__,
            "__qualname__": base.__qualname__,
            "__doc__": base.__doc__,
            "group_title": f"{name} parameters",
            "group_order": vars(group)["group_order"] + 1,
        }
        for flag, parameter in self.parameters_of(plugin).items():
            configured = getattr(base, flag, inspect.Parameter.empty)
            try:
                attributes[flag] = parameter.to_param(configured, name)
            except ValueError as error:
                message = str(error).split("\n")[0]
                raise UserError(f"{base.__name__}.{flag} = {configured!r} is not valid for {name}: {message}") from None
        return type(base.__name__, (base,), attributes)

    def check_attributes(self, base: type, plugin: type) -> None:
        """Refuse a thin config's class attribute that starts like a plug-in's flags (``<flag_prefix>_``) but is no
        parameter of any plug-in of this kind."""
        known: dict[str, set[str]] = {}
        for name in self.names():
            other = self.lookup(name)
            known.setdefault(getattr(other, "flag_prefix", ""), set()).update(self.parameters_of(other))
        declared = set(base.param.objects("existing"))
        for klass in base.__mro__:
            for attribute in vars(klass):
                if attribute in declared or attribute.startswith("_"):
                    continue
                for prefix, flags in known.items():
                    if prefix and attribute.startswith(f"{prefix}_") and attribute not in flags:
                        close = difflib.get_close_matches(attribute, sorted(flags), n=1)
                        hint = f" Did you mean {close[0]}?" if close else ""
                        own = ", ".join(self.parameters_of(plugin)) or "none"
                        raise UserError(
                            f"{klass.__name__} sets {attribute}, which is no parameter of any {self.kind}.{hint} "
                            f"{self.name_of(plugin)}'s parameters: {own}"
                        )

    def unknown_parameter_hint(self, cls: type, flag: str) -> str:
        """For a flag of other plug-ins than the chosen one: which plug-ins have it."""
        owners = [name for name in self.names() if flag in self.parameters_of(self.lookup(name))]
        if not owners:
            return ""
        chosen = vars(cls).get("_plugin_name", f"the chosen {self.kind}")
        choice = f"add --{self.choice_flag}={owners[0]}" if len(owners) == 1 else "choose one of them"
        return f" It is a parameter of {', '.join(owners)}, not of {chosen}: {choice}."

    def arguments(self, container: param.Parameterized) -> dict[str, Any]:
        """The chosen plug-in's own ``__init__`` arguments, from the container's flags."""
        plugin = self.lookup(getattr(container, self.choice_flag))
        return {parameter.argument: getattr(container, flag) for flag, parameter in self.parameters_of(plugin).items()}
