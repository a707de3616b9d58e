"""Where a model may be saved: never over what this package did not write.

``save_pretrained(model, path)`` and ``BilinearClassifier.save(path)`` write a model *folder*. Before
anything touches the disk, :func:`check_model_target` refuses

* a file at ``path`` (it is never replaced by a folder);
* a non-empty folder without the marker file ``.bilinear-lens-model`` (a folder this package did not
  write: a user's files, someone else's Hugging Face model);
* a folder with the marker unless ``overwrite=True``, and even then one holding entries the marker
  does not list (files a user added after the save);
* the current folder, one of its parents, the home folder and ``/``.

An empty folder or a missing path is fine. The marker is written last, into the temporary folder that
is renamed into place (:func:`bilinear_lens.runs.atomic.atomic_dir`), and lists every entry saved::

    .bilinear-lens-model   {"bilinear_lens": "model/1", "kind": "llama" | "classifier", "files": [...]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

from bilinear_lens.checkpoints.hf_config import CheckpointError

MODEL_MARKER = ".bilinear-lens-model"
MARKER_FORMAT = "model/1"

__all__ = ["MODEL_MARKER", "check_model_target", "read_marker", "write_marker"]


def read_marker(folder: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """The parsed marker of ``folder``, or None when it has none (or an unreadable one)."""
    f = Path(folder) / MODEL_MARKER
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) and doc.get("bilinear_lens") == MARKER_FORMAT else None


def write_marker(folder: Union[str, Path], kind: str) -> None:
    """Write the marker into ``folder`` (call last: it lists the folder's entries)."""
    folder = Path(folder)
    files = sorted(p.name for p in folder.iterdir() if p.name != MODEL_MARKER)
    doc = {"bilinear_lens": MARKER_FORMAT, "kind": kind, "files": files}
    (folder / MODEL_MARKER).write_text(json.dumps(doc, indent=2), encoding="utf-8")


def check_model_target(path: Union[str, Path], overwrite: bool = False, what: str = "save") -> Path:
    """``path`` if a model may be written there (module docstring); a one-line error otherwise."""
    path = Path(path).expanduser()
    target, cwd = path.resolve(), Path.cwd().resolve()
    if target == cwd or target in cwd.parents or target == Path.home().resolve() or target == Path(target.anchor):
        raise CheckpointError(f"{what}: {path} is the current folder, a parent of it, the home folder or a root; "
                              "pass a new folder for the model.")
    if not (path.exists() or path.is_symlink()):
        return path
    if not path.is_dir():
        raise CheckpointError(f"{what}: {path} is a file, not a folder; nothing was touched: pass a new folder "
                              "for the model.")
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return path
    marker = read_marker(path)
    if marker is None:
        listing = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise CheckpointError(f"{what}: {path} is not empty ({listing}) and is not a model folder written by "
                              f"bilinear-lens (no {MODEL_MARKER}); nothing was touched: choose a new or empty folder.")
    if not overwrite:
        raise CheckpointError(f"{what}: {path} already holds a model saved by bilinear-lens; pass overwrite=True "
                              "to replace it, or choose another folder (nothing was touched).")
    extra = sorted(set(entries) - set(marker.get("files", [])) - {MODEL_MARKER})
    if extra:
        raise CheckpointError(f"{what}: {path} holds files bilinear-lens did not write ({', '.join(extra[:4])}); "
                              "nothing was touched: move them out first, or choose another folder.")
    return path
