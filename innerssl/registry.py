"""The one registry of datasets and the one of models (containers).

Datasets register themselves by name with ``@DATASETS.register("NAME")`` in their own module under
``innerssl/data/datasets/``. Models are container classes, found by class name in the ``configs``
package and in any module the user names with ``--config_module``, so users add models without editing
the package.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import pkgutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Generic, TypeVar

from innerssl.errors import UserError

if TYPE_CHECKING:
    from innerssl.containers.base import Container

T = TypeVar("T")


def _same_definition(first: object, second: object) -> bool:
    """The same class or function defined again: a user's --config_module file imported a second time."""
    return all(
        getattr(first, attribute, None) == getattr(second, attribute, None) is not None
        for attribute in ("__module__", "__qualname__")
    )


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """Named entries of one kind; looking up an unknown name lists the known ones."""

    def __init__(self, kind: str, populate: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._folder_families: dict[str, str] = {}
        self._populate = populate
        self._populated = False

    def register(self, name: str, folder_family: str | None = None) -> Callable[[T], T]:
        """``folder_family``: entries that read the same kind of folder (NIH, NIHBinary, NIHMultiLabel) share one,
        so a run that uses two of them reads both from one folder unless told otherwise."""

        def decorator(entry: T) -> T:
            known = self._entries.get(name)
            if known is not None and known is not entry and not _same_definition(known, entry):
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            self._folder_families[name] = folder_family or name
            return entry

        return decorator

    def share_folder(self, first: str, second: str) -> bool:
        """Whether entries ``first`` and ``second`` read the same folder layout (the same name, or one family)."""
        self._ensure_populated()
        return self._folder_families.get(first, first) == self._folder_families.get(second, second)

    def _ensure_populated(self) -> None:
        if not self._populated and self._populate is not None:
            self._populated = True
            self._populate()

    def names(self) -> list[str]:
        self._ensure_populated()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._ensure_populated()
        if name not in self._entries:
            raise UserError(
                f"Unknown {self.kind} '{name}'.{_did_you_mean(name, self._entries)} "
                f"Available: {', '.join(self.names())}"
            )
        return self._entries[name]


def _import_dataset_modules() -> None:
    import innerssl.data.datasets as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


DATASETS: Registry = Registry("dataset", populate=_import_dataset_modules)


def _load_module(spec: str) -> ModuleType:
    """Import a module given as a dotted name or as a path to a .py file."""
    path = Path(spec)
    if spec.endswith(".py"):
        if not path.is_file():
            raise UserError(f"Config module file {path} does not exist: check --config_module")
        module_name = f"innerssl_user_configs_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as error:
        raise UserError(
            f"Cannot import config module '{spec}' ({error}): give a dotted module name on PYTHONPATH "
            "or a path to a .py file with --config_module"
        ) from None


def _config_modules(extra_modules: Iterable[str]) -> list[ModuleType]:
    import configs

    modules = [importlib.import_module(f"configs.{m.name}") for m in pkgutil.iter_modules(configs.__path__)]
    modules.extend(_load_module(spec) for spec in extra_modules)
    return modules


def available_models(extra_modules: Iterable[str] = ()) -> dict[str, type[Container]]:
    """Every concrete container class in ``configs`` and the extra modules, by class name."""
    from innerssl.containers.base import Container

    found: dict[str, type[Container]] = {}
    for module in _config_modules(extra_modules):
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Container) and cls.__module__ == module.__name__ and not name.startswith("_"):
                found[name] = cls
    return found


def find_model(name: str, extra_modules: Iterable[str] = ()) -> type[Container]:
    models = available_models(extra_modules)
    if name not in models:
        raise UserError(
            f"Unknown model '{name}'.{_did_you_mean(name, models)} "
            f"Available models: {', '.join(sorted(models))}. "
            "Add your own with --config_module=<module or file.py>"
        )
    return models[name]
