"""Language-model shapes -> ``HookedTransformerConfig`` (bilinear or SwiGLU, Llama-style).

Both variants share everything but the MLP's gate: RMSNorm (``normalization_type="RMS"``),
rotary attention, untied embeddings, no biases (so ``bilinear_lens.save_pretrained`` can write
them as plain Hugging Face ``LlamaForCausalLM`` folders):

* ``mlp="bilinear"``: ``out = W_out^T ((W_gate^T x) * (W_in^T x))``  (``act_fn="bilinear"``)
* ``mlp="swiglu"``:   ``out = W_out^T (silu(W_gate^T x) * (W_in^T x))`` (``act_fn="silu"``)
"""

from __future__ import annotations

from typing import Any

import torch

from bilinear_lens.language.config import MLP_KINDS, LMShape

__all__ = ["LMShape", "MLP_KINDS", "build_model", "count_params", "hooked_config"]


def hooked_config(shape: LMShape, dtype: torch.dtype = torch.float32) -> Any:
    """The ``HookedTransformerConfig`` for ``shape`` (Llama layout; see the module docstring)."""
    import bilinear_lens  # noqa: F401  (registers act_fn="bilinear")
    from transformer_lens import HookedTransformerConfig

    shape.check()
    d_head = shape.d_model // shape.n_heads
    return HookedTransformerConfig(
        d_model=shape.d_model, d_head=d_head, n_heads=shape.n_heads, n_layers=shape.n_layers,
        d_mlp=shape.d_mlp or 4 * shape.d_model, n_ctx=shape.n_ctx, d_vocab=shape.d_vocab,
        act_fn=MLP_KINDS[shape.mlp], gated_mlp=True, normalization_type="RMS", final_rms=True,
        positional_embedding_type="rotary", rotary_dim=d_head, rotary_adjacent_pairs=False,
        rotary_base=10000, eps=1e-6, original_architecture="LlamaForCausalLM",
        default_prepend_bos=True, seed=shape.seed, dtype=dtype,
    )


def build_model(shape: LMShape, tokenizer: Any = None) -> Any:
    """A freshly initialised HookedTransformer for ``shape`` (TransformerLens' GPT-2 init) whose
    bias parameters (attention, MLP, unembedding) are zero and frozen (``requires_grad=False``)."""
    from transformer_lens import HookedTransformer

    from bilinear_lens.training.optim import freeze_biases

    torch.manual_seed(shape.seed)
    model = HookedTransformer(hooked_config(shape), tokenizer=tokenizer, move_to_device=False)
    freeze_biases(model, zero=True)
    return model


def count_params(model: torch.nn.Module, embeddings: bool = True) -> int:
    """Trainable parameters (optionally without ``embed``/``unembed``)."""
    from bilinear_lens.training.optim import trainable

    return sum(p.numel() for n, p in trainable(model) if embeddings or not n.startswith(("embed.", "unembed.")))
