"""Hugging Face Llama ``config.json`` <-> TransformerLens config dict.

A bilinear checkpoint is a plain ``LlamaForCausalLM`` folder with ``"hidden_act": "linear"``
(``ACT2FN["linear"]`` is the identity, so HF's ``LlamaMLP`` computes
``down((gate x + b_g) * (up x + b_u)) + b_d``) and ``"mlp_bias": true`` when biases are present.
It loads in plain transformers with no plugin and no remote code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

LLAMA_MODEL_TYPES = ("llama",)
SUPPORTED_LOCAL_ARCHITECTURES = ("LlamaForCausalLM",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


class CheckpointError(ValueError):
    """A model folder that cannot be loaded or a model that cannot be saved, with the fix."""


def read_config(path: Union[str, Path]) -> Dict[str, Any]:
    """Read ``path/config.json``; a folder without one is a :class:`CheckpointError`."""
    path = Path(path)
    file = path / "config.json"
    if not path.exists() or path.is_file():
        what = "is a file, not a model folder" if path.is_file() else "does not exist"
        raise CheckpointError(f"model folder {path} {what}; pass a folder holding config.json and the weights "
                              "(bilinear_lens.save_pretrained writes one).")
    if not file.is_file():
        raise CheckpointError(
            f"{path} has no config.json, so it is not a Hugging Face model folder. Pass a folder "
            "written by bilinear_lens.save_pretrained (or transformers' save_pretrained), or an "
            "official TransformerLens model name."
        )
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{file} is not valid JSON ({str(err).splitlines()[0]}); re-save the model.") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{file} holds a JSON {type(config).__name__}, not an object of settings; re-save "
                              "the model.")
    return config


LLAMA_INT_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
"""Keys a Llama ``config.json`` must hold as positive integers."""


def _check_llama_keys(path: Union[str, Path], config: Dict[str, Any]) -> None:
    file = Path(path) / "config.json"
    for key in LLAMA_INT_KEYS + ("num_key_value_heads", "head_dim", "max_position_embeddings"):
        value = config.get(key)
        if value is None and key not in LLAMA_INT_KEYS:
            continue
        if value is None:
            raise CheckpointError(f"{file} has no {key!r}; a Llama config needs {', '.join(LLAMA_INT_KEYS)}.")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"{file}: {key!r} must be a positive integer, got {value!r}; fix or re-save "
                                  "the config.")


def is_llama_config(config: Dict[str, Any]) -> bool:
    archs = config.get("architectures") or []
    archs = archs if isinstance(archs, list) else []
    return config.get("model_type") in LLAMA_MODEL_TYPES or any(
        a in SUPPORTED_LOCAL_ARCHITECTURES for a in archs
    )


def architecture_name(config: Dict[str, Any]) -> str:
    archs = config.get("architectures") or []
    return str(archs[0]) if isinstance(archs, list) and archs else f"model_type={config.get('model_type')!r}"


def _rope_theta(config: Dict[str, Any]) -> float:
    if config.get("rope_theta") is not None:
        return float(config["rope_theta"])
    params = config.get("rope_parameters") or {}
    return float(params.get("rope_theta", 10000.0))


def _rope_scaling(config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or None
    if not scaling:
        return None
    kind = (scaling.get("rope_type") or scaling.get("type") or "default").lower()
    return None if kind == "default" else scaling


def has_tokenizer(path: Union[str, Path]) -> bool:
    return any((Path(path) / f).is_file() for f in TOKENIZER_FILES)


def llama_cfg_dict(path: Union[str, Path], config: Dict[str, Any]) -> Dict[str, Any]:
    """TransformerLens ``HookedTransformerConfig`` fields for a local Llama folder.

    Unlike TransformerLens' own Llama branch this honours ``head_dim``, never guesses from the
    folder name (a path containing "llama" works) and keeps any ``act_fn`` (``linear`` = bilinear).
    """
    _check_llama_keys(path, config)
    n_heads = config["num_attention_heads"]
    d_head = config.get("head_dim") or config["hidden_size"] // n_heads
    n_kv = config.get("num_key_value_heads") or n_heads
    act_fn = config.get("hidden_act", "silu")
    if config.get("mlp_bias") and act_fn not in ("linear", "bilinear"):
        raise CheckpointError(
            f"{path}: a gated MLP with hidden_act={act_fn!r} and mlp_bias=true cannot be "
            "represented by TransformerLens' GatedMLP (it has no gate bias). Only bilinear "
            "checkpoints (hidden_act='linear') may carry MLP biases."
        )
    scaling = _rope_scaling(config)
    cfg: Dict[str, Any] = {
        "d_model": config["hidden_size"],
        "d_head": d_head,
        "n_heads": n_heads,
        "d_mlp": config["intermediate_size"],
        "n_layers": config["num_hidden_layers"],
        "n_ctx": config.get("max_position_embeddings", 2048),
        "eps": config.get("rms_norm_eps", 1e-6),
        "d_vocab": config["vocab_size"],
        "act_fn": act_fn,
        "n_key_value_heads": n_kv if n_kv != n_heads else None,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": d_head,
        "rotary_base": _rope_theta(config),
        "final_rms": True,
        "gated_mlp": True,
        "original_architecture": "LlamaForCausalLM",
        "tokenizer_name": str(path) if has_tokenizer(path) else None,
    }
    if scaling is not None:
        kind = (scaling.get("rope_type") or scaling.get("type")).lower()
        if kind != "llama3":
            raise CheckpointError(
                f"{path}: rope scaling {kind!r} is not supported by TransformerLens; only "
                "llama3-style scaling (or none) can be loaded."
            )
        cfg.update(
            use_NTK_by_parts_rope=True,
            NTK_original_ctx_len=scaling.get("original_max_position_embeddings", cfg["n_ctx"]),
            NTK_by_parts_low_freq_factor=scaling.get("low_freq_factor", 1.0),
            NTK_by_parts_high_freq_factor=scaling.get("high_freq_factor", 4.0),
            NTK_by_parts_factor=scaling.get("factor", 1.0),
        )
    return cfg
