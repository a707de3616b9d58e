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
from bilinear_lens.decomposition.truncation import truncation_sweep
from bilinear_lens.image.data import ImageData
from bilinear_lens.image.model import BilinearClassifier, eigenvector_pixels
from bilinear_lens.image.train import accuracy


@dataclass
class ClassDecomposition:
    """Everything the report draws, computed once from a trained classifier.

    ``eig``: eigendecomposition of the last layer for the head rows (``values [C, d]``,
    ``vectors [C, d, d]``); ``pixels``: ``[C, P, 784]`` pixel patterns of the top-``P`` eigenvectors
    per class (``W_e^T v`` for one layer; for deeper models the layer-0 eigenvector with the largest
    ``|lambda|`` under each last-layer eigenvector, following ``tree``); ``tree``: ``eigen_tree`` of
    the head rows (``None`` for one layer); ``hosvd``: of the last layer over the head rows;
    ``seconds``: wall time of the decomposition.
    """

    eig: Eigendecomposition
    pixels: Float[Tensor, "C P d_input"]
    tree: Optional[EigenTree]
    hosvd: HOSVD
    seconds: Dict[str, float]


def last_layer(model: BilinearClassifier) -> int:
    return model.cfg.n_layers - 1


def decompose_classifier(model: BilinearClassifier, n_pixels: int = 8, tree_k: int = 3) -> ClassDecomposition:
    """Eigendecompose the last layer along every head row, map to pixels, HOSVD and (deep) tree."""
    L = last_layer(model)
    t = {}
    start = time.perf_counter()
    eig = eigendecompose(model, L, model.head.weight)
    t["eigendecompose"] = time.perf_counter() - start
    n_pixels = min(n_pixels, eig.k)
    start = time.perf_counter()
    h = hosvd(model, L, directions=model.head.weight, dtype=torch.float64)
    t["hosvd"] = time.perf_counter() - start
    tree = None
    if model.cfg.n_layers == 1:
        pixels = eigenvector_pixels(model, eig.vectors[:, :n_pixels])
    else:
        start = time.perf_counter()
        tree = eigen_tree(model, model.head.weight, depth=model.cfg.n_layers, k=max(tree_k, 1))
        t["eigen_tree"] = time.perf_counter() - start
        pixels = deep_pixels(model, eig, n_pixels)
    t["total"] = sum(t.values())
    return ClassDecomposition(eig, pixels, tree, h, t)


def deep_pixels(model: BilinearClassifier, eig: Eigendecomposition, n_pixels: int) -> Float[Tensor, "C P d_input"]:
    """Pixel picture of last-layer eigenvectors of a deep model: follow each one down the layers,
    using it as the output direction of the layer below and keeping that layer's top-``|lambda|``
    eigenvector, until layer 0, then ``W_e^T v`` (an illustration, not an exact identity)."""
    vecs = eig.vectors[:, :n_pixels]  # [C, P, d]
    C, P, d = vecs.shape
    flat = vecs.reshape(C * P, d)[:, : model.cfg.d_hidden]
    for layer in range(eig.layer - 1, -1, -1):
        sub = eigendecompose(model, layer, flat, k=1, method="dense")
        flat = sub.vectors[:, 0, : model.cfg.d_hidden]
    return eigenvector_pixels(model, flat).reshape(C, P, -1)


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
    ranks = torch.as_tensor(ranks, dtype=torch.long)
    rows = torch.arange(eig.n)[:, None]
    sub = Eigendecomposition(eig.values[rows, ranks], eig.vectors[rows, ranks], eig.directions,
                             eig.layer, eig.homogeneous)
    acts = sub.activations(x).abs()  # [N, C, R]
    return acts.topk(min(n_top, len(images)), dim=0).indices.permute(1, 2, 0)


def signed_ranks(values: Float[Tensor, " k"]) -> Dict[str, int]:
    """Ranks (in ``|lambda|`` order) of the most positive and most negative eigenvalue."""
    return {"positive": int(values.argmax()), "negative": int(values.argmin())}


def truncation_curve(model: BilinearClassifier, eig: Eigendecomposition, data: ImageData,
                     ks: Sequence[int] = tuple(range(31)), progress: bool = False) -> Dict[str, List[float]]:
    """Test accuracy with the last layer's output along the head rows replaced by its top-``k``
    eigenvectors per class (``truncated_mlp``); for one layer without residual this is
    ``argmax_c sum_{i<=k} lambda_ci ((W_e^T v_ci) . x)^2``."""
    ks = [k for k in ks if k <= eig.k]
    sweep = truncation_sweep(model, eig.layer, eig, ks, lambda: accuracy(model, data), progress=progress)
    return {"k": [k for k, _ in sweep], "accuracy": [a for _, a in sweep]}


def top_positive_pixels(model: BilinearClassifier) -> Float[Tensor, "C d_input"]:
    """Pixel pattern of each class's most positive eigenvector (one-layer models)."""
    if model.cfg.n_layers != 1:
        raise ValueError("top_positive_pixels compares pixel eigenvectors of one-layer classifiers; "
                         f"this one has {model.cfg.n_layers} layers.")
    eig = eigendecompose(model, 0, model.head.weight)
    idx = eig.values.argmax(dim=1)
    vecs = eig.vectors[torch.arange(eig.n), idx]
    return eigenvector_pixels(model, vecs)


def abs_cosine(a: Float[Tensor, "C P"], b: Float[Tensor, "C P"]) -> Float[Tensor, " C"]:
    """``|cos(a_c, b_c)|`` per row (eigenvector signs are arbitrary)."""
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).abs()
