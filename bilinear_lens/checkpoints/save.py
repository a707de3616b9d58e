"""Saving a HookedTransformer as a plain Hugging Face ``LlamaForCausalLM`` folder.

The folder holds ``config.json`` (``hidden_act: "linear"`` for bilinear MLPs, ``mlp_bias`` and
``attention_bias`` when those biases are non-zero), ``model.safetensors`` and the tokenizer. It is
written into a temporary sibling folder and renamed into place, so a failed save leaves nothing.

Exactness: ``RMSPre`` norms (``fold_ln``) are written as RMSNorm weights of ones; the unembedding
is written untied; ``center_unembed`` only shifts logits by a per-position constant, so
log-probabilities are unchanged.

The target is checked first (:mod:`bilinear_lens.checkpoints.target`): a file, a folder of someone
else's or a non-empty foreign folder is refused, and a model folder written earlier is replaced only
with ``overwrite=True``; the folder is marked with ``.bilinear-lens-model``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import einops
import torch
from safetensors.torch import save_file

from bilinear_lens.checkpoints.hf_config import CheckpointError
from bilinear_lens.checkpoints.target import check_model_target, write_marker
from bilinear_lens.components.bilinear_mlp import BilinearMLP, is_bilinear_act_fn
from bilinear_lens.runs.atomic import atomic_dir

HF_ACT_FNS = {"silu": "silu", "gelu": "gelu", "relu": "relu", "gelu_new": "gelu_new"}


def _problems(cfg: Any) -> List[str]:
    """Every reason the config cannot be written as a Llama folder (empty when it can)."""
    checks = [
        (cfg.attn_only, "attn_only models have no MLP"),
        (not cfg.gated_mlp, "the MLP is not gated (Llama MLPs are gated)"),
        (not (is_bilinear_act_fn(cfg.act_fn) or cfg.act_fn in HF_ACT_FNS),
         f"act_fn={cfg.act_fn!r} has no Hugging Face equivalent"),
        (cfg.normalization_type not in ("RMS", "RMSPre"),
         f"normalization_type={cfg.normalization_type!r} (Llama uses RMSNorm)"),
        (not cfg.final_rms, "final_rms=False"),
        (cfg.positional_embedding_type != "rotary",
         f"positional_embedding_type={cfg.positional_embedding_type!r} (Llama uses rotary)"),
        (cfg.rotary_adjacent_pairs, "rotary_adjacent_pairs=True (HF Llama rotates halves)"),
        (cfg.rotary_dim != cfg.d_head, "partial rotary (rotary_dim != d_head)"),
        (cfg.parallel_attn_mlp, "parallel attention and MLP"),
        (bool(cfg.num_experts), "mixture of experts"),
        (cfg.use_NTK_by_parts_rope, "NTK-by-parts rope scaling"),
        (cfg.attn_scores_soft_cap > 0 or cfg.output_logits_soft_cap > 0, "logit soft-capping"),
        (not cfg.use_attn_scale or abs(cfg.attn_scale - cfg.d_head**0.5) > 1e-6,
         "a non-standard attention scale"),
        (cfg.positional_embedding_type == "rotary" and getattr(cfg, "use_qk_norm", False), "QK norm"),
    ]
    return [msg for bad, msg in checks if bad]


def llama_config(model: Any, attention_bias: bool, mlp_bias: bool) -> Dict[str, Any]:
    """The ``LlamaConfig`` dict equivalent to ``model.cfg``."""
    cfg = model.cfg
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    eos = getattr(model.tokenizer, "eos_token_id", None) if model.tokenizer is not None else None
    from transformers import LlamaConfig

    hf = LlamaConfig(
        vocab_size=cfg.d_vocab,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_key_value_heads or cfg.n_heads,
        head_dim=cfg.d_head,
        hidden_act="linear" if is_bilinear_act_fn(cfg.act_fn) else HF_ACT_FNS[cfg.act_fn],
        max_position_embeddings=cfg.n_ctx,
        rms_norm_eps=cfg.eps,
        rope_theta=float(cfg.rotary_base),
        tie_word_embeddings=False,
        attention_bias=attention_bias,
        mlp_bias=mlp_bias,
        bos_token_id=bos if bos is not None else 1,
        eos_token_id=eos if eos is not None else 2,
        architectures=["LlamaForCausalLM"],
    )
    out = hf.to_dict()
    out["rope_theta"] = float(cfg.rotary_base)  # transformers 4 reads this; 5 reads rope_parameters
    out["dtype"] = str(cfg.dtype).replace("torch.", "")
    return out


def _nonzero(*tensors: torch.Tensor) -> bool:
    return any(bool(t.detach().abs().max() > 0) for t in tensors)


def hf_state_dict(model: Any) -> Dict[str, Any]:
    """HF Llama tensors from a HookedTransformer (the inverse of ``convert_bilinear_llama_weights``)."""
    cfg = model.cfg
    problems = _problems(cfg)
    if problems:
        raise CheckpointError(
            "this model cannot be saved as a Hugging Face Llama folder: " + "; ".join(problems)
            + ". save_pretrained writes RMSNorm, rotary, gated-MLP (bilinear or SwiGLU) models."
        )
    if _nonzero(model.unembed.b_U):
        raise CheckpointError("unembed.b_U is non-zero, but Llama's lm_head has no bias; zero it first.")
    gqa = "_" if cfg.n_key_value_heads is not None else ""
    blocks = list(model.blocks)
    attn_bias = any(
        _nonzero(b.attn.b_Q, getattr(b.attn, f"{gqa}b_K"), getattr(b.attn, f"{gqa}b_V"), b.attn.b_O)
        for b in blocks
    )
    mlp_bias = any(isinstance(b.mlp, BilinearMLP) and _nonzero(b.mlp.b_in, b.mlp.b_gate, b.mlp.b_out)
                   for b in blocks)
    for b in blocks:
        if not isinstance(b.mlp, BilinearMLP) and _nonzero(b.mlp.b_in, b.mlp.b_out):
            raise CheckpointError(
                "a SwiGLU block has non-zero MLP biases; GatedMLP adds b_in after the product, "
                "which a Llama MLP cannot express."
            )

    def rms(norm: torch.nn.Module) -> torch.Tensor:
        w = getattr(norm, "w", None)
        return w.detach() if w is not None else torch.ones(cfg.d_model, dtype=cfg.dtype)

    t: Dict[str, torch.Tensor] = {"model.embed_tokens.weight": model.embed.W_E.detach()}
    for l, b in enumerate(blocks):
        p, a = f"model.layers.{l}.", b.attn
        W_K, W_V = getattr(a, f"{gqa}W_K"), getattr(a, f"{gqa}W_V")
        t[p + "input_layernorm.weight"] = rms(b.ln1)
        t[p + "post_attention_layernorm.weight"] = rms(b.ln2)
        t[p + "self_attn.q_proj.weight"] = einops.rearrange(a.W_Q.detach(), "n m h -> (n h) m")
        t[p + "self_attn.k_proj.weight"] = einops.rearrange(W_K.detach(), "n m h -> (n h) m")
        t[p + "self_attn.v_proj.weight"] = einops.rearrange(W_V.detach(), "n m h -> (n h) m")
        t[p + "self_attn.o_proj.weight"] = einops.rearrange(a.W_O.detach(), "n h m -> m (n h)")
        if attn_bias:
            t[p + "self_attn.q_proj.bias"] = a.b_Q.detach().flatten()
            t[p + "self_attn.k_proj.bias"] = getattr(a, f"{gqa}b_K").detach().flatten()
            t[p + "self_attn.v_proj.bias"] = getattr(a, f"{gqa}b_V").detach().flatten()
            t[p + "self_attn.o_proj.bias"] = a.b_O.detach()
        m = b.mlp
        t[p + "mlp.gate_proj.weight"] = m.W_gate.detach().T
        t[p + "mlp.up_proj.weight"] = m.W_in.detach().T
        t[p + "mlp.down_proj.weight"] = m.W_out.detach().T
        if mlp_bias:
            t[p + "mlp.gate_proj.bias"] = m.b_gate.detach()
            t[p + "mlp.up_proj.bias"] = m.b_in.detach()
            t[p + "mlp.down_proj.bias"] = m.b_out.detach()
    t["model.norm.weight"] = rms(model.ln_final)
    t["lm_head.weight"] = model.unembed.W_U.detach().T
    tensors = {k: v.contiguous().cpu() for k, v in t.items()}
    return {"tensors": tensors, "config": llama_config(model, attn_bias, mlp_bias)}


def save_pretrained(model: Any, path: Union[str, Path], tokenizer: Optional[Any] = None,
                    overwrite: bool = False) -> Path:
    """Write ``model`` (a bilinear or SwiGLU HookedTransformer) as a HF ``LlamaForCausalLM`` folder.

    ``tokenizer`` defaults to ``model.tokenizer``. ``path`` must be new, empty, or (with
    ``overwrite=True``) a model folder this package saved (:func:`check_model_target`); anything else
    is refused before any work. The write is atomic: temporary folder, then rename. Reload with
    ``HookedTransformer.from_pretrained(path)`` or ``AutoModelForCausalLM.from_pretrained(path)`` (no
    plugin needed) for the same log-probs.
    """
    path = check_model_target(path, overwrite, "save_pretrained")
    exported = hf_state_dict(model)  # validates before anything touches the disk
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    with atomic_dir(path) as tmp:
        save_file(exported["tensors"], str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(exported["config"], indent=2, sort_keys=True))
        gen = {"bos_token_id": exported["config"]["bos_token_id"],
               "eos_token_id": exported["config"]["eos_token_id"]}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        write_marker(tmp, "llama")
    return Path(path)
