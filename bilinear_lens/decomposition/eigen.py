"""Eigendecomposition of interaction matrices: features read straight off the weights.

``Q(u) = sum_i lambda_i v_i v_i^T`` gives ``u . (MLP(x) - b_out) = sum_i lambda_i (v_i . x')^2``
exactly (``x' = x`` or ``[x, 1]``). ``lambda_i (v_i . x')^2`` is the *eigenvector activation*.
Eigenpairs are sorted by ``|lambda|`` descending, so the first ``k`` give the best rank-``k``
approximation of ``Q``.

``k=None`` computes the full spectrum densely (``torch.linalg.eigh`` on ``Q``); a given ``k``
uses the implicit Lanczos solver of :mod:`bilinear_lens.decomposition.lanczos`, which only applies
``x -> Q x`` from the weights and never forms ``Q`` or the third-order tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional, Union

import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.decomposition.interaction import as_directions, interaction_from_weights
from bilinear_lens.decomposition.weights import BilinearWeights, ModelWithBilinearLayers, append_one, bilinear_weights

DENSE_CHUNK = 64  # directions per dense eigh batch (bounds memory at 64 * d * d floats)


def sort_by_magnitude(values: Tensor, vectors: Tensor) -> tuple:
    """Reorder eigenpairs by ``|lambda|`` descending. ``values [n, k]``, ``vectors [n, d, k]`` (columns)."""
    order = values.abs().argsort(dim=-1, descending=True)
    values = values.gather(-1, order)
    vectors = vectors.gather(-1, order.unsqueeze(-2).expand_as(vectors))
    return values, vectors


@dataclass
class Eigendecomposition:
    """Eigenpairs of ``Q(u_j)`` for ``n`` output directions ``u_j`` of one bilinear layer.

    ``values``: ``[n, k]`` sorted by ``|lambda|`` descending; ``vectors``: ``[n, k, d]`` unit rows;
    ``directions``: ``[n, d_model]``; ``layer``: the layer index; ``homogeneous``: inputs are
    ``[x, 1]`` (``d = d_model + 1``).
    """

    values: Float[Tensor, "n k"]
    vectors: Float[Tensor, "n k d"]
    directions: Float[Tensor, "n d_model"]
    layer: int
    homogeneous: bool = False

    @property
    def n(self) -> int:
        return self.values.shape[0]

    @property
    def k(self) -> int:
        return self.values.shape[1]

    @property
    def d(self) -> int:
        return self.vectors.shape[-1]

    def lift(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d"]:
        """``x`` in eigenvector coordinates: ``[x, 1]`` for homogeneous decompositions."""
        if x.shape[-1] == self.d:
            return x
        if self.homogeneous and x.shape[-1] == self.d - 1:
            return append_one(x)
        raise ValueError(
            f"inputs have width {x.shape[-1]} but the eigenvectors live in d={self.d} "
            f"({'[x, 1] of ' if self.homogeneous else ''}the MLP input, blocks.{self.layer}.mlp.hook_in)."
        )

    def projections(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... n k"]:
        """``v_i . x'`` for every direction and eigenvector."""
        x = self.lift(x).to(self.vectors)
        return torch.einsum("...d,nkd->...nk", x, self.vectors)

    def activations(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... n k"]:
        """Eigenvector activations ``lambda_i (v_i . x')^2`` ``[..., n, k]`` for MLP inputs ``x``.

        ``x`` is what ``blocks.{layer}.mlp.hook_in`` records (after ``ln2`` and its weight). Summed
        over ``k`` for the full spectrum, this is ``u_j . (MLP(x) - b_out)`` exactly.
        """
        return self.values * self.projections(x).square()

    def truncate(self, k: int) -> "Eigendecomposition":
        """Keep the top ``k`` eigenpairs by ``|lambda|`` (the best rank-``k`` approximation)."""
        if not 0 <= k <= self.k:
            raise ValueError(f"cannot truncate to k={k}: this decomposition has {self.k} eigenpairs per direction.")
        return replace(self, values=self.values[:, :k], vectors=self.vectors[:, :k])

    def select(self, index: Union[int, slice, Tensor]) -> "Eigendecomposition":
        """A sub-decomposition for some of the directions."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return replace(self, values=self.values[index], vectors=self.vectors[index],
                       directions=self.directions[index])

    def matrices(self) -> Float[Tensor, "n d d"]:
        """``sum_i lambda_i v_i v_i^T``: ``Q`` itself for a full spectrum, its best rank-k approximation otherwise."""
        return torch.einsum("nk,nki,nkj->nij", self.values, self.vectors, self.vectors)

    def to(self, device: Any = None, dtype: Optional[torch.dtype] = None) -> "Eigendecomposition":
        move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return replace(self, values=move(self.values), vectors=move(self.vectors),
                       directions=move(self.directions))


def dense_eigh(weights: BilinearWeights, directions: Float[Tensor, "n d_model"],
               k: Optional[int] = None) -> tuple:
    """Reference method: form each ``Q`` (one einsum), ``torch.linalg.eigh``, sort by ``|lambda|``.

    Returns ``values [n, k]`` and ``vectors [n, k, d]``; processed in chunks of directions.
    """
    vals, vecs = [], []
    for chunk in directions.split(DENSE_CHUNK):
        e, v = torch.linalg.eigh(interaction_from_weights(weights, chunk))
        e, v = sort_by_magnitude(e, v)
        vals.append(e[:, :k])
        vecs.append(v.transpose(-1, -2)[:, :k])
    return torch.cat(vals), torch.cat(vecs)


def _dense_or_error(weights: BilinearWeights, directions: Tensor, k: Optional[int]) -> tuple:
    try:
        return dense_eigh(weights, directions, k)
    except torch.linalg.LinAlgError as err:
        raise ValueError(f"eigh failed on layer {weights.layer}'s interaction matrices "
                         f"({str(err).splitlines()[0][:100]}); retry with dtype=torch.float64.") from err


def eigendecompose(
    model: ModelWithBilinearLayers,
    layer: int,
    directions: Tensor,
    k: Optional[int] = None,
    method: str = "auto",
    dtype: Optional[torch.dtype] = None,
    tol: Optional[float] = None,
) -> Eigendecomposition:
    """Eigendecompose ``Q(u)`` of ``model``'s bilinear layer ``layer`` for each direction ``u``.

    ``directions``: ``[d_model]`` or ``[n, d_model]`` in the MLP's output space. ``k=None``: the
    full spectrum (dense ``eigh``). ``k`` given: the top ``k`` by ``|lambda|`` with the implicit
    Lanczos solver (``method="auto"``/``"lanczos"``), or densely (``method="dense"``, the
    reference). ``dtype`` (e.g. ``torch.float64``) sets the working precision; by default the
    weights' dtype, float32 for bfloat16/float16 weights (results in that dtype). ``tol``: relative
    residual tolerance of the implicit solver. Non-finite weights or directions are refused; if the
    implicit solver's linear algebra fails, the top ``k`` are computed densely instead.
    """
    weights = bilinear_weights(model, layer, dtype=dtype)
    directions = as_directions(directions, weights.d_model).to(weights.W_out)
    if k is not None and not 1 <= k <= weights.d:
        raise ValueError(
            f"k={k} is out of range: an interaction matrix of this layer is {weights.d} x {weights.d}"
            f"{' (homogeneous [x, 1])' if weights.homogeneous else ''}, so 1 <= k <= {weights.d}."
        )
    if method not in ("auto", "dense", "lanczos"):
        raise ValueError(f"method must be 'auto', 'dense' or 'lanczos', got {method!r}.")
    if k is None or method == "dense" or (method == "auto" and 2 * k >= weights.d):
        values, vectors = _dense_or_error(weights, directions, k)
    else:
        from bilinear_lens.decomposition.lanczos import lanczos_topk

        try:
            values, vectors = lanczos_topk(weights, directions, k, tol=tol)
        except torch.linalg.LinAlgError:  # an ill-conditioned block: the dense reference is exact
            values, vectors = _dense_or_error(weights, directions, k)
    if not (bool(torch.isfinite(values).all()) and bool(torch.isfinite(vectors).all())):
        raise ValueError(f"the eigendecomposition of layer {weights.layer} is not finite (the weights overflow "
                         f"{weights.W_in.dtype}); pass dtype=torch.float64.")
    return Eigendecomposition(values, vectors, directions, weights.layer, weights.homogeneous)
