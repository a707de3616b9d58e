"""Decomposing a trained :class:`BilinearClassifier` through the shared API, in pixel space.

For class ``c`` with head row ``u_c`` (``head.weight[c]``) and the last bilinear layer ``L``::

    logit_c(x) = u_c . h_{L+1} = u_c . b_out + sum_i lambda_ci (v_ci . h_L)^2  (+ u_c . h_L with residual)

with ``(lambda_ci, v_ci)`` from ``eigendecompose(clf, L, clf.head.weight)``. For a one-layer model
``h_0 = W_e x``, so every eigenvector is a pixel pattern ``W_e^T v_ci`` and the activations on raw
pixels are ``lambda_ci ((W_e^T v_ci) . x)^2``. Deeper models are read through ``eigen_tree``:
each last-layer eigenvector becomes an output direction of the layer below, down to layer 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from bilinear_lens.decomposition.eigen import Eigendecomposition, eigendecompose
from bilinear_lens.decomposition.hosvd import HOSVD, hosvd
from bilinear_lens.decomposition.tree import EigenTree, eigen_tree
from bilinear_lens.hooks.truncation import truncation_sweep
from bilinear_lens.image.data import ImageData
from bilinear_lens.image.model import BilinearClassifier, eigenvector_pixels
from bilinear_lens.image.train import accuracy


@dataclass
class ClassDecomposition:
    """Everything the report draws, computed once from a trained classifier.

    ``eig``: eigendecomposition of the last layer for the head rows (``values [C, d]``,
    ``vectors [C, d, d]``); ``signed``: ``[C, 2]`` ranks of each class's most positive and most
    negative eigenvalue; ``pixels``: ``[C, 2, 784]`` those two eigenvectors as pixel patterns
    (``W_e^T v`` for one layer; for deeper models see :func:`deep_pixels`); ``tree``: ``eigen_tree`` of
    the head rows (``None`` for one layer); ``hosvd``: of the last layer over the head rows;
    ``seconds``: wall time of the decomposition.
    """

    eig: Eigendecomposition
    signed: Int[Tensor, "C 2"]
    pixels: Float[Tensor, "C 2 d_input"]
    tree: Optional[EigenTree]
    hosvd: HOSVD
    seconds: Dict[str, float]


def last_layer(model: BilinearClassifier) -> int:
    return model.cfg.n_layers - 1


def signed_extremes(values: Float[Tensor, "n k"]) -> Int[Tensor, "n 2"]:
    """Ranks of the most positive and the most negative eigenvalue of each direction."""
    return torch.stack([values.argmax(-1), values.argmin(-1)], dim=-1)


def pick(eig: Eigendecomposition, ranks: Int[Tensor, "n R"]) -> Eigendecomposition:
    """The eigenpairs ``ranks[j]`` of each direction ``j`` (``values [n, R]``, ``vectors [n, R, d]``)."""
    rows = torch.arange(eig.n)[:, None]
    return Eigendecomposition(eig.values[rows, ranks], eig.vectors[rows, ranks], eig.directions, eig.layer,
                              eig.homogeneous)


def to_pixels(model: BilinearClassifier, eig: Eigendecomposition) -> Float[Tensor, "n k d_input"]:
    """Pixel patterns of ``eig``'s eigenvectors: ``W_e^T v`` at layer 0, :func:`deep_pixels` above.

    With residual connections the input of every layer contains ``W_e x`` itself, so ``W_e^T v``
    (the direct path) is used for every layer."""
    if eig.layer == 0 or model.cfg.residual:
        return eigenvector_pixels(model, eig.vectors)
    return deep_pixels(model, eig.layer, eig.vectors)


def decompose_classifier(model: BilinearClassifier, tree_k: int = 3) -> ClassDecomposition:
    """Eigendecompose the last layer along every head row, map to pixels, HOSVD and (deep) tree."""
    L = last_layer(model)
    t = {}
    start = time.perf_counter()
    eig = eigendecompose(model, L, model.head.weight)
    t["eigendecompose"] = time.perf_counter() - start
    signed = signed_extremes(eig.values)
    pixels = to_pixels(model, pick(eig, signed))
    start = time.perf_counter()
    h = hosvd(model, L, directions=model.head.weight, dtype=torch.float64)
    t["hosvd"] = time.perf_counter() - start
    tree = None
    if model.cfg.n_layers > 1 and not model.cfg.residual:  # trees are exact only without residual
        start = time.perf_counter()
        tree = eigen_tree(model, model.head.weight, depth=model.cfg.n_layers, k=max(tree_k, 1))
        t["eigen_tree"] = time.perf_counter() - start
    t["total"] = sum(t.values())
    return ClassDecomposition(eig, signed, pixels, tree, h, t)


def deep_pixels(model: BilinearClassifier, layer: int, vectors: Float[Tensor, "... d"]) -> Float[Tensor, "... d_input"]:
    """Pixel picture of eigenvectors of a deeper layer: follow each one down the layers, using it as
    the output direction of the layer below and keeping that layer's top-``|lambda|`` eigenvector,
    until layer 0, then ``W_e^T v`` (an illustration, not an exact identity)."""
    shape = vectors.shape[:-1]
    flat = vectors.reshape(-1, vectors.shape[-1])[:, : model.cfg.d_hidden]
    for below in range(layer - 1, -1, -1):
        sub = eigendecompose(model, below, flat, k=1, method="dense")
        flat = sub.vectors[:, 0, : model.cfg.d_hidden]
    return eigenvector_pixels(model, flat).reshape(*shape, -1)


@torch.no_grad()
def layer_inputs(model: BilinearClassifier, images: Tensor, layer: int, batch_size: int = 4096) -> Tensor:
    """``layers.{layer}.hook_in`` for ``images`` (eval mode), batched."""
    model.eval()
    name = f"layers.{layer}.hook_in"
    outs = []
    for i in range(0, len(images), batch_size):
        _, cache = model.run_with_cache(images[i:i + batch_size], names_filter=name)
        outs.append(cache[name])
    return torch.cat(outs)


@torch.no_grad()
def top_activating(model: BilinearClassifier, eig: Eigendecomposition, images: Tensor,
                   ranks: Int[Tensor, "C R"], n_top: int = 3) -> Int[Tensor, "C R n_top"]:
    """Indices of the ``n_top`` inputs with the largest ``|lambda_ci (v_ci . x)^2|`` for each class
    ``c`` and eigenvector rank ``ranks[c, r]`` (activations at the decomposed layer's ``hook_in``)."""
    x = layer_inputs(model, images, eig.layer)
    acts = pick(eig, torch.as_tensor(ranks, dtype=torch.long)).activations(x).abs()  # [N, C, R]
    return acts.topk(min(n_top, len(images)), dim=0).indices.permute(1, 2, 0)


def truncation_curve(model: BilinearClassifier, eig: Eigendecomposition, data: ImageData,
                     ks: Sequence[int] = tuple(range(31)), progress: bool = False) -> Dict[str, List[float]]:
    """Test accuracy with the last layer's output along the head rows replaced by its top-``k``
    eigenvectors per class (``truncated_mlp``); for one layer without residual this is
    ``argmax_c sum_{i<=k} lambda_ci ((W_e^T v_ci) . x)^2``."""
    ks = [k for k in ks if k <= eig.k]
    sweep = truncation_sweep(model, eig.layer, eig, ks, lambda: accuracy(model, data), progress=progress)
    return {"k": [k for k, _ in sweep], "accuracy": [a for _, a in sweep]}


def top_positive_pixels(model: BilinearClassifier, n: Optional[int] = None) -> Tensor:
    """Pixel pattern of each class's most positive eigenvector, ``[C, 784]`` (one-layer models); with
    ``n``: its ``n`` most positive eigenvectors, ``[C, n, 784]``."""
    if model.cfg.n_layers != 1:
        raise ValueError("top_positive_pixels compares pixel eigenvectors of one-layer classifiers; "
                         f"this one has {model.cfg.n_layers} layers.")
    eig = eigendecompose(model, 0, model.head.weight)
    if n is not None:
        idx = eig.values.topk(n, dim=1).indices  # [C, n], most positive first
        return eigenvector_pixels(model, eig.vectors[torch.arange(eig.n)[:, None], idx])
    idx = eig.values.argmax(dim=1)
    vecs = eig.vectors[torch.arange(eig.n), idx]
    return eigenvector_pixels(model, vecs)


def abs_cosine(a: Float[Tensor, "C P"], b: Float[Tensor, "C P"]) -> Float[Tensor, " C"]:
    """``|cos(a_c, b_c)|`` per row (eigenvector signs are arbitrary)."""
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).abs()
