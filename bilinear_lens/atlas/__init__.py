"""The eigenvector atlas: every output direction of a layer decomposed once, and a browser for it.

``build_atlas`` (:mod:`.build`) writes a resumable, sharded atlas folder; ``Atlas`` (:mod:`.reader`)
reads it lazily; ``DIR/index.html`` browses it from disk (:mod:`.page`); :mod:`.config` holds the settings
(``AtlasConfig``, the ``atlas`` command's flags). See docs/atlas.md.
"""

from bilinear_lens._lazy import lazy_getattr

_LAZY = {
    **{name: "bilinear_lens.atlas.config" for name in ("AtlasCommand", "AtlasConfig", "CERTIFY_TOL", "SOLVERS")},
    **{name: "bilinear_lens.atlas.auto" for name in ("LayerSolver", "choose_solver")},
    "build_atlas": "bilinear_lens.atlas.build", "dense_topk": "bilinear_lens.atlas.dense",
    "Atlas": "bilinear_lens.atlas.reader",
    **{name: "bilinear_lens.atlas.solve" for name in ("TopK", "certified_topk")},
    **{name: "bilinear_lens.atlas.warm" for name in ("shared_subspace", "subspace_starts")},
}
__getattr__ = lazy_getattr(__name__, _LAZY, globals())
__all__ = sorted(_LAZY)
