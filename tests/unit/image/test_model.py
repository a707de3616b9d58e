"""BilinearClassifier: hooks, exact eigen identities in pixel space, save/load, regularisation."""

from __future__ import annotations

import pytest
import torch

import bilinear_lens as bl
from bilinear_lens.image.model import (
    BilinearClassifier,
    ClassifierConfig,
    eigenvector_pixels,
    pixel_activations,
)


def _model(**kw) -> BilinearClassifier:
    torch.manual_seed(0)
    return BilinearClassifier(ClassifierConfig(d_hidden=16, **kw)).double().eval()


def test_hook_points_at_every_step():
    m = _model(n_layers=2, residual=True)
    names = set(m.hook_dict)
    for name in ("hook_input", "hook_embed", "hook_logits", "hook_resid_0", "hook_resid_1",
                 "layers.0.hook_in", "layers.0.hook_pre", "layers.0.hook_pre_linear", "layers.0.hook_post",
                 "layers.1.hook_in", "layers.1.hook_eig"):
        assert name in names
    x = torch.rand(3, 28, 28, dtype=torch.float64)
    logits, cache = m.run_with_cache(x)
    assert torch.allclose(cache["hook_embed"], x.reshape(3, -1) @ m.W_e.T)
    assert torch.allclose(cache["layers.1.hook_in"], cache["hook_resid_0"])
    assert torch.allclose(cache["hook_logits"], logits)
    assert m.bilinear_layers() == list(m.layers)
    assert bl.BilinearClassifier is BilinearClassifier  # lazily exported by the package


def test_pixel_eigenvectors_exact_identities():
    """sum_i lambda_i ((W_e^T v_i) . x)^2 == logit_c, and pixel activations == eig.activations(W_e x)."""
    m = _model()
    x = torch.rand(7, 784, dtype=torch.float64)
    eig = bl.eigendecompose(m, 0, m.head.weight)
    with torch.no_grad():
        pix_acts = pixel_activations(m, eig.values, eig.vectors, x)
        assert torch.allclose(pix_acts, eig.activations(m.embed_pixels(x)), atol=1e-12)
        assert torch.allclose(pix_acts.sum(-1), m(x), atol=1e-10)
        # the same through a torch.linalg.eigh reference of the interaction matrix
        Wg, Wi, Wo = m.layers[0].W_gate, m.layers[0].W_in, m.layers[0].W_out
        c = 3
        Q = Wg @ torch.diag(Wo @ m.head.weight[c]) @ Wi.T
        Q = 0.5 * (Q + Q.T)
        h = m.embed_pixels(x)
        assert torch.allclose(torch.einsum("bi,ij,bj->b", h, Q, h), m(x)[:, c], atol=1e-10)
        evals = torch.linalg.eigvalsh(Q)
        assert torch.allclose(evals.sort().values, eig.values[c].sort().values, atol=1e-10)
    pix = eigenvector_pixels(m, eig.vectors)
    assert pix.shape == (10, 16, 784)
    with pytest.raises(ValueError, match="coordinates"):
        eigenvector_pixels(m, torch.zeros(5, 7, dtype=torch.float64))


def test_hook_eig_with_attach_eigenvectors():
    m = _model()
    x = torch.rand(4, 784, dtype=torch.float64)
    eig = bl.eigendecompose(m, 0, m.head.weight).truncate(5)
    with bl.attach_eigenvectors(m, 0, eig):
        _, cache = m.run_with_cache(x)
    expected = pixel_activations(m, eig.values, eig.vectors, x)
    assert torch.allclose(cache["layers.0.hook_eig"], expected.detach(), atol=1e-12)


def test_save_load_identical(tmp_path):
    m = _model(n_layers=2, residual=True, input_noise=0.3)
    m.save(tmp_path / "clf", extra={"note": "x"})
    again = BilinearClassifier.load(tmp_path / "clf").double()
    assert again.cfg == m.cfg
    x = torch.rand(5, 784, dtype=torch.float64)
    assert torch.equal(again(x), m(x))
    assert BilinearClassifier.read_metadata(tmp_path / "clf")["note"] == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    with pytest.raises(FileNotFoundError, match="not a saved BilinearClassifier"):
        BilinearClassifier.load(tmp_path / "missing")


def test_noise_only_in_training_and_biases_frozen():
    m = _model(input_noise=0.5, latent_noise=0.5)
    x = torch.rand(6, 784, dtype=torch.float64)
    assert torch.equal(m(x), m(x))  # eval: deterministic
    m.train()
    assert not torch.equal(m(x), m(x))  # train: noisy
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=0.1, weight_decay=0.5)
    m(x).square().sum().backward()
    opt.step()
    assert float(m.layers[0].b_in.abs().max()) == 0.0 and not m.layers[0].has_bias


def test_config_errors():
    with pytest.raises(ValueError, match="d-hidden must be >= 1"):
        ClassifierConfig(d_hidden=0).check()
    with pytest.raises(ValueError, match="d-hidden must be >= 1"):
        BilinearClassifier(d_hidden=0)
    with pytest.raises(ValueError, match="ClassifierConfig has no setting 'd_hiden'"):
        ClassifierConfig.from_dict({"d_hiden": 3})
    with pytest.raises(ValueError, match="28x28"):
        _model()(torch.rand(2, 30, 30, dtype=torch.float64))
