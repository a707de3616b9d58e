"""bilinear-lens: bilinear-MLP transformers as first-class TransformerLens models.

``import bilinear_lens`` registers the bilinear architecture with TransformerLens (idempotent):
``act_fn="bilinear"`` (alias ``"linear"``) with ``gated_mlp=True`` builds :class:`BilinearMLP`
blocks, and ``HookedTransformer.from_pretrained(folder)`` loads bilinear or SwiGLU Llama folders.
"""

from __future__ import annotations

import importlib
from typing import Any

from bilinear_lens.checkpoints import CheckpointError, save_pretrained
from bilinear_lens.components import BilinearMLP
from bilinear_lens.registration import register, unregister

register()

__version__ = "0.1.0"

# Public names defined in submodules, imported on first use (keeps `import bilinear_lens` fast).
_LAZY = {
    "load_pretrained": "bilinear_lens.loading",
    "bilinear_layer": "bilinear_lens.decomposition.weights",
    "BilinearWeights": "bilinear_lens.decomposition.weights",
    "interaction_matrices": "bilinear_lens.decomposition.interaction",
    "eigendecompose": "bilinear_lens.decomposition.eigen",
    "Eigendecomposition": "bilinear_lens.decomposition.eigen",
    "truncated_mlp": "bilinear_lens.decomposition.truncation",
    "hosvd": "bilinear_lens.decomposition.hosvd",
    "HOSVD": "bilinear_lens.decomposition.hosvd",
    "eigen_tree": "bilinear_lens.decomposition.tree",
    "EigenTree": "bilinear_lens.decomposition.tree",
    "attach_eigenvectors": "bilinear_lens.hooks.eigen_hooks",
    "BilinearClassifier": "bilinear_lens.image.model",
    "build_atlas": "bilinear_lens.atlas",
    "Atlas": "bilinear_lens.atlas",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bilinear_lens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["BilinearMLP", "CheckpointError", "register", "save_pretrained", "unregister", *_LAZY]
