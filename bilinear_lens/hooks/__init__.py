"""Eigenvector hooks: ``with attach_eigenvectors(model, layer, eig)`` fills ``blocks.{layer}.mlp.hook_eig``."""

from bilinear_lens.hooks.eigen_hooks import AttachedEigen, attach_eigenvectors, attached_layers, check_matches_layer

__all__ = ["AttachedEigen", "attach_eigenvectors", "attached_layers", "check_matches_layer"]
