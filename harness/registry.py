"""A registry of lazily imported plug-ins: heavy optional dependencies import only when a plug-in is chosen."""

from __future__ import annotations

import difflib
import importlib
from typing import Any


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry:
    """Maps names to "module:attribute" strings, imported on first use."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._targets: dict[str, str] = {}
        self._loaded: dict[str, Any] = {}

    def register(self, name: str, target: str) -> None:
        if name in self._targets and self._targets[name] != target:
            raise RegistryError(f"{self.kind} {name!r} is registered twice")
        self._targets[name] = target

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: str) -> bool:
        return name in self._targets

    def get(self, name: str) -> Any:
        if name not in self._targets:
            close = difflib.get_close_matches(name, self._targets, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RegistryError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})")
        if name not in self._loaded:
            module_name, attr = self._targets[name].split(":")
            self._loaded[name] = getattr(importlib.import_module(module_name), attr)
        return self._loaded[name]
