"""Module attributes imported on first use (PEP 562 ``__getattr__``), so packages import light."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, MutableMapping

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, table: Dict[str, str], namespace: MutableMapping[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__``: ``name`` is imported from ``table[name]`` and cached in ``namespace``."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
