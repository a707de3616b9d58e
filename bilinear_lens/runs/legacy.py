"""Run folders shared by every long job (``train-lm``, ``convert``, ...): identity and atomic files.

A run folder holds ``run.json``, the settings that define the run. Re-using a folder is refused
unless it is the same run and ``resume`` is asked for, or ``overwrite`` deletes the old run's
files; a folder holding anything else is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Union

RUN_FILE = "run.json"  # legacy: replaced by bilinear_lens.runs.folder


def write_json(path: Union[str, Path], data: Any) -> None:
    """Write JSON atomically: a temporary file in the same folder, then ``os.replace``.

    Numbers that ``json`` does not know (numpy or 0-d torch scalars) are written as floats.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=float))
    os.replace(tmp, path)


def differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """``"key: old -> new"`` for every setting that differs."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def prepare_run_dir(out: Union[str, Path], identity: Dict[str, Any], *, resume: bool, overwrite: bool,
                    owned: Iterable[str], kind: str) -> bool:
    """Check ``out`` before a ``kind`` run described by ``identity``; True means "resume it".

    * missing or empty folder: a fresh run (False);
    * the same run (equal ``run.json``): True with ``resume``, refused otherwise;
    * another run: refused unless ``overwrite`` (then the ``owned`` files are deleted; False);
    * a non-empty folder that is not a run: always refused, nothing deleted.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder.")
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.is_dir() else []
    if not entries:
        return False
    run_file = out / RUN_FILE
    if not run_file.is_file():
        raise ValueError(
            f"--out {out} is not empty and holds no {kind} run ({RUN_FILE} missing; it has "
            f"{', '.join(entries[:5])}). Choose a new or empty folder."
        )
    diff = differences(json.loads(run_file.read_text()), json.loads(json.dumps(identity)))
    if overwrite:
        for name in owned:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        return False
    if diff:
        raise ValueError(
            f"--out {out} holds a different {kind} run ({'; '.join(diff[:6])}). Use another folder, "
            "or --overwrite to delete that run."
        )
    if not resume:
        raise ValueError(
            f"--out {out} already holds this run. Pass --resume to continue it from its last "
            "checkpoint (a finished run is returned as is), or --overwrite to start again."
        )
    return True
