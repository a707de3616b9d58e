"""Decomposing a classifier: truncation identity, top-activating inputs, deep pixels, training."""

from __future__ import annotations

import pytest
import torch

import bilinear_lens as bl
from bilinear_lens.image.analysis import (
    abs_cosine,
    decompose_classifier,
    layer_inputs,
    top_activating,
    top_positive_pixels,
    truncation_curve,
)
from bilinear_lens.image.data import ImageData
from bilinear_lens.image.model import BilinearClassifier, ClassifierConfig, pixel_activations
from bilinear_lens.image.train import TrainConfig, accuracy, lr_factor, train


def _data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=g)
    y = (x[:, :392].sum(1) > x[:, 392:].sum(1)).long() + 2 * (x[:, ::2].sum(1) > x[:, 1::2].sum(1)).long()
    return ImageData(x, y)


def _model(**kw):
    torch.manual_seed(0)
    return BilinearClassifier(ClassifierConfig(d_hidden=16, n_classes=4, **kw)).eval()


def test_truncation_curve_matches_direct_formula():
    """accuracy(k) == accuracy of argmax_c sum_{i<=k} lambda_ci ((W_e^T v_ci) . x)^2 (1 layer, no residual)."""
    m = _model()
    data = _data(300)
    eig = bl.eigendecompose(m, 0, m.head.weight)
    curve = truncation_curve(m, eig, data, ks=[0, 1, 3, 16])
    with torch.no_grad():
        acts = pixel_activations(m, eig.values, eig.vectors, data.images)  # [N, C, k]
    for k, acc in zip(curve["k"], curve["accuracy"]):
        if k == 0:
            continue  # all logits 0: argmax ties
        direct = float((acts[..., :k].sum(-1).argmax(-1) == data.labels).float().mean())
        assert acc == pytest.approx(direct, abs=1.5 / len(data))  # allow one float-rounding tie
    assert curve["accuracy"][-1] == pytest.approx(accuracy(m, data))  # full spectrum: the model itself


def test_top_activating_matches_brute_force():
    m = _model()
    data = _data(100)
    eig = bl.eigendecompose(m, 0, m.head.weight)
    ranks = torch.tensor([[0, 3], [1, 2], [0, 0], [5, 4]])
    idx = top_activating(m, eig, data.images, ranks, n_top=4)
    assert idx.shape == (4, 2, 4)
    with torch.no_grad():
        acts = pixel_activations(m, eig.values, eig.vectors, data.images).abs()
    for c in range(4):
        for r in range(2):
            expected = acts[:, c, ranks[c, r]].topk(4).indices
            assert set(idx[c, r].tolist()) == set(expected.tolist())


def test_decompose_two_layers_tree_and_pixels():
    m = _model(n_layers=2)
    dec = decompose_classifier(m, tree_k=2)
    assert dec.eig.layer == 1 and dec.pixels.shape == (4, 2, 784)
    assert torch.equal(dec.signed[:, 0], dec.eig.values.argmax(1)) and torch.equal(dec.signed[:, 1], dec.eig.values.argmin(1))
    assert dec.tree is not None and len(dec.tree.roots) == 4 * 2
    assert all(len(node.children) == 2 and node.children[0].layer == 0 for node in dec.tree.roots)
    # tree identity: a root eigenvector's children reproduce v . (layer-0 output) (full spectrum)
    x = _data(5).images
    root = dec.tree.roots[0]
    full = bl.eigendecompose(m, 0, root.vector)
    with torch.no_grad():
        h1 = layer_inputs(m, x, 1)
        assert torch.allclose(full.activations(layer_inputs(m, x, 0)).sum(-1)[:, 0], h1 @ root.vector, atol=1e-4)
    with pytest.raises(ValueError, match="one-layer"):
        top_positive_pixels(m)


def test_training_learns_and_resumes(tmp_path):
    data, test = _data(256, 0), _data(128, 1)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=3e-3, weight_decay=0.1)
    m = _model(input_noise=0.1)
    before = accuracy(m, test)
    ckpt = tmp_path / "ckpt.pt"
    result = train(m, data, cfg, test, checkpoint=ckpt, progress=False)
    assert len(result.history) == 2 and result.history[-1]["test_accuracy"] > before
    # a finished checkpoint resumes at the end: nothing left to do, same weights
    m2 = _model(input_noise=0.1)
    again = train(m2, data, cfg, test, checkpoint=ckpt, progress=False)
    assert again.resumed_from_epoch == 2
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    with pytest.raises(ValueError, match="other settings"):
        train(_model(input_noise=0.1), data, TrainConfig(epochs=3, batch_size=32), test, checkpoint=ckpt,
              progress=False)
    assert lr_factor(0, 10, 0) == 1.0 and lr_factor(10, 10, 0) == pytest.approx(0.0)


def test_abs_cosine_sign_invariant():
    a = torch.randn(3, 20)
    assert torch.allclose(abs_cosine(a, -2 * a), torch.ones(3, dtype=torch.float64))


def test_decompose_one_layer_pixels_are_extreme_eigenvectors():
    m = _model()
    dec = decompose_classifier(m)
    assert dec.tree is None and dec.pixels.shape == (4, 2, 784)
    rows = torch.arange(4)
    most_pos = dec.eig.vectors[rows, dec.eig.values.argmax(1)]
    most_neg = dec.eig.vectors[rows, dec.eig.values.argmin(1)]
    assert torch.allclose(dec.pixels[:, 0], most_pos @ m.W_e.detach())
    assert torch.allclose(dec.pixels[:, 1], most_neg @ m.W_e.detach())
    assert dec.hosvd.r >= 1 and dec.seconds["total"] >= dec.seconds["eigendecompose"]
