"""Run a model with a bilinear layer's output along some directions replaced by its top-k approximation.

For output directions ``u_j`` (rows of ``eig.directions`` ``D``, ``[n, d_model]``) and the top-``k``
eigenpairs of each ``Q(u_j)`` (by ``|lambda|``, the best rank-``k`` approximation)::

    u_j . MLP_k(x) = u_j . b_out + sum_{i<=k} lambda_ji (v_ji . x')^2

while the part of the output orthogonal to ``span(D)`` is unchanged. Implemented as
``MLP_k(x) = MLP(x) + (sum_{i<=k} acts - x'^T Q x') @ pinv(D)^T`` (``x'^T Q(u) x' = u . (MLP(x) -
b_out)``) through the same ``hook_eig`` mechanism as :func:`bilinear_lens.attach_eigenvectors`, so
the kept activations are visible (and editable) at ``blocks.{layer}.mlp.hook_eig`` ``[..., n, k]``.
``k = eig.k`` for a full spectrum changes nothing; ``k = 0`` removes the output along ``span(D)``
(apart from ``b_out``).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

from tqdm.auto import tqdm

from bilinear_lens.decomposition.eigen import Eigendecomposition
from bilinear_lens.decomposition.weights import ModelWithBilinearLayers, bilinear_weights, require_finite_directions
from bilinear_lens.hooks.eigen_hooks import AttachedEigen, _attached


@contextlib.contextmanager
def truncated_mlp(
    model: ModelWithBilinearLayers, layer: int, eig: Eigendecomposition, k: Optional[int] = None, check: bool = True
) -> Iterator[AttachedEigen]:
    """Inside the block, layer ``layer``'s output along ``eig.directions`` is its top-``k`` approximation.

    ``eig``: from ``eigendecompose(model, layer, directions, ...)`` (any number of eigenpairs
    ``>= k``); ``k``: eigenpairs kept per direction (default: all of ``eig``). Exact for linearly
    independent directions (``n <= d_model``). Detaches on exit, also on exceptions.

    Example (what k costs in loss)::

        eig = bl.eigendecompose(model, 1, directions)
        for k in (0, 1, 4, 16):
            with bl.truncated_mlp(model, 1, eig, k):
                print(k, model(tokens, return_type="loss").item())
    """
    bilinear_weights(model, layer)  # refuses a layer holding NaN or inf
    for name in ("values", "vectors", "directions"):
        require_finite_directions(getattr(eig, name), f"eig.{name}")
    if k is None:
        k = eig.k
    if not isinstance(k, int) or not 0 <= k <= eig.k:
        raise ValueError(f"k={k!r} is out of range: this decomposition has {eig.k} eigenpairs per direction "
                         f"(0 <= k <= {eig.k}; compute more with eigendecompose(..., k=...)).")
    with _attached(model, layer, eig.truncate(k), replace=True, check=check and k > 0) as attached:
        yield attached


def truncation_sweep(
    model: ModelWithBilinearLayers, layer: int, eig: Eigendecomposition, ks: Iterable[int], evaluate: Callable[[], float],
    progress: bool = True,
) -> List[Tuple[int, float]]:
    """``[(k, evaluate())]`` with the layer truncated to each ``k`` (e.g. loss or accuracy vs k).

    ``evaluate`` runs the model (it takes no argument) and returns a number.
    """
    results = []
    for k in tqdm(list(ks), desc=f"truncating layer {layer}", disable=not progress):
        with truncated_mlp(model, layer, eig, k):
            results.append((k, float(evaluate())))
    return results
