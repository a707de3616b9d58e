"""Checkpoints: bilinear transformers as plain Hugging Face Llama folders.

``CheckpointError``, ``read_config`` and the save-target checks are light (no torch); the rest is
imported on first use.
"""

from __future__ import annotations


from bilinear_lens._lazy import lazy_getattr

from bilinear_lens.checkpoints.hf_config import CheckpointError, read_config
from bilinear_lens.checkpoints.target import MODEL_MARKER, check_model_target

_LAZY = {
    "check_weights": "bilinear_lens.checkpoints.load",
    "convert_bilinear_llama_weights": "bilinear_lens.checkpoints.load",
    "load_hf_model": "bilinear_lens.checkpoints.load",
    "save_pretrained": "bilinear_lens.checkpoints.save",
    "PublishedInfo": "bilinear_lens.checkpoints.authors",
    "is_authors_folder": "bilinear_lens.checkpoints.authors",
    "published_info": "bilinear_lens.checkpoints.authors",
}


__getattr__ = lazy_getattr("bilinear_lens.checkpoints", _LAZY, globals())



__all__ = [
    "CheckpointError",
    "MODEL_MARKER",
    "PublishedInfo",
    "check_model_target",
    "check_weights",
    "convert_bilinear_llama_weights",
    "is_authors_folder",
    "load_hf_model",
    "published_info",
    "read_config",
    "save_pretrained",
]
