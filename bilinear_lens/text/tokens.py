"""Documents -> one token stream, cached; the stream -> fixed-length blocks.

    stream = [BOS] s_1 [BOS] s_2 [BOS] ... s_n          (BOS = the tokenizer's BOS/EOT token)
    blocks = stream[: n_blocks * n_ctx].view(n_blocks, n_ctx)          [n_blocks, n_ctx]

Packing documents into full blocks wastes no compute on padding; every document is preceded by the
BOS token, as TransformerLens' ``to_tokens`` (``prepend_bos=True``) feeds it at inference. The
stream of a source can be cached as safetensors (:func:`load_tokens`), keyed by the file's path,
size and mtime and the tokenizer, so a resumed run skips tokenisation; no Python object is read back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import torch
from jaxtyping import Int

from bilinear_lens.text.sources import read_texts

PathLike = Union[str, Path]

__all__ = ["blocks_of", "encode", "load_tokens", "text_blocks", "tokenize_stories"]


def _bos(tokenizer: Any) -> int:
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ValueError("the tokenizer has no BOS token, which starts every document; use a tokenizer with one "
                         "(bilinear_lens.language.tokenizer.train_tokenizer makes them).")
    return bos


def encode(stories: Sequence[str], tokenizer: Any) -> List[List[int]]:
    """``[BOS] + tokens`` of every document, separately (no EOS)."""
    bos = _bos(tokenizer)
    ids = tokenizer(list(stories), add_special_tokens=False)["input_ids"]
    return [[bos] + list(x) for x in ids]


def tokenize_stories(stories: Sequence[str], tokenizer: Any) -> Int[torch.Tensor, "n_tokens"]:
    """``[BOS] s_1 [BOS] s_2 ... s_n`` as one int64 tensor."""
    if len(stories) == 0:
        raise ValueError("no stories to tokenize.")
    pieces = encode(stories, tokenizer)
    return torch.tensor([t for piece in pieces for t in piece], dtype=torch.long)


def blocks_of(tokens: Int[torch.Tensor, "n_tokens"], n_ctx: int) -> Int[torch.Tensor, "n_blocks n_ctx"]:
    """Cut a token stream into ``len(tokens) // n_ctx`` consecutive blocks (the tail is dropped)."""
    if n_ctx < 2:
        raise ValueError(f"n_ctx={n_ctx}: a block needs at least 2 tokens (one input, one target).")
    n = tokens.numel() // n_ctx
    if n == 0:
        raise ValueError(f"only {tokens.numel()} tokens, fewer than one block of n_ctx={n_ctx}; use more text or "
                         "a smaller context.")
    return tokens[: n * n_ctx].view(n, n_ctx).clone()


def _fingerprint(source: PathLike, tokenizer: Any, limit: Optional[int]) -> str:
    p = Path(source)
    src = f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" if p.is_file() else str(source)
    tok = tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else repr(tokenizer)
    return hashlib.sha256((src + "\0" + tok + "\0" + str(limit)).encode()).hexdigest()[:16]


def _read_cache(file: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    from bilinear_lens.runs import RunError

    try:
        tokens = load_file(str(file))["tokens"]
    except Exception as e:  # truncated, not safetensors, no "tokens"
        raise RunError(f"token cache {file} cannot be read ({type(e).__name__}); it is corrupt: delete it (it is "
                       "rebuilt from the text) and run again.") from e
    if tokens.ndim != 1 or tokens.dtype != torch.long:
        raise RunError(f"token cache {file} holds {tuple(tokens.shape)} {tokens.dtype}, not a token stream; "
                       "delete it and run again.")
    return tokens


def load_tokens(source: PathLike, tokenizer: Any, cache_dir: Optional[PathLike] = None, *,
                split: str = "train", text_field: str = "text",
                limit: Optional[int] = None) -> Int[torch.Tensor, "n_tokens"]:
    """``tokenize_stories(read_texts(source, ...), tokenizer)``, cached in ``cache_dir`` when given
    (module docstring); the cache is written atomically."""
    def compute() -> torch.Tensor:
        return tokenize_stories(read_texts(source, split=split, text_field=text_field, limit=limit), tokenizer)

    if cache_dir is None:
        return compute()
    from bilinear_lens.runs import save_tensors, write_json

    cache_dir = Path(cache_dir)
    key = _fingerprint(source, tokenizer, limit)
    file = cache_dir / f"{Path(str(source)).name.replace(':', '_')}.{key}.safetensors"
    if file.is_file():
        return _read_cache(file)
    tokens = compute()
    save_tensors(file, {"tokens": tokens})
    write_json(cache_dir / "README.json", {"what": "token streams cached by bilinear-lens (safetensors)"})
    return tokens


def text_blocks(source: PathLike, tokenizer: Any, context: int, max_rows: Optional[int] = None,
                skip_rows: int = 0) -> Int[torch.Tensor, "n_rows context"]:
    """Rows ``[n, context]`` of the token stream of ``source``, rows ``skip_rows`` ..
    ``skip_rows + max_rows`` (only about as much text as they need is tokenised)."""
    if tokenizer is None:
        raise ValueError("the model folder has no tokenizer, so text cannot be tokenised; save the model with its "
                         "tokenizer (bilinear-lens train-lm does).")
    stories = read_texts(source)
    if max_rows is not None:  # tokenise only about what is needed: <= 8 characters per token
        budget, n = (skip_rows + max_rows) * context * 8, 0
        for n, story in enumerate(stories, 1):
            budget -= len(story) + 1
            if budget <= 0:
                break
        stories = stories[:n]
    blocks = blocks_of(tokenize_stories(stories, tokenizer), context)[skip_rows:]
    if max_rows is not None:
        blocks = blocks[:max_rows]
    if len(blocks) == 0:
        raise ValueError(f"{source} gives no block of {context} tokens after skipping {skip_rows}; use more text.")
    return blocks
