"""Text data for the language models: stories -> one token stream -> fixed-length blocks.

    stream = [EOT] s_1 [EOT] s_2 [EOT] ... s_n          (EOT = <|endoftext|>, the BOS/EOS token)
    blocks = stream[: n_blocks * n_ctx].view(n_blocks, n_ctx)

Packing stories into full blocks wastes no compute on padding; every story is preceded by the
BOS token, as TransformerLens' ``to_tokens`` (``prepend_bos=True``) will feed it at inference.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from jaxtyping import Int

PathLike = Union[str, Path]
SEPARATOR = "<|endoftext|>"
_HF_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(:[\w.\-\[\]%:]+)?$")


def _split_text(text: str) -> List[str]:
    """Stories of one text file.

    * a file with ``<|endoftext|>`` separators (the TinyStories format): the text between them;
    * otherwise a file with blank lines: the blank-line separated paragraphs;
    * otherwise: every non-empty line.
    """
    if SEPARATOR in text:
        parts = text.split(SEPARATOR)
    elif re.search(r"\n\s*\n", text):
        parts = re.split(r"\n\s*\n", text)
    else:
        parts = text.splitlines()
    return [p.strip() for p in parts if p.strip()]


def _read_hf_dataset(name: str) -> List[str]:
    """``owner/name`` or ``owner/name:split`` (default split ``train``): its ``text`` column."""
    from datasets import load_dataset

    dataset, _, split = name.partition(":")
    try:
        ds = load_dataset(dataset, split=split or "train")
    except Exception as err:  # offline, unknown name, ...
        raise FileNotFoundError(
            f"{name!r} is neither a local file nor a loadable Hugging Face dataset ({type(err).__name__}: "
            f"{err}). Pass a text file (stories separated by lines '<|endoftext|>', blank lines, "
            "or one per line) or, online, a dataset name such as roneneldan/TinyStories:validation."
        ) from err
    column = "text" if "text" in ds.column_names else None
    if column is None:
        raise ValueError(f"dataset {name!r} has no 'text' column (columns: {ds.column_names}).")
    return [t.strip() for t in ds[column] if t and t.strip()]


def check_source(path: PathLike) -> None:
    """Raise the error :func:`read_stories` would raise for a missing file, without reading it."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{p} is a folder; pass a text file (e.g. ../shared/data/tinystories/train.txt).")
    if not p.exists() and not (_HF_NAME.match(str(path)) and not str(path).startswith((".", "/", "~"))):
        raise FileNotFoundError(
            f"data file {p} does not exist. Pass a text file (stories separated by lines "
            "'<|endoftext|>', as in ../shared/data/tinystories/train.txt) or a Hugging Face dataset name."
        )
    if p.is_file() and p.stat().st_size == 0:
        raise ValueError(f"{p} is empty; pass a file with text.")


def read_stories(path: PathLike) -> List[str]:
    """The documents in a text file, or in a Hugging Face dataset (online only).

    ``path``: a UTF-8 text file (see :func:`_split_text` for how it is split), or a dataset name
    ``owner/name[:split]`` with a ``text`` column. Raises ``FileNotFoundError`` for a path that
    does not exist and ``ValueError`` for a file with no text.
    """
    p = Path(path).expanduser()
    if p.is_file():
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{p} is not UTF-8 text ({err}); pass a plain text file.") from err
        stories = _split_text(text)
        if not stories:
            raise ValueError(f"{p} contains no text (it is empty or only whitespace/separators).")
        return stories
    if p.is_dir():
        raise ValueError(f"{p} is a folder; pass a text file (e.g. ../shared/data/tinystories/train.txt).")
    if not p.exists() and _HF_NAME.match(str(path)) and not str(path).startswith((".", "/", "~")):
        stories = _read_hf_dataset(str(path))
        if not stories:
            raise ValueError(f"dataset {path!r} has no text.")
        return stories
    raise FileNotFoundError(
        f"data file {p} does not exist. Pass a text file (stories separated by lines "
        "'<|endoftext|>', as in ../shared/data/tinystories/train.txt) or a Hugging Face dataset name."
    )


def tokenize_stories(stories: Sequence[str], tokenizer) -> Int[torch.Tensor, "n_tokens"]:
    """``[EOT] s_1 [EOT] s_2 ... s_n`` as one int64 tensor (``EOT = tokenizer.bos_token_id``)."""
    if len(stories) == 0:
        raise ValueError("no stories to tokenize.")
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ValueError("the tokenizer has no BOS token; use bilinear_lens.language.tokenizer.train_tokenizer.")
    ids = tokenizer(list(stories), add_special_tokens=False)["input_ids"]
    total = sum(len(x) for x in ids) + len(ids)
    out = torch.empty(total, dtype=torch.long)
    i = 0
    for seq in ids:
        out[i] = bos
        out[i + 1: i + 1 + len(seq)] = torch.tensor(seq, dtype=torch.long)
        i += 1 + len(seq)
    return out


def token_blocks(tokens: Int[torch.Tensor, "n_tokens"], n_ctx: int) -> Int[torch.Tensor, "n_blocks n_ctx"]:
    """Cut a token stream into ``len(tokens) // n_ctx`` consecutive blocks (the tail is dropped)."""
    if n_ctx < 2:
        raise ValueError(f"n_ctx={n_ctx}: a block needs at least 2 tokens (one input, one target).")
    n = tokens.numel() // n_ctx
    if n == 0:
        raise ValueError(
            f"only {tokens.numel()} tokens, fewer than one block of n_ctx={n_ctx}; use more text or a smaller context."
        )
    return tokens[: n * n_ctx].view(n, n_ctx).clone()


def _fingerprint(path: PathLike, tokenizer) -> str:
    p = Path(path)
    src = f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" if p.is_file() else str(path)
    tok = tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else repr(tokenizer)
    return hashlib.sha256((src + "\0" + tok).encode()).hexdigest()[:16]


def load_tokens(path: PathLike, tokenizer, cache_dir: Optional[PathLike] = None) -> Int[torch.Tensor, "n_tokens"]:
    """``tokenize_stories(read_stories(path), tokenizer)``, cached in ``cache_dir`` (keyed by the
    file's path, size and mtime and the tokenizer) so that resumed runs skip tokenisation.

    The cache is a safetensors file (``tokens``, int64), written atomically; no Python object is deserialised, and
    a cache file that does not read back gives a one-line error naming it."""
    if cache_dir is None:
        return tokenize_stories(read_stories(path), tokenizer)
    from safetensors.torch import load_file

    from bilinear_lens.runs import RunError, save_tensors, write_json

    cache_dir = Path(cache_dir)
    key = _fingerprint(path, tokenizer)
    file = cache_dir / f"{Path(str(path)).name.replace(':', '_')}.{key}.safetensors"
    if file.is_file():
        try:
            tokens = load_file(str(file))["tokens"]
        except Exception as e:  # truncated, not safetensors, no "tokens"
            raise RunError(f"token cache {file} cannot be read ({type(e).__name__}); it is corrupt: delete "
                           "it (it is rebuilt from the text) and run again.") from e
        if tokens.ndim != 1 or tokens.dtype != torch.long:
            raise RunError(f"token cache {file} holds {tuple(tokens.shape)} {tokens.dtype}, not a token "
                           "stream; delete it and run again.")
        return tokens
    tokens = tokenize_stories(read_stories(path), tokenizer)
    save_tensors(file, {"tokens": tokens})
    write_json(cache_dir / "README.json", {"what": "token streams cached by train-lm (safetensors)"})
    return tokens
