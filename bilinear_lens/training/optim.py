"""The optimiser of every trainer: AdamW, weight decay on matrices only; frozen biases.

    groups = [{matrices (ndim >= 2): weight_decay}, {vectors and scalars: 0}]     (split_decay=True)
    groups = [{every trainable parameter: weight_decay}]                          (split_decay=False)

A Hugging Face Llama folder holds no attention, MLP or unembedding biases, but a HookedTransformer
materialises them: :func:`freeze_biases` keeps them at zero and out of the optimiser, so what is
trained can always be saved as a plain Llama.
"""

from __future__ import annotations

from typing import Iterable, List, Tuple

import torch
from torch import nn

__all__ = ["adamw", "freeze_biases", "is_bias", "trainable"]


def is_bias(name: str) -> bool:
    """``b_*`` / ``_b_*`` parameters (``blocks.0.attn.b_Q``, ``unembed.b_U``, ...)."""
    return name.rsplit(".", 1)[-1].lstrip("_").startswith("b_")


def freeze_biases(model: nn.Module, zero: bool = False) -> List[str]:
    """Freeze every bias (and set it to zero when ``zero``); returns their names."""
    names = []
    for name, p in model.named_parameters():
        if is_bias(name):
            if zero:
                with torch.no_grad():
                    p.zero_()
            p.requires_grad_(False)
            names.append(name)
    return names


def trainable(model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every parameter that requires a gradient."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def adamw(params: Iterable[nn.Parameter], lr: float, weight_decay: float, betas: Tuple[float, float] = (0.9, 0.95),
          split_decay: bool = True, foreach: bool = True) -> torch.optim.AdamW:
    """AdamW over ``params`` (module docstring for the groups)."""
    params = [p for p in params if p.requires_grad]
    if split_decay:
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    else:
        groups = [{"params": params, "weight_decay": weight_decay}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), foreach=foreach)
