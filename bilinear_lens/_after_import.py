"""Run a callback once a module has been imported (no import of it here).

``after_import("transformer_lens", register)`` calls ``register()`` right away when
``transformer_lens`` is fully imported already, or otherwise the moment its import finishes (a
``sys.meta_path`` finder wraps the module's loader once, then removes itself). This keeps
``import bilinear_lens`` (and so ``bilinear-lens --help``) free of torch and TransformerLens while
every TransformerLens model still sees the plugin registered.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any, Callable, List, Optional

__all__ = ["after_import", "cancel_all", "is_importing"]

_FINDERS: List["_AfterImport"] = []


def is_importing(name: str) -> bool:
    """True while module ``name`` is being imported (in ``sys.modules`` but not finished)."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return module is not None and bool(getattr(spec, "_initializing", False))


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: Any, callback: Callable[[], None]):
        self._loader, self._callback = loader, callback

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._callback()

    def __getattr__(self, name: str) -> Any:  # is_package, get_resource_reader, ...
        return getattr(self._loader, name)


class _AfterImport(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, callback: Callable[[], None]):
        self.name, self.callback = name, callback

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != self.name:
            return None
        self.remove()
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader, self.callback)
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        if self in _FINDERS:
            _FINDERS.remove(self)


def after_import(name: str, callback: Callable[[], None]) -> None:
    """Call ``callback`` now if module ``name`` is in ``sys.modules``, else right after its import
    (``name`` may be a submodule: the finder sees it when its parent imports it)."""
    if name in sys.modules:
        callback()
        return
    if any(f.name == name and f.callback is callback for f in _FINDERS):
        return
    finder = _AfterImport(name, callback)
    _FINDERS.append(finder)
    sys.meta_path.insert(0, finder)


def cancel_all() -> None:
    """Forget every pending callback."""
    for f in list(_FINDERS):
        f.remove()
