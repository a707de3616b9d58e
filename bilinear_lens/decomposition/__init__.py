"""Weight-based decomposition of bilinear layers: interaction matrices, eigen, HOSVD, trees.

* :mod:`~bilinear_lens.decomposition.weights`: the one place that reads a layer's weights (``bilinear_weights``,
  ``mlp_layers``, the ``ModelWithBilinearLayers`` protocol);
* :mod:`~bilinear_lens.decomposition.interaction`: ``Q(u) = 1/2 (W_in diag(W_out u) W_gate^T + transpose)``;
* :mod:`~bilinear_lens.decomposition.eigen`: ``eigendecompose`` (dense ``eigh`` or implicit top-k,
  :mod:`~bilinear_lens.decomposition.lanczos`);
* :mod:`~bilinear_lens.decomposition.hosvd`: the layer tensor's HOSVD; :mod:`~bilinear_lens.decomposition.tree`:
  eigenvector trees through stacked layers.

Hooks that *use* decompositions in a forward pass (``attach_eigenvectors``, ``truncated_mlp``) live in
:mod:`bilinear_lens.hooks`; this package imports nothing from there.
"""

from bilinear_lens._lazy import lazy_getattr

_LAZY = {
    **{name: "bilinear_lens.decomposition.weights" for name in
       ("BilinearModel", "BilinearWeights", "ModelWithBilinearLayers", "TransformerModel", "bilinear_layer",
        "bilinear_weights", "mlp_layers")},
    **{name: "bilinear_lens.decomposition.interaction" for name in ("interaction_matrices", "output_scales")},
    **{name: "bilinear_lens.decomposition.eigen" for name in ("Eigendecomposition", "eigendecompose")},
    **{name: "bilinear_lens.decomposition.hosvd" for name in ("HOSVD", "hosvd")},
    **{name: "bilinear_lens.decomposition.tree" for name in ("EigenTree", "eigen_tree")},
}
__getattr__ = lazy_getattr(__name__, _LAZY, globals())
__all__ = sorted(_LAZY)
