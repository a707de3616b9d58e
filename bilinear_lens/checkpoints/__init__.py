"""Checkpoints: bilinear transformers as plain Hugging Face Llama folders."""

from bilinear_lens.checkpoints.hf_config import CheckpointError, read_config
from bilinear_lens.checkpoints.load import check_weights, convert_bilinear_llama_weights, load_hf_model
from bilinear_lens.checkpoints.save import save_pretrained
from bilinear_lens.checkpoints.target import MODEL_MARKER, check_model_target

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
