"""Checkpoints: bilinear transformers as plain Hugging Face Llama folders."""

from bilinear_lens.checkpoints.hf_config import CheckpointError, read_config
from bilinear_lens.checkpoints.load import check_weights, convert_bilinear_llama_weights, load_hf_model
from bilinear_lens.checkpoints.save import atomic_dir, save_pretrained

__all__ = [
    "CheckpointError",
    "atomic_dir",
    "check_weights",
    "convert_bilinear_llama_weights",
    "load_hf_model",
    "read_config",
    "save_pretrained",
]
