"""The image sweeps: measures against brute-force references, the weight-only adversarial masks, tiny
end-to-end sweeps in run folders (reused when finished, resumed member by member), CLI refusals."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from bilinear_lens.cli import main
from bilinear_lens.image.model import BilinearClassifier, ClassifierConfig
from bilinear_lens.image.sweeps import Recipe, SweepOptions, adversarial, run_sweep, sizes
from bilinear_lens.image.sweeps.common import best_match_cosine, effective_rank

TINY = Recipe(epochs=1, n_train=300, n_test=200)
TINY_SIZES = dict(sizes=[12, 16], reference=16, seeds=[0, 1], ks=[0, 1, 2, 5], ranks=3)


def _model(d=16, classes=10, seed=0, **kw):
    torch.manual_seed(seed)
    return BilinearClassifier(ClassifierConfig(d_hidden=d, n_classes=classes, **kw)).eval()


def test_effective_rank_formula():
    assert float(effective_rank(torch.tensor([2.0, -2.0, 2.0, 0.0, 0.0]))) == pytest.approx(3.0)
    assert float(effective_rank(torch.tensor([5.0, 0.0, 0.0]))) == pytest.approx(1.0)
    v = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    ref = [(np.abs(r).sum() ** 2) / (r ** 2).sum() for r in v.numpy().astype(np.float64)]
    np.testing.assert_allclose(effective_rank(v).numpy(), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="all zeros"):
        effective_rank(torch.zeros(3))


def test_best_match_cosine_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 20, generator=g).double(), torch.randn(3, 7, 20, generator=g).double()
    b[1, 5] = -2.5 * a[1, 2]  # an exact match up to sign and scale
    got = best_match_cosine(a, b)
    for c, r in itertools.product(range(3), range(4)):
        best = max(abs(float(a[c, r] @ b[c, j]) / float(a[c, r].norm() * b[c, j].norm())) for j in range(7))
        assert float(got[c, r]) == pytest.approx(best, abs=1e-12)
    assert float(got[1, 2]) == pytest.approx(1.0, abs=1e-12)


def _independent_masks(model, n, images, labels):
    """Masks from the weights by hand: Q_c = (W_g diag(W_out u_c) W_in^T + T)/2, numpy eigh, D^T (D D^T)^-1."""
    mlp = model.bilinear_layers()[0]
    Wg, Wi, Wo = (p.detach().double().numpy() for p in (mlp.W_gate, mlp.W_in, mlp.W_out))
    We = model.W_e.detach().double().numpy()
    rows = []
    for u in model.head.weight.detach().double().numpy():
        q = Wg @ np.diag(Wo @ u) @ Wi.T
        lam, vec = np.linalg.eigh((q + q.T) / 2)
        rows.append([vec[:, i] @ We for i in np.argsort(-lam)[:n]])
    dec = np.array(rows)  # [C, n, 784]
    D = dec.reshape(-1, dec.shape[-1])
    E = (D.T @ np.linalg.inv(D @ D.T)).T.reshape(dec.shape)
    x, y = images.double().numpy(), labels.numpy()
    for c in range(len(dec)):
        sign = np.where(dec[c] @ x[y != c].mean(0) < 0, -1.0, 1.0)
        E[c] *= sign[:, None]
    return E / E.std(-1, ddof=1, keepdims=True), D


def test_pinv_masks_match_an_independent_computation_without_a_forward_pass(monkeypatch):
    model = _model(d=24, classes=4)
    g = torch.Generator().manual_seed(3)
    images, labels = torch.rand(60, 784, generator=g), torch.randint(0, 4, (60,), generator=g)

    def forbidden(*a, **k):
        raise AssertionError("a mask must not need a forward pass")

    monkeypatch.setattr(BilinearClassifier, "forward", forbidden)
    masks = adversarial.pinv_masks(adversarial.decoders(model, 3), images, labels)
    monkeypatch.undo()
    want, D = _independent_masks(model, 3, images, labels)
    np.testing.assert_allclose(masks.double().numpy(), want, rtol=1e-4, atol=1e-4)
    gram = D @ masks.double().numpy().reshape(12, 784).T  # decoder j . mask i: diagonal (delta_ij, scaled)
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-5 * np.abs(gram).max())
    x, y = images.double().numpy(), labels.numpy()
    proj = np.array([D[j] @ x[y != j // 3].mean(0) for j in range(12)])  # decoder (c, i) on other digits
    assert (np.sign(np.diag(gram)) == np.sign(proj)).all()  # adding a mask grows |projection|


def test_pinv_mask_moves_only_its_own_eigenvector():
    model = _model(d=64, classes=10)
    dec = adversarial.decoders(model, 4)
    with pytest.raises(ValueError, match="span only"):
        adversarial.pinv_masks(adversarial.decoders(model, 7))  # 70 decoders in a 64-dim row space
    masks = adversarial.pinv_masks(dec)  # no sign images: columns of pinv(D), std-scaled
    proj = torch.einsum("cnp,kmp->cnkm", dec.double(), masks.double())  # decoder (c, n) . mask (k, m)
    scale = torch.einsum("cnp,cnp->cn", dec.double(), masks.double())
    eye = torch.zeros_like(proj)
    for c, n in itertools.product(range(10), range(4)):
        eye[c, n, c, n] = scale[c, n]
    torch.testing.assert_close(proj, eye, atol=1e-5 * float(scale.abs().min()), rtol=0)


def test_sizes_sweep_end_to_end_and_a_finished_sweep_is_reused(tmp_path):
    out = tmp_path / "sizes"
    m = run_sweep("sizes", SweepOptions.flat(out=str(out), progress=False), TINY, TINY_SIZES)
    assert (out / "index.html").is_file() and (out / "metrics.json").is_file()
    for name in ("similarity", "truncation", "eigenvectors"):
        assert (out / m["figures"][name]).is_file()
    assert len(m["members"]) == 4 and not any(r["reused"] for r in m["members"])
    assert np.array(m["heatmap_top"]).shape == (2, 2)
    assert all(0 <= v <= 1 for row in m["heatmap_top"] for v in row)
    assert all(curve["truncation"]["k"] == [0, 1, 2, 5] for curve in m["members"])
    weights = sorted(out.glob("runs/*/model/model.safetensors"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in weights}
    again = run_sweep("sizes", SweepOptions.flat(out=str(out), resume=True, progress=False), TINY, TINY_SIZES)
    assert again["reused_finished_run"] is True
    assert again["heatmap_top"] == m["heatmap_top"]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in weights} == before


def test_sizes_similarity_matches_brute_force(tmp_path):
    """vs_reference from a sweep equals the definition recomputed from the saved members."""
    out = tmp_path / "s"
    m = run_sweep("sizes", SweepOptions.flat(out=str(out), progress=False), TINY, TINY_SIZES)
    import bilinear_lens as bl
    from bilinear_lens.image.model import eigenvector_pixels

    def pictures(d, s, every=False):
        model = BilinearClassifier.load(out / f"runs/d{d}-seed{s}/model")
        eig = bl.eigendecompose(model, 0, model.head.weight)
        if every:
            return eigenvector_pixels(model, eig.vectors)
        order = eig.values.argsort(dim=1, descending=True)[:, :1]
        return eigenvector_pixels(model, eig.vectors[torch.arange(10)[:, None], order])

    vals = []
    for s, t in itertools.product([0, 1], [0, 1]):
        a, b = pictures(12, s), pictures(16, t, every=True)
        for c in range(10):
            vals.append(max(abs(float(torch.nn.functional.cosine_similarity(a[c, 0], b[c, j], dim=0)))
                            for j in range(16)))
    assert m["vs_reference"]["12"]["mean_by_rank"][0] == pytest.approx(float(np.mean(vals)), abs=1e-5)


def test_interrupted_sweep_resumes_with_its_finished_members(tmp_path, monkeypatch):
    out = tmp_path / "sizes"

    def boom(*a, **k):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(sizes, "summarise", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_sweep("sizes", SweepOptions.flat(out=str(out), progress=False), TINY, TINY_SIZES)
    monkeypatch.undo()
    assert len(list(out.glob("runs/*/model/model.safetensors"))) == 4  # kept for --resume
    m = run_sweep("sizes", SweepOptions.flat(out=str(out), resume=True, progress=False), TINY, TINY_SIZES)
    assert all(r["reused"] for r in m["members"])
    assert json.loads((out / "run.json").read_text())["finished"]


def test_regularisation_and_adversarial_sweeps_end_to_end(tmp_path):
    r = run_sweep("regularisation", SweepOptions.flat(out=str(tmp_path / "r"), progress=False), TINY,
                  dict(d_hidden=16, seeds=[0]))
    assert [s["setting"] for s in r["summary"]] == ["none", "weight decay", "input noise", "both", "latent noise"]
    model = BilinearClassifier.load(tmp_path / "r/runs/weight-decay-seed0/model")
    import bilinear_lens as bl

    er = effective_rank(bl.eigendecompose(model, 0, model.head.weight).values)
    member = next(x for x in r["members"] if x["setting"] == "weight decay")
    np.testing.assert_allclose(member["effective_rank"], er.numpy(), rtol=1e-5)
    assert model.cfg.input_noise == 0 and model.cfg.latent_noise == 0
    a = run_sweep("adversarial", SweepOptions.flat(out=str(tmp_path / "a"), progress=False), TINY,
                  dict(d_hidden=32, n_decoders=3, n_attack=2, strengths=[0.0, 0.2]))
    for m in a["models"].values():
        assert m["pinv_accuracy"][0] == pytest.approx(m["permuted_accuracy"][0])  # strength 0: same images
        assert len(m["per_mask"]["pinv_accuracy"]) == 20  # 10 digits x 2 masks
    for f in ("curves", "masks"):
        assert (tmp_path / "a" / a["figures"][f]).is_file()
    assert (tmp_path / "a/index.html").read_text().count("<img") == 2


def test_cli_refuses_study_options_with_a_sweep(tmp_path, capsys):
    rc = main(["mnist", "--sweep", "sizes", "--epochs", "3", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 1 and "--epochs does not apply to --sweep" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
