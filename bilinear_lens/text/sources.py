"""Where text comes from: a local file, or a Hugging Face dataset (online, or from its cache).

A *source* is a path to a UTF-8 text file or a dataset name ``owner/name[:split]``; a file is split
into documents ("stories") by :func:`split_stories`:

* ``<|endoftext|>`` separators (the TinyStories format): the text between them;
* otherwise blank lines: the blank-line separated paragraphs;
* otherwise: every non-empty line.

A dataset gives its ``text_field`` column (default ``text``). Every failure is a one-line error that
says what was wrong and what to pass instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, List, Optional, Union

PathLike = Union[str, Path]
SEPARATOR = "<|endoftext|>"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(:[\w.\-\[\]%:]+)?$")
_FIX = ("Pass a text file (stories separated by lines '<|endoftext|>', blank lines, or one per line, as in "
        "../shared/data/tinystories/train.txt) or, online, a dataset name such as roneneldan/TinyStories:validation.")

__all__ = ["SEPARATOR", "check_source", "is_hub_name", "load_hub_dataset", "read_texts", "split_stories"]


def split_stories(text: str) -> List[str]:
    """The documents of one text file (module docstring)."""
    if SEPARATOR in text:
        parts = text.split(SEPARATOR)
    elif re.search(r"\n\s*\n", text):
        parts = re.split(r"\n\s*\n", text)
    else:
        parts = text.splitlines()
    return [p.strip() for p in parts if p.strip()]


def is_hub_name(source: PathLike) -> bool:
    """``owner/name[:split]`` that is not a local path (so a mistyped path is not sent to the Hub)."""
    text = str(source)
    return (not Path(text).expanduser().exists() and bool(_HUB_NAME.match(text))
            and not text.startswith((".", "/", "~")) and not text.endswith((".txt", ".json", ".jsonl")))


def check_source(source: PathLike) -> None:
    """The error :func:`read_texts` would raise for a missing, empty or folder path, without reading it."""
    p = Path(source).expanduser()
    if p.is_dir():
        raise ValueError(f"{p} is a folder; pass a text file (e.g. ../shared/data/tinystories/train.txt).")
    if not p.exists() and not is_hub_name(source):
        raise FileNotFoundError(f"data file {p} does not exist. {_FIX}")
    if p.is_file() and p.stat().st_size == 0:
        raise ValueError(f"{p} is empty; pass a file with text.")


def _read_file(p: Path) -> List[str]:
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{p} is not UTF-8 text ({err}); pass a plain text file.") from err
    stories = split_stories(text)
    if not stories:
        raise ValueError(f"{p} contains no text (it is empty or only whitespace/separators).")
    return stories


def load_hub_dataset(name: str, split: Optional[str] = None, fix: str = _FIX) -> Any:
    """``datasets.load_dataset(name, split=split)`` with a one-line error when it cannot be had
    (offline and not cached, unknown name): it says so, names offline mode when it is on, and ``fix``."""
    import os

    import datasets

    try:
        return datasets.load_dataset(name, split=split)
    except Exception as err:  # offline, unknown name, no network, ...
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (offline mode is on: HF_DATASETS_OFFLINE/HF_HUB_OFFLINE=1)" if offline else ""
        first = (str(err).splitlines() or [""])[0][:200]
        raise ValueError(f"{name!r} is neither a local file nor a loadable Hugging Face dataset{hint} "
                         f"({type(err).__name__}: {first}). {fix}") from err


def read_texts(source: PathLike, *, split: str = "train", text_field: str = "text",
               limit: Optional[int] = None) -> List[str]:
    """The documents of ``source`` (module docstring), at most ``limit`` of them.

    ``split`` is the dataset split when the name gives none (``owner/name:split`` wins). Raises
    ``FileNotFoundError`` for a path that does not exist, ``ValueError`` for a folder, a file with no
    text, or a dataset that cannot be loaded or has no ``text_field`` column.
    """
    p = Path(source).expanduser()
    if p.is_file():
        stories = _read_file(p)
    else:
        check_source(source)  # a folder, or a missing path that is no dataset name
        name, _, named_split = str(source).partition(":")
        ds = load_hub_dataset(name, split=named_split or split)
        if text_field not in ds.column_names:
            raise ValueError(f"dataset {name!r} has no {text_field!r} column (columns: {ds.column_names}); "
                             "pass --text-field.")
        n = len(ds) if limit is None else min(limit, len(ds))
        stories = [t.strip() for t in ds.select(range(n))[text_field] if t and t.strip()]
        if not stories:
            raise ValueError(f"dataset {source!r} has no text.")
    return stories[:limit] if limit is not None else stories
