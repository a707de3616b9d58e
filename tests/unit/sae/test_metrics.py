"""The compare metrics on a random tiny bilinear model with hand-built SAEs (no training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bilinear_lens.sae.compare import (check_sae, feature_interactions, interaction_summary,
                                       lowrank_correlation, match_eigenvectors)

LAYER = 1


def make_sae(d_in: int, d_sae: int, hook: str, seed: int = 0):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    cfg = StandardSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=False,
                            metadata=SAEMetadata(hook_name=hook, context_size=16, prepend_bos=False))
    sae = StandardSAE(cfg)
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(d_sae, d_in))
        sae.W_enc.copy_(torch.randn(d_in, d_sae))
    return sae


def reference_Q(model, u: torch.Tensor) -> torch.Tensor:
    """Q(u) = 1/2 (W_in diag(W_out u) W_gate^T + transpose), straight from the parameters."""
    mlp = model.blocks[LAYER].mlp
    W_in, W_gate, W_out = (w.detach().double() for w in (mlp.W_in, mlp.W_gate, mlp.W_out))
    half = W_in @ torch.diag(W_out @ u.double()) @ W_gate.T
    return 0.5 * (half + half.T)


def mlp_inputs(model, n: int = 400, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    tokens = torch.randint(0, model.cfg.d_vocab, (n // 20, 20))
    _, cache = model.run_with_cache(tokens, names_filter=[f"blocks.{LAYER}.mlp.hook_in"])
    return cache[f"blocks.{LAYER}.mlp.hook_in"].reshape(-1, model.cfg.d_model)


def test_feature_interaction_matrix_is_D_Q_Dt(tiny_bilinear):
    sae_in = make_sae(32, 48, f"blocks.{LAYER}.mlp.hook_in")
    u = torch.randn(3, 32)
    got = feature_interactions(tiny_bilinear, LAYER, sae_in, u)
    D = sae_in.W_dec.detach().double()
    for j in range(3):
        want = D @ reference_Q(tiny_bilinear, u[j]) @ D.T
        torch.testing.assert_close(got[j].double(), want, rtol=1e-4, atol=1e-5)
    # meaning: for x = z D (in the SAE's span), u . (MLP(x) - b_out) = z^T Q_lat z
    mlp = tiny_bilinear.blocks[LAYER].mlp
    z = torch.rand(5, 48)
    x = z @ sae_in.W_dec.detach()
    lhs = (mlp(x) - mlp.b_out) @ u[0]
    rhs = torch.einsum("nb,bc,nc->n", z, got[0], z)
    torch.testing.assert_close(lhs, rhs, rtol=1e-3, atol=1e-3)


def test_lowrank_exact_at_full_rank_and_matches_eigh_reference(tiny_bilinear):
    mlp = tiny_bilinear.blocks[LAYER].mlp
    x = mlp_inputs(tiny_bilinear)
    u = torch.randn(4, 32)
    with torch.no_grad():
        y = (mlp(x) - mlp.b_out) @ u.T  # the exact projection as "feature activation"
    res = lowrank_correlation(tiny_bilinear, LAYER, u, x, y, ks=(1, 2, 32), min_active=10)
    assert res.features.tolist() == [a for a in range(4) if (y[:, a] > 0).sum() > 10]
    torch.testing.assert_close(res.corr[:, -1], torch.ones(len(res.features)), atol=1e-4, rtol=0)
    assert (res.corr[:, 0] < 0.999).all()  # one eigenvector is not the whole story
    # k = 1 against an independent reference: eigh of Q, largest |lambda|, Pearson on active tokens
    a = int(res.features[0])
    lam, vec = torch.linalg.eigh(reference_Q(tiny_bilinear, u[a]))
    i = lam.abs().argmax()
    yhat = (lam[i] * (x.double() @ vec[:, i]) ** 2).numpy()
    act = (y[:, a] > 0).numpy()
    want = np.corrcoef(yhat[act], y[act, a].double().numpy())[0, 1]
    assert abs(float(res.corr[0, 0]) - want) < 1e-4
    summary = res.summary()
    assert summary["k"] == [1, 2, 32] and abs(summary["mean"][-1] - 1) < 1e-4
    assert summary["frac_above_0.75"][-1] == 1.0


def test_lowrank_skips_rarely_active_features(tiny_bilinear):
    x = mlp_inputs(tiny_bilinear)
    y = torch.zeros(len(x), 3)
    y[:10, 0] = torch.rand(10) + 0.1   # 10 activations: not more than 10 -> skipped
    y[:50, 1] = torch.rand(50) + 0.1
    res = lowrank_correlation(tiny_bilinear, LAYER, torch.randn(3, 32), x, y, ks=(1, 4), min_active=10)
    assert res.features.tolist() == [1]
    assert res.n_active.tolist() == [50]


def test_interaction_summary_counts_cross_twice():
    Q = torch.tensor([[0.1, 0.3, 0.0], [0.3, -0.05, 0.0], [0.0, 0.0, 0.5]])
    s = interaction_summary(Q, top=3)
    assert [(t["b"], t["c"], t["kind"]) for t in s["top"]] == [(0, 1, "cross"), (2, 2, "self"), (0, 0, "self")]
    assert s["top"][0]["value"] == pytest.approx(0.6)
    assert s["self_abs_mean"] == pytest.approx((0.1 + 0.05 + 0.5) / 3)


def test_match_eigenvectors_finds_decoder_rows():
    torch.manual_seed(0)
    D = torch.randn(40, 16)
    pick = torch.tensor([3, 17, 25])
    V = -2.0 * D[pick]  # sign and scale do not matter
    m = match_eigenvectors(V, D)
    assert m["eigen"]["argmax"].tolist() == pick.tolist()
    torch.testing.assert_close(m["eigen"]["max_cos"], torch.ones(3))
    assert m["eigen"]["hungarian_mean"] == pytest.approx(1.0)
    assert m["random"]["mean_max_cos"] < 0.95


@pytest.mark.parametrize("d_in,hook,side,message", [
    (16, "blocks.1.mlp.hook_in", "in", "d_in=16"),
    (32, "blocks.7.mlp.hook_in", "in", "which this model does not have"),
    (32, "blocks.1.hook_mlp_out", "in", "needs 'blocks.1.mlp.hook_in'"),
    (32, "blocks.0.hook_mlp_out", "out", "needs 'blocks.1.hook_mlp_out'"),
    (32, None, "out", "no metadata.hook_name"),
])
def test_bad_sae_rejected(tiny_bilinear, d_in, hook, side, message):
    sae = make_sae(d_in, 64, hook)
    with pytest.raises(ValueError, match=message) as err:
        check_sae(tiny_bilinear, LAYER, sae, side)
    assert "train-sae" in str(err.value)


def test_good_saes_accepted(tiny_bilinear):
    check_sae(tiny_bilinear, LAYER, make_sae(32, 64, "blocks.1.mlp.hook_in"), "in")
    check_sae(tiny_bilinear, LAYER, make_sae(32, 64, "blocks.1.hook_mlp_out"), "out")


def test_interaction_stats_batched_matches_summary():
    from bilinear_lens.sae.compare import interaction_stats

    torch.manual_seed(0)
    A = torch.randn(3, 7, 7)
    Q = A + A.transpose(1, 2)
    stats = interaction_stats(Q, top=5)
    for j in range(3):
        iu = torch.triu_indices(7, 7, offset=1)
        cross = 2 * Q[j][iu[0], iu[1]]
        assert float(stats["cross_abs_mean"][j]) == pytest.approx(float(cross.abs().mean()), rel=1e-5)
        assert float(stats["cross_std"][j]) == pytest.approx(float(cross.std(unbiased=False)), rel=1e-4)
        s = interaction_summary(Q[j], top=5)
        assert s["self_share_of_top"] == pytest.approx(sum(t["kind"] == "self" for t in s["top"]) / 5)
