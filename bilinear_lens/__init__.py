"""bilinear-lens: bilinear-MLP transformers as first-class TransformerLens models.

``import bilinear_lens`` registers the bilinear architecture with TransformerLens (idempotent):
``act_fn="bilinear"`` (alias ``"linear"``) with ``gated_mlp=True`` builds :class:`BilinearMLP`
blocks, and ``HookedTransformer.from_pretrained(folder)`` loads bilinear or SwiGLU Llama folders.
The registration happens at once when TransformerLens is already imported, otherwise the moment it
is (:mod:`bilinear_lens._after_import`), so ``import bilinear_lens`` itself imports neither torch nor
TransformerLens (``bilinear-lens --help`` stays fast); every public name is imported on first use.
"""

from __future__ import annotations


from bilinear_lens._lazy import lazy_getattr

from bilinear_lens._after_import import after_import
from bilinear_lens.checkpoints.hf_config import CheckpointError


def register() -> None:
    """Register the plugin with TransformerLens now (:func:`bilinear_lens.registration.register`)."""
    from bilinear_lens.registration import register as _register

    _register()


def unregister() -> None:
    """Undo :func:`register` (:func:`bilinear_lens.registration.unregister`)."""
    from bilinear_lens.registration import unregister as _unregister

    _unregister()


_REGISTERS_ITSELF = ("bilinear_lens.registration", "bilinear_lens.bridge", "bilinear_lens.bridge.adapter",
                     "bilinear_lens.bridge.mlp")
"""Modules that registration imports; each registers at its end when it was what imported TransformerLens."""


def _on_transformer_lens() -> None:
    from bilinear_lens._after_import import is_importing

    if any(is_importing(name) for name in _REGISTERS_ITSELF):
        return  # that module is importing TransformerLens itself; registration runs when it is done
    register()


after_import("transformer_lens", _on_transformer_lens)



def _on_sae_lens() -> None:
    """The authors' signed TopK SAEs join SAELens' own registry once SAELens is imported, so that
    ``SAE.load_from_disk`` reads the folders ``bilinear-lens import-sae`` writes."""
    from bilinear_lens.sae.published import register_sae_architecture

    register_sae_architecture()


after_import("sae_lens", _on_sae_lens)

__version__ = "0.2.0"

# Public names defined in submodules, imported on first use (keeps `import bilinear_lens` fast).
_LAZY = {
    "BilinearMLP": "bilinear_lens.components.bilinear_mlp",
    "save_pretrained": "bilinear_lens.checkpoints.save",
    "load_pretrained": "bilinear_lens.loading",
    "published_info": "bilinear_lens.checkpoints.authors",
    "load_sae": "bilinear_lens.sae.published",
    "bilinear_layer": "bilinear_lens.decomposition.weights",
    "BilinearWeights": "bilinear_lens.decomposition.weights",
    "interaction_matrices": "bilinear_lens.decomposition.interaction",
    "eigendecompose": "bilinear_lens.decomposition.eigen",
    "Eigendecomposition": "bilinear_lens.decomposition.eigen",
    "truncated_mlp": "bilinear_lens.hooks.truncation",
    "hosvd": "bilinear_lens.decomposition.hosvd",
    "HOSVD": "bilinear_lens.decomposition.hosvd",
    "eigen_tree": "bilinear_lens.decomposition.tree",
    "EigenTree": "bilinear_lens.decomposition.tree",
    "attach_eigenvectors": "bilinear_lens.hooks.eigen_hooks",
    "BilinearClassifier": "bilinear_lens.image.model",
    "build_atlas": "bilinear_lens.atlas",
    "Atlas": "bilinear_lens.atlas",
}


__getattr__ = lazy_getattr("bilinear_lens", _LAZY, globals())


def __dir__() -> list:
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["CheckpointError", "register", "unregister", *_LAZY]
