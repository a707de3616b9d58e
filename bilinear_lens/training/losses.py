"""Language-model losses: next-token cross-entropy, distillation, validation.

For logits ``z [b, T, V]`` of tokens ``x [b, T]`` (position ``T - 1`` predicts nothing)::

    CE       = mean_{r, t < T-1} -log softmax(z[r, t])[x[r, t+1]]
    KL       = mean_{r, t < T-1} sum_v p_teacher[r, t, v] (log p_teacher - log p_student)[r, t, v]
    loss     = (1 - w) CE + w KL                    (w = distillation weight; w = 0: CE alone)
    val_loss = sum over predicted, existing tokens of -log p / their number   (masked batches)
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

__all__ = ["lm_loss", "next_token_ce", "validation_loss"]


def next_token_ce(logits: Float[torch.Tensor, "b T V"], tokens: Int[torch.Tensor, "b T"],
                  reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of every position but the last against the next token (float32)."""
    logits = logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction=reduction)


def lm_loss(logits: Float[torch.Tensor, "b T V"], tokens: Int[torch.Tensor, "b T"],
            teacher_logits: Optional[Float[torch.Tensor, "b T V"]] = None,
            distill: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(loss, ce)`` with ``loss = (1 - w) CE + w KL(teacher || student)`` (module docstring)."""
    ce = next_token_ce(logits, tokens)
    if teacher_logits is None or distill == 0.0:
        return ce, ce
    t = F.log_softmax(teacher_logits[:, :-1].float(), dim=-1)
    s = F.log_softmax(logits[:, :-1].float(), dim=-1)
    kl = (t.exp() * (t - s)).sum(-1).mean()
    return (1 - distill) * ce + distill * kl, ce


@torch.no_grad()
def validation_loss(model: Any, batches: Iterable[Tuple[torch.Tensor, Optional[torch.Tensor]]],
                    device: Any = "cpu") -> float:
    """Mean next-token cross-entropy (nats/token) over every predicted token of ``batches``
    (``(tokens, mask)`` pairs; ``mask`` None: every token exists)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for toks, mask in batches:
        toks = toks.to(device)
        lp = next_token_ce(model(toks), toks, reduction="none")
        if mask is not None:
            keep = mask[:, 1:].reshape(-1).to(device)
            lp = lp[keep]
        total += float(lp.sum())
        count += lp.numel()
    model.train(was_training)
    return total / max(count, 1)
