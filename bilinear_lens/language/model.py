"""Language-model shapes -> ``HookedTransformerConfig`` (bilinear or SwiGLU, Llama-style).

Both variants share everything but the MLP's gate: RMSNorm (``normalization_type="RMS"``),
rotary attention, untied embeddings, no biases (so ``bilinear_lens.save_pretrained`` can write
them as plain Hugging Face ``LlamaForCausalLM`` folders):

* ``mlp="bilinear"``: ``out = W_out^T ((W_gate^T x) * (W_in^T x))``  (``act_fn="bilinear"``)
* ``mlp="swiglu"``:   ``out = W_out^T (silu(W_gate^T x) * (W_in^T x))`` (``act_fn="silu"``)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional, Tuple

import torch

MLP_KINDS = {"bilinear": "bilinear", "swiglu": "silu"}


@dataclass
class LMShape:
    """Model shape. ``d_mlp`` defaults to ``4 * d_model``; ``d_head`` to ``d_model // n_heads``."""

    mlp: str = "bilinear"
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: Optional[int] = None
    n_ctx: int = 128
    d_vocab: int = 4096
    seed: int = 0


def check_shape(shape: LMShape) -> None:
    """Raise ``ValueError`` naming the problem for an impossible shape."""
    if shape.mlp not in MLP_KINDS:
        raise ValueError(f"mlp={shape.mlp!r}: choose one of {sorted(MLP_KINDS)}.")
    for name in ("d_model", "n_layers", "n_heads", "n_ctx", "d_vocab"):
        if getattr(shape, name) < 1:
            raise ValueError(f"{name}={getattr(shape, name)} must be positive.")
    if shape.d_mlp is not None and shape.d_mlp < 1:
        raise ValueError(f"d_mlp={shape.d_mlp} must be positive.")
    if shape.d_model % shape.n_heads:
        raise ValueError(f"d_model={shape.d_model} is not divisible by n_heads={shape.n_heads}.")
    if (shape.d_model // shape.n_heads) % 2:
        raise ValueError(
            f"d_head = d_model / n_heads = {shape.d_model // shape.n_heads} must be even for rotary embeddings."
        )


def hooked_config(shape: LMShape, dtype: torch.dtype = torch.float32):
    """The ``HookedTransformerConfig`` for ``shape`` (Llama layout; see the module docstring)."""
    import bilinear_lens  # noqa: F401  (registers act_fn="bilinear")
    from transformer_lens import HookedTransformerConfig

    check_shape(shape)
    d_head = shape.d_model // shape.n_heads
    return HookedTransformerConfig(
        d_model=shape.d_model, d_head=d_head, n_heads=shape.n_heads, n_layers=shape.n_layers,
        d_mlp=shape.d_mlp or 4 * shape.d_model, n_ctx=shape.n_ctx, d_vocab=shape.d_vocab,
        act_fn=MLP_KINDS[shape.mlp], gated_mlp=True, normalization_type="RMS", final_rms=True,
        positional_embedding_type="rotary", rotary_dim=d_head, rotary_adjacent_pairs=False,
        rotary_base=10000, eps=1e-6, original_architecture="LlamaForCausalLM",
        default_prepend_bos=True, seed=shape.seed, dtype=dtype,
    )


def build_model(shape: LMShape, tokenizer: Any = None):
    """A freshly initialised HookedTransformer for ``shape`` (TransformerLens' GPT-2 init) whose
    bias parameters (attention, MLP, unembedding) are zero and frozen (``requires_grad=False``)."""
    from transformer_lens import HookedTransformer

    torch.manual_seed(shape.seed)
    model = HookedTransformer(hooked_config(shape), tokenizer=tokenizer, move_to_device=False)
    for name, p in model.named_parameters():
        if is_bias(name):
            with torch.no_grad():
                p.zero_()
            p.requires_grad_(False)
    return model


def is_bias(name: str) -> bool:
    """Parameters that a Llama folder cannot hold (kept at zero): every ``b_*``."""
    return name.rsplit(".", 1)[-1].lstrip("_").startswith("b_")


def trainable(model: torch.nn.Module) -> Iterator[Tuple[str, torch.nn.Parameter]]:
    return ((n, p) for n, p in model.named_parameters() if p.requires_grad)


def count_params(model: torch.nn.Module, embeddings: bool = True) -> int:
    """Trainable parameters (optionally without ``embed``/``unembed``)."""
    return sum(p.numel() for n, p in trainable(model)
               if embeddings or not n.startswith(("embed.", "unembed.")))
