"""Which path the atlas takes for a layer, and one prepared solver for all of its batches.

Two paths give the same certified top-``k`` (``||Q v - lambda v|| <= tol |lambda_1|``, the
residual from the weights):

* ``dense`` (:mod:`bilinear_lens.atlas.dense`): form ``Q(u)`` ``[d, d]``, full ``eigh``; costs
  about ``d^3`` per direction, whatever ``k``;
* ``lanczos`` (:mod:`bilinear_lens.atlas.solve`): batched thick-restart Lanczos, warm-started from
  the shared basis ``S`` when one is given (:mod:`bilinear_lens.atlas.warm`); costs about
  ``(2k + 12) x 4 d d_mlp`` per direction plus per-step overhead.

``auto`` picks by shape only (so every process and every resume picks the same):

    dense  iff  d^2 <= DENSE_FACTOR (k + 6) d_mlp

with ``DENSE_FACTOR = 3`` from the crossover measured on this project's CPU (one thread; d_mlp = 4 d):
dense wins at d = 128 for k = 8 and 16 (trained layer: 0.87 vs 1.8 ms per direction at k = 8) and
at d = 192 for k = 16, Lanczos wins at d = 192 for k = 8 (1.3 vs 1.9 ms) and at d >= 256.
"""

from __future__ import annotations

from typing import Optional

from jaxtyping import Float
from torch import Tensor

from bilinear_lens.atlas.config import SOLVERS
from bilinear_lens.atlas.dense import dense_forms, dense_topk
from bilinear_lens.atlas.solve import CERTIFY_TOL, GUARD, LayerOperator, TopK, certified_topk
from bilinear_lens.atlas.warm import WarmStart
from bilinear_lens.decomposition.weights import BilinearWeights

__all__ = ["DENSE_FACTOR", "SOLVERS", "LayerSolver", "choose_solver"]

DENSE_FACTOR = 3


def choose_solver(weights: BilinearWeights, k: int, solver: str = "auto") -> str:
    """``"dense"`` or ``"lanczos"`` for ``weights`` and ``k`` (module docstring); ``solver`` other
    than ``"auto"`` is returned as is."""
    if solver not in SOLVERS:
        raise ValueError(f"solver {solver!r} is not one of {', '.join(SOLVERS)}; pass one of them.")
    if solver != "auto":
        return solver
    d, d_mlp = weights.d, weights.W_in.shape[1]
    return "dense" if d * d <= DENSE_FACTOR * (k + 6) * d_mlp else "lanczos"


class LayerSolver:
    """Certified top-``k`` for batches of one layer's directions on the chosen path.

    Prepared once (fused weights, the dense path's tensor or the warm start's projected tensor);
    ``S`` ``[r, d]``: the shared warm-start basis (Lanczos path only; ``None``: cold starts);
    ``block``: start vectors per direction on the Lanczos path (:func:`~bilinear_lens.atlas.solve.certified_topk`).
    """

    def __init__(self, weights: BilinearWeights, k: int, tol: float = CERTIFY_TOL, solver: str = "auto",
                 S: Optional[Float[Tensor, "r d"]] = None, block: int = 1):
        self.path = choose_solver(weights, k, solver)
        self.k, self.tol, self.block = k, tol, block
        self.op = LayerOperator(weights)
        self.forms = dense_forms(weights) if self.path == "dense" else None
        self.warm = WarmStart(weights, S) if self.path == "lanczos" and S is not None else None

    def __call__(self, directions: Float[Tensor, "n d_model"], seed: int = 0) -> TopK:
        directions = directions.to(self.op.weights.W_in)
        if self.path == "dense":
            return dense_topk(self.op, directions, self.k, self.tol, forms=self.forms)
        start = Qstart = None
        s2 = self.op.scales(directions)
        if self.warm is not None:
            start, Qstart = self.warm.with_products(self.op, directions, min(self.k + GUARD, self.warm.r), s2)
        return certified_topk(self.op, directions, self.k, self.tol, start=start, start_products=Qstart, scales=s2,
                              seed=seed, block=self.block)

