"""Decompositions in a forward pass: eigenvector hooks (``with attach_eigenvectors(model, layer, eig)`` fills
``blocks.{layer}.mlp.hook_eig``), the top-k truncated MLP (``truncated_mlp``), and the processing record that
keeps SAEs on ``hook_in`` consistent with the model's ``fold_ln``."""

from bilinear_lens.hooks.eigen_hooks import AttachedEigen, attach_eigenvectors, attached_layers, check_matches_layer
from bilinear_lens.hooks.processing import METADATA_KEY, check_processing, processing_signature
from bilinear_lens.hooks.truncation import truncated_mlp, truncation_sweep

__all__ = ["AttachedEigen", "METADATA_KEY", "attach_eigenvectors", "attached_layers", "check_matches_layer",
           "check_processing", "processing_signature", "truncated_mlp", "truncation_sweep"]
