"""Multi-layer eigenvector trees for stacked bilinear layers without residual or normalisation.

For a deep bilinear model ``y_l = B_l(y_{l-1})`` (layer ``l``'s input is layer ``l-1``'s output,
as in the paper's deep image models), an eigenvector ``v`` of ``Q_l(u)`` reads a direction of
layer ``l-1``'s output. Using ``v`` as the output direction of layer ``l-1`` decomposes it further::

    v . (y_{l-1} - b_out_{l-1}) = sum_i lambda'_i (v'_i . y'_{l-2})^2       (eigenpairs of Q_{l-1}(v))

Starting from ``directions`` at layer ``layer`` (default: the last), each node's top-``k``
eigenvectors (by ``|lambda|``) become the children's output directions one layer down, to
``depth`` levels (``n k + n k^2 + ... + n k^depth`` nodes: the number of paths grows
exponentially, keep ``k`` small).

With branch biases a layer's eigenvectors are homogeneous, ``v = [v_x, v_1]`` (``d_model + 1``
entries, ``v . [y, 1]``); the first ``d_model`` entries ``v_x`` are used as the output direction of
the layer below (the constant ``v_1`` reads no activation), so the children sum to
``v_x . (y - b_out)``. Eigenvector signs are arbitrary; flipping a parent's sign flips the sign of
its children's eigenvalues (``Q(-v) = -Q(v)``), not their vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.decomposition.eigen import Eigendecomposition, eigendecompose
from bilinear_lens.decomposition.interaction import as_directions
from bilinear_lens.decomposition.weights import BilinearModel, ModelWithBilinearLayers, bilinear_layer, mlp_layers


@dataclass(eq=False)
class EigenNode:
    """One eigenvector in the tree.

    ``layer``: the bilinear layer whose interaction matrix it diagonalises; ``direction``
    ``[d_model]``: that matrix's output direction (the parent's ``vector[:d_model]``, or a given
    direction for the top level); ``value``: its eigenvalue ``lambda``; ``vector`` ``[d]``: the
    eigenvector (in layer ``layer``'s input space, ``d = d_model + 1`` when homogeneous); ``rank``:
    its position in the top-``k`` (0 = largest ``|lambda|``); ``path``: ``(root direction index,
    rank at the top level, ..., rank)``; ``level``: 0 for the top level.
    """

    layer: int
    direction: Float[Tensor, "d_model"]
    value: float
    vector: Float[Tensor, "d"]
    rank: int
    path: Tuple[int, ...]
    level: int
    parent: Optional["EigenNode"] = field(default=None, repr=False)
    children: List["EigenNode"] = field(default_factory=list, repr=False)

    def activation(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
        """``lambda (v . x')^2`` for inputs ``x`` of layer ``self.layer``."""
        v = self.vector.to(x)
        proj = x @ v[: x.shape[-1]] + (v[-1] if v.shape[0] == x.shape[-1] + 1 else 0.0)
        return self.value * proj.square()


@dataclass
class EigenTree:
    """Eigenvectors of stacked bilinear layers, parents' eigenvectors as children's directions.

    ``roots``: the top-level nodes (``n * k``, layer ``layer``); ``nodes``: all nodes, level by
    level (breadth first); ``levels``: the :class:`Eigendecomposition` of each level (``levels[t]``
    is of layer ``layer - t``; its ``n`` directions are the level-``t`` parents, in ``nodes`` order);
    ``directions`` ``[n, d_model]``: the given top-level directions.
    """

    roots: List[EigenNode]
    nodes: List[EigenNode]
    levels: List[Eigendecomposition]
    directions: Float[Tensor, "n d_model"]
    layer: int
    depth: int
    k: int

    def __len__(self) -> int:
        return len(self.nodes)

    def at_layer(self, layer: int) -> List[EigenNode]:
        """The nodes whose eigenvectors belong to bilinear layer ``layer`` (in ``nodes`` order)."""
        return [node for node in self.nodes if node.layer == layer]

    def vectors(self, layer: int) -> Float[Tensor, "m d"]:
        """The eigenvectors of layer ``layer`` stacked ``[m, d]`` (e.g. to project layer 0's to pixels)."""
        return torch.stack([node.vector for node in self.at_layer(layer)])

    def values(self, layer: int) -> Float[Tensor, "m"]:
        """The eigenvalues of layer ``layer``'s nodes ``[m]``."""
        return torch.tensor([node.value for node in self.at_layer(layer)])


def _stacked_layers(model: ModelWithBilinearLayers) -> int:
    """Number of bilinear layers of a residual-free stack, with clear errors for other models."""
    if not isinstance(model, BilinearModel):
        raise TypeError(
            f"eigen_tree needs stacked bilinear layers whose inputs are the previous layer's outputs (no "
            f"residual stream, no normalisation) exposed by a bilinear_layers() method; {type(model).__name__} "
            "has none. For a transformer, decompose each layer with eigendecompose instead."
        )
    cfg = getattr(model, "cfg", None)
    if getattr(cfg, "residual", False):
        raise ValueError(
            "eigen_tree is exact only without residual connections, but this model has cfg.residual=True: "
            "its layers' inputs are not the previous layers' outputs. Train with residual=False."
        )
    return len(mlp_layers(model))


def eigen_tree(
    model: ModelWithBilinearLayers,
    directions: Tensor,
    depth: int,
    k: int,
    layer: Optional[int] = None,
    **eig_kwargs: Any,
) -> EigenTree:
    """Tree of eigenvectors from layer ``layer`` (default: the last) down ``depth`` layers.

    ``directions``: ``[d_model]`` or ``[n, d_model]`` output directions of the start layer (e.g.
    the rows of a classifier head); ``depth``: levels (1 = the start layer only; at most
    ``layer + 1``); ``k``: eigenvectors kept per node, top by ``|lambda|``. ``eig_kwargs`` go to
    :func:`~bilinear_lens.eigendecompose` (``method``, ``dtype``, ``tol``); each level is one batched
    call over all its parents.
    """
    n_layers = _stacked_layers(model)
    start = n_layers - 1 if layer is None else layer
    if not -n_layers <= start < n_layers:
        raise IndexError(f"layer {layer} is out of range: the model has {n_layers} bilinear layers.")
    start %= n_layers
    if not isinstance(depth, int) or not 1 <= depth <= start + 1:
        raise ValueError(f"depth={depth!r} is out of range: starting at layer {start}, 1 <= depth <= {start + 1}.")
    d_model = bilinear_layer(model, start).W_out.shape[1]
    directions = as_directions(directions, d_model).detach()
    roots: List[EigenNode] = []
    nodes: List[EigenNode] = []
    levels: List[Eigendecomposition] = []
    parents: List[Optional[EigenNode]] = [None] * directions.shape[0]
    level_dirs = directions
    for t in range(depth):
        current = start - t
        eig = eigendecompose(model, current, level_dirs, k=k, **eig_kwargs)
        levels.append(eig)
        new: List[EigenNode] = []
        for j, parent in enumerate(parents):
            base = (j,) if parent is None else parent.path
            for i in range(eig.k):
                node = EigenNode(current, eig.directions[j], float(eig.values[j, i]), eig.vectors[j, i], i,
                                 base + (i,), t, parent)
                (roots if parent is None else parent.children).append(node)
                new.append(node)
        nodes.extend(new)
        parents = list(new)
        if t + 1 < depth:
            level_dirs = torch.stack([node.vector[:d_model] for node in new])
    return EigenTree(roots, nodes, levels, directions, start, depth, k)
