"""Checkpoints: bilinear transformers as plain Hugging Face Llama folders.

``CheckpointError``, ``read_config`` and the save-target checks are light (no torch); the rest is
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from bilinear_lens.checkpoints.hf_config import CheckpointError, read_config
from bilinear_lens.checkpoints.target import MODEL_MARKER, check_model_target

_LAZY = {
    "check_weights": "bilinear_lens.checkpoints.load",
    "convert_bilinear_llama_weights": "bilinear_lens.checkpoints.load",
    "load_hf_model": "bilinear_lens.checkpoints.load",
    "save_pretrained": "bilinear_lens.checkpoints.save",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bilinear_lens.checkpoints' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CheckpointError",
    "MODEL_MARKER",
    "check_model_target",
    "check_weights",
    "convert_bilinear_llama_weights",
    "load_hf_model",
    "read_config",
    "save_pretrained",
]
