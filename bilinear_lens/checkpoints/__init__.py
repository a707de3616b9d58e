"""Checkpoints: bilinear transformers as plain Hugging Face Llama folders, and the authors' published format."""

from bilinear_lens.checkpoints.authors import PublishedInfo, is_authors_folder, published_info
from bilinear_lens.checkpoints.hf_config import CheckpointError, read_config
from bilinear_lens.checkpoints.load import check_weights, convert_bilinear_llama_weights, load_hf_model
from bilinear_lens.checkpoints.save import atomic_dir, save_pretrained

__all__ = [
    "CheckpointError",
    "PublishedInfo",
    "atomic_dir",
    "check_weights",
    "convert_bilinear_llama_weights",
    "is_authors_folder",
    "load_hf_model",
    "published_info",
    "read_config",
    "save_pretrained",
]
