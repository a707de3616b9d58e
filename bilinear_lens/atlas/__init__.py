"""The eigenvector atlas: every output direction of a layer decomposed once, and a browser for it.

``build_atlas`` (:mod:`.build`) writes a resumable, sharded atlas folder; ``Atlas`` (:mod:`.reader`)
reads it lazily; ``DIR/index.html`` browses it from disk (:mod:`.page`). See docs/atlas.md.
"""

from bilinear_lens.atlas.auto import LayerSolver, choose_solver
from bilinear_lens.atlas.build import build_atlas
from bilinear_lens.atlas.dense import dense_topk
from bilinear_lens.atlas.reader import Atlas
from bilinear_lens.atlas.solve import CERTIFY_TOL, TopK, certified_topk
from bilinear_lens.atlas.warm import shared_subspace, subspace_starts

__all__ = ["Atlas", "CERTIFY_TOL", "LayerSolver", "TopK", "build_atlas", "certified_topk", "choose_solver",
           "dense_topk", "shared_subspace", "subspace_starts"]
