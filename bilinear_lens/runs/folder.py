"""The run-folder contract: what every command that writes may and may not touch.

``open_run(out, kind, identity, resume=..., overwrite=...)`` is the only way a command gets a folder
to write into. It

* refuses, before anything is written: a file; a non-empty folder that is not a ``kind`` run of
  bilinear-lens (marked by its ``run.json``); the current folder, one of its parents, the home folder
  or ``/``; ``resume`` together with ``overwrite``; with ``overwrite``, inputs that live inside the
  folder it would replace;
* holds an exclusive advisory lock (``.bl-lock``, ``fcntl.flock``) for the whole run, so a second
  process on the same folder gets a one-line error;
* removes temporaries (``.bl-tmp-*``) left by a killed process;
* resumes only the same run (``identity`` equal to the recorded one) and only with ``resume``; a
  finished run is verified (every recorded file's size and sha256) before it is reported finished;
* refuses to continue a run whose recorded ``version`` (of the command's checkpoints and settings; 1
  when absent) differs from the command's own, naming both: such a run was started by another
  bilinear-lens release and can only be replaced (``overwrite``);
* with ``overwrite``, moves the old run's entries aside (``.bl-old-run/``) and deletes them only once
  the new run has its first checkpoint (:meth:`RunFolder.checkpointed`) or finishes; an overwrite
  interrupted before that is rolled back the next time the folder is opened;
* on an error before any checkpoint, removes what it wrote (the folder itself if it created it) or,
  for an overwrite, puts the old run back.

Layout of ``run.json``: ``{"bilinear_lens": "run/1", "kind", "version"?, "release", "identity", "replacing"?,
"finished"?}`` (``release``: the bilinear-lens version that wrote it)
where ``finished`` is ``{"files": {relative path: [size, sha256]}}``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from bilinear_lens.runs.atomic import atomic_dir, remove_temporaries, write_json
from bilinear_lens.runs.checks import check_resume_overwrite
from bilinear_lens.runs.errors import RunError
from bilinear_lens.runs.state import load_state, save_state

RUN_FILE = "run.json"
LOCK_FILE = ".bl-lock"
OLD_RUN = ".bl-old-run"
FORMAT = "run/1"
_OURS = {RUN_FILE, LOCK_FILE, OLD_RUN}

PathLike = Union[str, Path]


def _release() -> str:
    from bilinear_lens import __version__

    return __version__


def differences(old: Dict[str, Any], new: Dict[str, Any], prefix: str = "") -> List[str]:
    """``"key: old -> new"`` for every setting that differs (nested settings as ``outer.key``)."""
    out: List[str] = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(differences(a, b, f"{prefix}{k}."))
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _normal(identity: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(identity, sort_keys=True, default=str))


def os_error(err: OSError, path: PathLike, action: str = "write") -> RunError:
    """A one-line :class:`RunError` for an OS error on ``path`` (read-only, full disk, ...)."""
    fixes = {errno.EACCES: "permission denied: choose a folder you can write to",
             errno.EROFS: "read-only filesystem: choose a folder on a writable disk",
             errno.ENOSPC: "no space left on the device: free space or choose another disk",
             errno.EDQUOT: "disk quota exceeded: free space or choose another disk",
             errno.EXDEV: "crosses filesystems: keep the run inside one folder",
             errno.EBUSY: "busy (a mount point?): choose a folder inside it"}
    why = fixes.get(err.errno, f"{err.strerror or type(err).__name__}")
    return RunError(f"cannot {action} {path}: {why}.")


def check_out_path(out: PathLike, flag: str = "--out") -> Path:
    """Refuse paths no command may use as a run folder (``.``, a parent, home, ``/``, a file)."""
    out = Path(out).expanduser()
    target = out.resolve()
    cwd = Path.cwd().resolve()
    home = Path.home().resolve()
    if target == cwd or target in cwd.parents:
        raise RunError(f"{flag} {out} is the current folder or one of its parents; pass a new folder "
                       "for the run, such as runs/NAME.")
    if target == home or target == Path(target.anchor):
        raise RunError(f"{flag} {out} is the home folder or a filesystem root; pass a new folder "
                       "for the run, such as runs/NAME.")
    if out.exists() and not out.is_dir():
        raise RunError(f"{flag} {out} is a file, not a folder; pass a new folder for the run.")
    return out


def read_run_file(out: Path) -> Optional[Dict[str, Any]]:
    """The parsed ``run.json`` of ``out`` if it is a bilinear-lens run of this format, else None."""
    f = out / RUN_FILE
    if not f.is_file():
        return None
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError):
        return None
    if isinstance(doc, dict) and doc.get("bilinear_lens") == FORMAT and isinstance(doc.get("identity"), dict):
        return doc
    return None


def _visible_entries(out: Path) -> List[str]:
    return sorted(p.name for p in out.iterdir() if p.name not in _OURS)


def _classify(out: Path, kind: str, flag: str) -> Optional[Dict[str, Any]]:
    """None for a missing or empty folder, the run file for a ``kind`` run; refuses anything else."""
    if not out.exists():
        return None
    entries = _visible_entries(out)
    doc = read_run_file(out)
    if doc is None:
        if not entries and not (out / RUN_FILE).exists():
            return None
        legacy = (out / RUN_FILE).is_file()
        listing = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        why = (f"its {RUN_FILE} was written by an older bilinear-lens or another tool" if legacy
               else f"it holds {listing} and no bilinear-lens {RUN_FILE}")
        raise RunError(f"{flag} {out} is not empty and is not a bilinear-lens {kind} run ({why}); "
                       "nothing was touched: choose a new or empty folder.")
    if doc.get("kind") != kind:
        raise RunError(f"{flag} {out} holds a bilinear-lens {doc.get('kind')} run, not a {kind} run; "
                       "nothing was touched: choose another folder.")
    return doc


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest(root: Path, entries: Iterable[str]) -> Dict[str, List[Any]]:
    """``{relative path: [size, sha256]}`` for every file under ``entries`` of ``root``."""
    files: Dict[str, List[Any]] = {}
    for name in entries:
        p = root / name
        paths = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
        if not p.exists():
            raise RunError(f"{p} is missing at the end of the run; it cannot be recorded as finished.")
        for q in paths:
            files[str(q.relative_to(root))] = [q.stat().st_size, file_digest(q)]
    return files


class RunFolder:
    """An opened run folder (see the module docstring); use :func:`open_run` to get one."""

    def __init__(self, path: Path, kind: str, identity: Dict[str, Any], owned: Optional[Sequence[str]],
                 version: int = 1):
        self.path, self.kind, self.identity, self.version = path, kind, identity, version
        self.owned = tuple(owned) if owned is not None else None
        self.resuming = False
        self.finished = False
        self.created = False
        self._lock_fd: Optional[int] = None
        self._replacing = False
        self._kept = False  # True once something worth keeping (a checkpoint) is on disk
        self._began = False  # True once this run wrote into the folder (a fresh run.json, an overwrite)

    # -- files inside the run -------------------------------------------------------------------
    def file(self, name: str) -> Path:
        """``path / name`` (the run's own entries only; a name may not leave the folder)."""
        p = self.path / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise RunError(f"{name!r} is not a path inside the run folder.")
        return p

    def write_json(self, name: str, data: Any) -> Path:
        return write_json(self.file(name), data)

    def atomic_dir(self, name: str) -> Any:
        """Context manager: a temporary folder that replaces ``path / name`` on success."""
        return atomic_dir(self.file(name))

    def move_in(self, tmp: Path, last: Sequence[str] = ()) -> None:
        """Move every file of ``tmp`` (a ``.bl-tmp-*`` folder inside the run, where a result was built) to the top
        of the run, each rename atomic, ``last`` names after the others (e.g. ``index.html``), as ordinary files
        (mode ``0o666`` minus the umask); then remove ``tmp``."""
        mask = os.umask(0)
        os.umask(mask)
        for f in sorted(tmp.iterdir(), key=lambda p: (p.name in last, last.index(p.name) if p.name in last else 0,
                                                      p.name)):
            os.chmod(f, 0o666 & ~mask)  # some writers make owner-only files
            os.replace(f, self.file(f.name))
        tmp.rmdir()

    def save_state(self, name: str, obj: Any) -> None:
        """An object-free checkpoint ``name.safetensors`` + ``name.json``; counts as a checkpoint."""
        save_state(self.file(name), obj)
        self.checkpointed()

    def load_state(self, name: str) -> Optional[Any]:
        return load_state(self.file(name))

    # -- lifecycle ------------------------------------------------------------------------------
    def _run_doc(self, **extra: Any) -> Dict[str, Any]:
        doc = {"bilinear_lens": FORMAT, "kind": self.kind, "identity": self.identity, "release": _release(), **extra}
        if self.version != 1:
            doc["version"] = self.version
        return doc

    def checkpointed(self) -> None:
        """Record that the run has durable progress: an overwritten old run is now deleted, and an
        error from here on keeps the folder for ``--resume``."""
        self._kept = True
        if self._replacing:
            write_json(self.path / RUN_FILE, self._run_doc())
            shutil.rmtree(self.path / OLD_RUN, ignore_errors=True)
            self._replacing = False

    def finish(self, entries: Optional[Iterable[str]] = None, **summary: Any) -> None:
        """Mark the run finished, recording the size and sha256 of every file under ``entries``
        (default: every entry of the folder but ``run.json``)."""
        names = list(entries) if entries is not None else _visible_entries(self.path)
        doc = self._run_doc(finished={"files": manifest(self.path, names), **summary})
        self.checkpointed()
        write_json(self.path / RUN_FILE, doc)
        self.finished = True

    def verify(self) -> None:
        """Check every file recorded at ``finish`` (size, sha256); a one-line error if one changed."""
        doc = read_run_file(self.path) or {}
        for rel, (size, digest) in (doc.get("finished") or {}).get("files", {}).items():
            p = self.path / rel
            if not p.is_file():
                raise RunError(f"{p} is missing from the finished run; restart it with --overwrite.")
            if p.stat().st_size != size or file_digest(p) != digest:
                raise RunError(f"{p} changed since the run finished (size or sha256 differs); restart "
                               "it with --overwrite.")

    def close(self, failed: bool = False) -> None:
        """Release the lock; after a failure with nothing worth keeping, undo what the run wrote."""
        try:
            if failed and self._began and not self._kept:
                self._undo()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _undo(self) -> None:
        if self._replacing:
            _restore_old_run(self.path, self.owned)
        elif self.created:
            shutil.rmtree(self.path, ignore_errors=True)
        elif not self.resuming:  # a pre-existing empty folder: remove what was written in it
            for p in self.path.iterdir():
                if p.name != LOCK_FILE:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            (self.path / LOCK_FILE).unlink(missing_ok=True)

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(failed=exc_type is not None)


def _restore_old_run(out: Path, owned: Optional[Sequence[str]]) -> None:
    """Roll back an interrupted overwrite: the new run's entries go, the old run's come back."""
    old = out / OLD_RUN
    if not old.is_dir():
        return
    for p in out.iterdir():
        if p.name in (LOCK_FILE, OLD_RUN):
            continue
        if owned is None or p.name in owned or p.name == RUN_FILE:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    for p in old.iterdir():
        os.replace(p, out / p.name)
    old.rmdir()


def _lock(out: Path) -> int:
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunError(f"{out} is in use by another bilinear-lens process (pid {holder}); wait for it to "
                       "finish or choose another folder.") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _inside(path: PathLike, folder: Path) -> bool:
    p, f = Path(path).resolve(), folder.resolve()
    return p == f or f in p.parents


def open_run(out: PathLike, kind: str, identity: Dict[str, Any], *, resume: bool = False,
             overwrite: bool = False, owned: Optional[Sequence[str]] = None,
             inputs: Iterable[Optional[PathLike]] = (), flag: str = "--out", version: int = 1) -> RunFolder:
    """Open ``out`` for a ``kind`` run described by ``identity`` (module docstring).

    ``owned``: the top-level entries the command writes (what ``overwrite`` replaces; None: all).
    ``inputs``: paths the run reads, refused with ``overwrite`` when they lie inside ``out``.
    ``version``: of the command's checkpoints and settings; a run recorded with another is not continued.
    The returned :class:`RunFolder` is a context manager; ``run.resuming`` says whether an earlier
    run is continued, ``run.finished`` whether it had finished (its files verified).
    """
    check_resume_overwrite(resume, overwrite)
    out = check_out_path(out, flag)
    identity = _normal(identity)
    _classify(out, kind, flag)  # refuse foreign folders before writing anything
    run = RunFolder(out, kind, identity, owned, version)
    try:
        run.created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        run._lock_fd = _lock(out)
    except OSError as e:
        if run.created:
            shutil.rmtree(out, ignore_errors=True)
        raise os_error(e, out, "create the run folder") from e
    try:
        _open_locked(run, resume, overwrite, inputs, flag)
    except BaseException:
        if run.created and not run._began:
            run._began = True  # refused in a folder made just now: remove it again
        run.close(failed=True)
        raise
    return run


def _open_locked(run: RunFolder, resume: bool, overwrite: bool, inputs: Iterable[Optional[PathLike]],
                 flag: str) -> None:
    out = run.path
    remove_temporaries(out)
    doc = read_run_file(out)
    if doc is not None and doc.get("replacing") and (out / OLD_RUN).is_dir():
        _restore_old_run(out, run.owned)  # an overwrite was interrupted before its first checkpoint
    shutil.rmtree(out / OLD_RUN, ignore_errors=True)
    doc = _classify(out, run.kind, flag)  # again, under the lock
    if doc is None:
        run._began = True
        run.write_json(RUN_FILE, run._run_doc())
        return
    diff = differences(doc["identity"], run.identity)
    recorded = doc.get("version", 1)
    if recorded != run.version and not overwrite:
        by = f"bilinear-lens {doc['release']}" if doc.get("release") else "another bilinear-lens release"
        raise RunError(f"{flag} {out} holds a {run.kind} run of format {recorded}, written by {by}; this release "
                       f"({_release()}) writes format {run.version} and cannot continue it: finish it with the "
                       "release that started it, or pass --overwrite to start again (or choose another folder).")
    if overwrite:
        inside = [str(p) for p in inputs if p is not None and _inside(p, out)]
        if inside:
            raise RunError(f"--overwrite would delete {inside[0]}, an input of this run inside {out}; "
                           "move it out of the folder first.")
        old = out / OLD_RUN
        old.mkdir()
        run._began = run._replacing = True
        for p in out.iterdir():
            if p.name not in (LOCK_FILE, OLD_RUN) and (run.owned is None or p.name in run.owned
                                                         or p.name == RUN_FILE):
                os.replace(p, old / p.name)
        run.write_json(RUN_FILE, run._run_doc(replacing=True))
        return
    if diff:
        raise RunError(f"{flag} {out} holds a different {run.kind} run ({'; '.join(diff[:4])}); use "
                       "another folder, or --overwrite to replace that run.")
    if not resume:
        raise RunError(f"{flag} {out} already holds this {run.kind} run; pass --resume to continue it "
                       "(a finished run is verified and returned), or --overwrite to start again.")
    run.resuming = True
    run._kept = True
    if doc.get("finished"):
        run.verify()
        run.finished = True
