"""Token blocks in a step-determined order, and validation batches.

Training (:class:`TokenBlocks`): blocks ``[n_blocks, n_ctx]``; sequence ``i`` of a run is block
``perm_e[i mod n_blocks]`` of epoch ``e = i // n_blocks``, with ``perm_e = randperm(n_blocks,
seed * 1_000_003 + e)``. Step ``s`` of ``B`` sequences reads sequences ``s B .. s B + B - 1`` (with
several processes or micro-batches, each reads its own consecutive slice), so the data of every step
is a function of the step alone: a resumed run sees exactly what an uninterrupted one would.

Validation (:func:`padded_batches`, :func:`block_batches`): ``(tokens [b, T], mask [b, T])`` pairs,
``mask[:, t]`` true where token ``t`` exists; the loss is the mean next-token cross-entropy over every
predicted token (:func:`bilinear_lens.training.losses.validation_loss`).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from jaxtyping import Bool, Int

Batch = Tuple[Int[torch.Tensor, "b T"], Optional[Bool[torch.Tensor, "b T"]]]

__all__ = ["Batch", "TokenBlocks", "block_batches", "order_indices", "padded_batches"]


def order_indices(start: int, count: int, n_blocks: int, seed: int) -> Int[torch.Tensor, "count"]:
    """Block indices of sequences ``start .. start + count - 1`` of a run (module docstring)."""
    pos = torch.arange(start, start + count)
    epochs, within = pos // n_blocks, pos % n_blocks
    out = torch.empty(count, dtype=torch.long)
    for e in epochs.unique().tolist():
        g = torch.Generator().manual_seed(seed * 1_000_003 + e)
        sel = epochs == e
        out[sel] = torch.randperm(n_blocks, generator=g)[within[sel]]
    return out


class TokenBlocks:
    """Training blocks ``[n_blocks, n_ctx]`` and the run's sequence order (module docstring)."""

    def __init__(self, blocks: Int[torch.Tensor, "n_blocks n_ctx"], seed: int = 0):
        if blocks.ndim != 2 or len(blocks) == 0:
            raise ValueError(f"token blocks must be a non-empty [n_blocks, n_ctx] tensor, got {tuple(blocks.shape)}.")
        self.blocks, self.seed = blocks, seed

    def __len__(self) -> int:
        return self.blocks.shape[0]

    @property
    def n_ctx(self) -> int:
        return self.blocks.shape[1]

    @property
    def n_tokens(self) -> int:
        return self.blocks.numel()

    def sequences(self, start: int, count: int) -> Int[torch.Tensor, "count n_ctx"]:
        """Sequences ``start .. start + count - 1`` of the run (epochs wrap)."""
        return self.blocks[order_indices(start, count, len(self), self.seed)]


def block_batches(blocks: Int[torch.Tensor, "n T"], batch_size: int = 16) -> List[Batch]:
    """Consecutive batches of whole blocks (no mask: every token exists)."""
    return [(blocks[i: i + batch_size], None) for i in range(0, len(blocks), batch_size)]


def padded_batches(stories: Sequence[Sequence[int]], max_len: int, batch_size: int = 16,
                   pad_id: int = 0) -> List[Batch]:
    """Batches of separately encoded documents cut to ``max_len`` tokens, sorted by length (less
    padding), padded with ``pad_id`` and masked. Documents shorter than 2 tokens are skipped."""
    cut = sorted((list(s[:max_len]) for s in stories if len(s) >= 2), key=len)
    out: List[Batch] = []
    for i in range(0, len(cut), batch_size):
        chunk = cut[i: i + batch_size]
        width = max(len(s) for s in chunk)
        toks = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.bool)
        for r, s in enumerate(chunk):
            toks[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = True
        out.append((toks, mask))
    return out
