"""Training-only speed-ups for a HookedTransformer: fused attention, gradient checkpointing.

**Fused attention** (:func:`use_sdpa`, undone by :func:`restore_attention`): ``F.scaled_dot_product_attention``.

TransformerLens materialises ``[batch, head, pos, pos]`` scores, a causal ``where``, a softmax and
a NaN scrub; on a CPU this dominates the step time of small models (about 70% for stories260k at
256 tokens). During finetuning no attention hook is needed, so :func:`use_sdpa` replaces each
attention module's ``forward`` with

    q, k, v = calculate_qkv_matrices(x)        (TransformerLens' own, incl. grouped KV heads)
    q, k    = apply_rotary(q), apply_rotary(k)
    z       = softmax(q k^T / attn_scale + causal mask) v     (one fused SDPA call)
    out     = z @ W_O + b_O

and falls back to the original forward for anything else (KV cache, attention masks, non-rotary
or non-causal models, attention-result hooks). The training loop restores it before saving, so the saved
model is untouched.

**Gradient checkpointing** (:func:`enable_gradient_checkpointing`): each block's activations are
recomputed in the backward pass (``torch.utils.checkpoint``), trading about one extra forward per step
for storing only the residual stream between blocks.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["enable_gradient_checkpointing", "restore_attention", "use_sdpa"]

_PATCHED = "_bl_sdpa_original_forward"


def _supported(cfg: Any) -> bool:
    return (cfg.positional_embedding_type == "rotary" and cfg.attention_dir == "causal"
            and not cfg.use_attn_result and not cfg.load_in_4bit and cfg.attn_scores_soft_cap <= 0
            and not getattr(cfg, "use_attention_sinks", False) and cfg.clip_qkv is None
            and not cfg.use_logn_attn and cfg.original_architecture not in
            ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM"))


def _sdpa_forward(attn: Any, query_input: torch.Tensor, key_input: torch.Tensor,
                  value_input: torch.Tensor, past_kv_cache_entry: Any = None,
                  additive_attention_mask: Any = None, attention_mask: Any = None,
                  position_bias: Any = None, **kw: Any) -> torch.Tensor:
    """Bound to an attention module as its ``forward`` (a bound method survives ``deepcopy``)."""
    original = type(attn).forward.__get__(attn)
    if attention_mask is not None and bool(attention_mask.bool().all()):
        attention_mask = None  # HookedTransformer passes all-ones masks for unpadded input
    if (past_kv_cache_entry is not None or additive_attention_mask is not None
            or attention_mask is not None or position_bias is not None or kw):
        return original(query_input, key_input, value_input, past_kv_cache_entry=past_kv_cache_entry,
                        additive_attention_mask=additive_attention_mask,
                        attention_mask=attention_mask, position_bias=position_bias, **kw)
    q, k, v = attn.calculate_qkv_matrices(query_input, key_input, value_input)  # [b, pos, h, d]
    q = attn.hook_rot_q(attn.apply_rotary(q, 0, None))
    k = attn.hook_rot_k(attn.apply_rotary(k, 0, None))
    rep = attn.cfg.n_heads // k.shape[2]
    if rep > 1:
        k = torch.repeat_interleave(k, dim=2, repeats=rep)
        v = torch.repeat_interleave(v, dim=2, repeats=rep)
    z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=True, scale=1.0 / float(attn.attn_scale))
    z = attn.hook_z(z.transpose(1, 2))  # [b, pos, h, d]
    w = attn.W_O.reshape(-1, attn.W_O.shape[-1])  # [(h d), d_model]
    return F.linear(z.reshape(z.shape[0], z.shape[1], -1), w.T, attn.b_O)


def use_sdpa(model: Any) -> int:
    """Patch every supported attention module of ``model``; returns how many were patched."""
    if not _supported(model.cfg):
        return 0
    n = 0
    for block in model.blocks:
        attn = block.attn
        if hasattr(attn, _PATCHED):
            continue
        setattr(attn, _PATCHED, True)
        attn.forward = types.MethodType(_sdpa_forward, attn)
        n += 1
    return n


def restore_attention(model: Any) -> None:
    """Undo :func:`use_sdpa`."""
    for block in model.blocks:
        attn = block.attn
        if hasattr(attn, _PATCHED):
            del attn.forward  # the instance attribute; the class method is visible again
            delattr(attn, _PATCHED)


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute each block's activations in the backward pass (module docstring)."""
    for block in model.blocks:
        if getattr(block, "_bl_checkpointed", False):
            continue
        forward = block.forward

        @functools.wraps(forward)
        def wrapped(*args: Any, _forward=forward, **kwargs: Any) -> torch.Tensor:
            if torch.is_grad_enabled():
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
            return _forward(*args, **kwargs)

        block.forward = wrapped
        block._bl_checkpointed = True
