"""Atomic file writes: every file or folder appears whole or not at all.

A write goes to a temporary sibling named ``.bl-tmp-<name>-<pid>-<random>`` (same folder, so same
filesystem: ``os.replace`` is one atomic rename), which is renamed over the target when complete.
A process killed half-way leaves only such a temporary, which :func:`remove_temporaries` (called by
every run folder when it is opened) recognises by its prefix and deletes.

    write_json(path, data)            JSON (numpy / 0-d torch scalars as floats), atomically
    write_text(path, text)            text, atomically
    with atomic_file(path) as tmp:    any writer into ``tmp`` (a file path), then renamed to ``path``
    with atomic_dir(path) as tmp:     a folder built in ``tmp``, then renamed to ``path``
    save_tensors(path, tensors)       safetensors (``{name: tensor}``), atomically
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Union

if TYPE_CHECKING:
    import torch

TMP_PREFIX = ".bl-tmp-"
"""Prefix of every temporary file or folder the package writes (removed on the next open)."""

PathLike = Union[str, Path]


def temp_sibling(path: PathLike) -> Path:
    """A fresh temporary name next to ``path`` (not created)."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}-{secrets.token_hex(4)}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: PathLike) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; on success it is renamed to ``path``.

    On any exception the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder; cannot replace it with a file.")
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` (two renames:
    the old folder is moved to a temporary name first and deleted after the new one is in place).

    Callers own ``path``: this never checks what is in it (run folders do that before).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    tmp.mkdir(mode=0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            old = temp_sibling(path)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _default(obj: Any) -> Any:
    if hasattr(obj, "numel") and hasattr(obj, "item") and obj.numel() == 1:  # a one-element tensor
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return float(obj)


def write_json(path: PathLike, data: Any) -> Path:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically.

    Numbers ``json`` does not know (numpy scalars, 0-d tensors) are written as numbers.
    """
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_default))


def save_tensors(path: PathLike, tensors: Dict[str, "torch.Tensor"],
                 metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write ``tensors`` as a safetensors file atomically (contiguous CPU copies)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_file(path) as tmp:
        save_file(flat, str(tmp), metadata=metadata or {"format": "pt"})
    return Path(path)


def remove_temporaries(folder: PathLike) -> int:
    """Delete every ``.bl-tmp-*`` entry under ``folder`` (left by a killed process); return how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    found = []
    for root, dirs, files in os.walk(folder):
        for name in list(dirs):
            if name.startswith(TMP_PREFIX):
                found.append(Path(root) / name)
                dirs.remove(name)
        found.extend(Path(root) / f for f in files if f.startswith(TMP_PREFIX))
    for p in found:
        _remove(p)
    return len(found)
