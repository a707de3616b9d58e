"""Checkpoints: bilinear transformers as plain Hugging Face Llama folders.

``check_weights``, ``convert_bilinear_llama_weights`` and ``load_hf_model`` (the HookedTransformer
loading path, TransformerLens 3.x) are imported on first use, so this package also imports on
TransformerLens 4.x, which has no ``HookedTransformerConfig``.
"""

import importlib
from typing import Any

from bilinear_lens.checkpoints.hf_config import CheckpointError, read_config
from bilinear_lens.checkpoints.save import atomic_dir, save_pretrained

_LAZY = ("check_weights", "convert_bilinear_llama_weights", "load_hf_model")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("bilinear_lens.checkpoints.load"), name)
    raise AttributeError(f"module 'bilinear_lens.checkpoints' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "atomic_dir",
    "check_weights",
    "convert_bilinear_llama_weights",
    "load_hf_model",
    "read_config",
    "save_pretrained",
]
