"""Placeholders for compiled packages that nnunetv2 imports at module level but never calls when it predicts
from arrays (SimpleITK, blosc2, ...). Used only by the GPU benchmark, on a machine where those packages are
absent and cannot be installed: calling anything in a placeholder raises, naming the package, so a
measurement can never silently depend on one."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from typing import Any


class _Absent:
    """Stands for any attribute of an absent package; fails loudly when used."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self._name} was called, but its package is absent on this machine")

    def __getattr__(self, attribute: str) -> _Absent:
        return _Absent(f"{self._name}.{attribute}")

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object,)


class _AbsentModule(types.ModuleType):
    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return _Absent(f"{self.__name__}.{attribute}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)
        self.used: set[str] = set()

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name.split(".")[0] not in self.names:
            return None
        self.used.add(name.split(".")[0])
        return importlib.util.spec_from_loader(name, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _AbsentModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install(names: Sequence[str]) -> _Finder:
    """Serve placeholder modules for those of ``names`` that cannot be imported for real."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    finder = _Finder(missing)
    sys.meta_path.append(finder)
    return finder
