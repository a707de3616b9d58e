"""Training and validation data for the converter: stories -> token blocks, in a resumable order.

* Training: each story is encoded as ``[BOS] + tokens``; all stories are concatenated and cut into
  blocks of ``seq_len`` tokens ``[n_blocks, seq_len]``. Epoch ``e`` visits the blocks in the order
  ``randperm(n_blocks, generator=seed + e)``; the ``i``-th sequence of the run is a pure function of
  ``i``, so a resumed run sees exactly the data an uninterrupted one would.
* Validation: the first ``n`` stories of a file, each encoded alone as ``[BOS] + tokens`` and cut to
  ``max_len`` tokens; the loss is the mean next-token cross-entropy over all predicted tokens
  (DATA.md's protocol: stories260k gives 1.2263 nats on the first 200 validation stories).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import torch

from bilinear_lens.language.data import SEPARATOR as STORY_SEPARATOR
from bilinear_lens.language.data import read_stories


def load_texts(source: str, split: str = "train", text_field: str = "text",
               limit: Optional[int] = None) -> List[str]:
    """Texts from a local file, or from a Hugging Face dataset name (``datasets.load_dataset``).

    Raises ``FileNotFoundError``/``ValueError`` with the reason when neither works (offline, a
    typo, no ``text`` column).
    """
    path = Path(source)
    if path.exists():
        if path.is_dir():
            raise ValueError(f"{source} is a folder; pass a text file (stories separated by "
                             f"'{STORY_SEPARATOR}' lines) or a Hugging Face dataset name")
        texts = read_stories(path)
    else:
        if source.startswith((".", "/")) or source.endswith((".txt", ".json", ".jsonl")):
            raise FileNotFoundError(f"data file {source} does not exist")
        try:
            import datasets

            ds = datasets.load_dataset(source, split=split)
        except Exception as err:  # offline, unknown name, ...
            raise ValueError(f"{source!r} is neither a local file nor a loadable Hugging Face dataset "
                             f"({type(err).__name__}: {err}); offline, pass a local text file") from err
        if text_field not in ds.column_names:
            raise ValueError(f"dataset {source!r} has no {text_field!r} column (columns: "
                             f"{ds.column_names}); pass --text-field")
        n = len(ds) if limit is None else min(limit, len(ds))
        texts = [t for t in ds.select(range(n))[text_field] if t and t.strip()]
    if limit is not None:
        texts = texts[:limit]
    return texts


def encode_stories(tokenizer: Any, texts: List[str]) -> List[List[int]]:
    """``[BOS] + tokens`` for every text (no EOS), with the model's own tokenizer."""
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ValueError("the tokenizer has no BOS token; the converter prepends BOS to every story")
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [[bos] + list(x) for x in ids]


def check_vocab(tokenizer: Any, d_vocab: int) -> None:
    """Refuse a tokenizer whose ids do not fit the model's embedding."""
    n = len(tokenizer)
    if n > d_vocab:
        raise ValueError(f"tokenizer vocabulary ({n} tokens) does not match the model (d_vocab="
                         f"{d_vocab}): ids >= {d_vocab} would index past the embedding. Pass the "
                         "model's own tokenizer (--tokenizer DIR)")


class PackedBlocks:
    """Token blocks ``[n_blocks, seq_len]`` and the run's deterministic sequence order."""

    def __init__(self, stories: List[List[int]], seq_len: int, seed: int = 0):
        flat = [t for s in stories for t in s]
        n_blocks = len(flat) // seq_len
        if n_blocks == 0:
            raise ValueError(f"the dataset is too small: {len(flat)} tokens make no block of "
                             f"seq_len={seq_len} tokens")
        self.blocks = torch.tensor(flat[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)
        self.seq_len, self.seed = seq_len, seed
        self._perm_epoch, self._perm = -1, None

    def __len__(self) -> int:
        return self.blocks.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.blocks.numel()

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self), generator=g), epoch
        return self._perm

    def sequences(self, start: int, count: int) -> torch.Tensor:
        """Sequences ``start .. start + count - 1`` of the run ``[count, seq_len]`` (epochs wrap)."""
        idx = []
        for i in range(start, start + count):
            epoch, j = divmod(i, len(self))
            idx.append(int(self._order(epoch)[j]))
        return self.blocks[idx]


def validation_batches(stories: List[List[int]], max_len: int, batch_size: int = 16,
                       pad_id: int = 0) -> List[tuple]:
    """``(tokens [b, T], mask [b, T])`` batches of the cut stories, sorted by length (less padding);
    ``mask[:, t]`` is 1 where token ``t`` exists. Stories shorter than 2 tokens are skipped."""
    cut = sorted((s[:max_len] for s in stories if len(s) >= 2), key=len)
    out = []
    for i in range(0, len(cut), batch_size):
        chunk = cut[i: i + batch_size]
        T = max(len(s) for s in chunk)
        toks = torch.full((len(chunk), T), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), T), dtype=torch.bool)
        for r, s in enumerate(chunk):
            toks[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = True
        out.append((toks, mask))
    return out
