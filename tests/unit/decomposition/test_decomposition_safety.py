"""Decompositions refuse non-finite weights and directions with one-line errors, decompose
bfloat16/float16 models in float32, and never surface a LinAlgError from the top-k solver."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.conftest import HOOKED, NO_HOOKED, make_llama_dir

if not HOOKED:  # the models under test are loaded with HookedTransformer.from_pretrained
    pytest.skip(NO_HOOKED, allow_module_level=True)
from transformer_lens import HookedTransformer  # noqa: E402

import bilinear_lens as bl
from bilinear_lens.image.model import BilinearClassifier


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("bf16") / "m"
    make_llama_dir(path, tokenizer=False, mlp_bias=True)
    return path


def _one_line(err) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


def _all_decompositions(model, layer, U):
    eig = bl.eigendecompose(model, layer, U)
    return {
        "dense": lambda: bl.eigendecompose(model, layer, U),
        "topk": lambda: bl.eigendecompose(model, layer, U, k=3),
        "interaction": lambda: bl.interaction_matrices(model, layer, U),
        "hosvd": lambda: bl.hosvd(model, layer, U),
        "truncated": lambda: bl.truncated_mlp(model, layer, eig, 2).__enter__(),
    }


@pytest.mark.parametrize("which", ["dense", "topk", "interaction", "hosvd", "truncated"])
@pytest.mark.parametrize("tensor", ["W_in", "W_gate", "W_out", "b_gate"])
def test_non_finite_weights_are_named(folder, which, tensor):
    model = HookedTransformer.from_pretrained(str(folder))
    U = model.W_U[:, :4].T.detach()
    calls = _all_decompositions(model, 1, U)  # the eig for truncated_mlp is taken while finite
    with torch.no_grad():
        getattr(model.blocks[1].mlp, tensor).view(-1)[5] = float("nan")
    with pytest.raises(ValueError) as info:
        calls[which]()
    assert f"tensor blocks.1.mlp.{tensor} holds 1 NaN" in _one_line(info.value)


@pytest.mark.parametrize("which", ["dense", "topk", "interaction", "hosvd"])
def test_non_finite_directions_are_refused(folder, which):
    model = HookedTransformer.from_pretrained(str(folder))
    U = model.W_U[:, :4].T.detach().clone()
    U[1, 2] = float("inf")
    call = {"dense": lambda: bl.eigendecompose(model, 0, U), "topk": lambda: bl.eigendecompose(model, 0, U, k=3),
            "interaction": lambda: bl.interaction_matrices(model, 0, U), "hosvd": lambda: bl.hosvd(model, 0, U)}
    with pytest.raises(ValueError) as info:
        call[which]()
    assert "directions hold 1 NaN or inf values" in _one_line(info.value)


def test_truncated_mlp_refuses_a_non_finite_decomposition(folder):
    model = HookedTransformer.from_pretrained(str(folder))
    eig = bl.eigendecompose(model, 0, model.W_U[:, :2].T.detach())
    eig.vectors[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="eig.vectors hold 1 NaN"):
        with bl.truncated_mlp(model, 0, eig, 2):
            pass


def test_eigen_tree_refuses_non_finite_classifier():
    torch.manual_seed(0)
    clf = BilinearClassifier(d_hidden=8, n_layers=2)
    with torch.no_grad():
        clf.layers[0].W_gate[0, 0] = float("inf")
    with pytest.raises(ValueError, match="tensor layers.0.W_gate holds 0 NaN and 1 inf"):
        bl.eigen_tree(clf, clf.W_U, depth=2, k=2)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_decomposes_in_float32(folder, dtype):
    low = HookedTransformer.from_pretrained_no_processing(str(folder), dtype=dtype)
    assert low.blocks[0].mlp.W_in.dtype == getattr(torch, dtype)
    ref = copy.deepcopy(low).to(torch.float32)  # the same (exactly representable) weights in float32
    U = low.W_U[:, :3].T.detach()  # reduced-precision directions are accepted too
    for k in (None, 3):
        a, b = bl.eigendecompose(low, 1, U, k=k), bl.eigendecompose(ref, 1, U.float(), k=k)
        assert a.values.dtype == a.vectors.dtype == torch.float32
        assert torch.equal(a.values, b.values) and torch.equal(a.vectors, b.vectors)
    Q = bl.interaction_matrices(low, 0, U)
    assert Q.dtype == torch.float32 and torch.equal(Q, bl.interaction_matrices(ref, 0, U.float()))
    h = bl.hosvd(low, 0)
    assert torch.equal(h.singular_values, bl.hosvd(ref, 0).singular_values)
    tokens = torch.randint(3, 100, (1, 8))
    eig = bl.eigendecompose(low, 1, U)
    with torch.no_grad(), bl.truncated_mlp(low, 1, eig, 2):
        assert bool(torch.isfinite(low(tokens).float()).all())


def test_reduced_precision_classifier_tree():
    torch.manual_seed(0)
    clf = BilinearClassifier(d_hidden=8, n_layers=2).to(torch.bfloat16)
    tree = bl.eigen_tree(clf, clf.W_U, depth=2, k=2)
    assert tree.levels[0].values.dtype == torch.float32
    ref = bl.eigen_tree(copy.deepcopy(clf).float(), clf.W_U.float(), depth=2, k=2)
    assert all(torch.equal(a.values, b.values) for a, b in zip(tree.levels, ref.levels))


def test_top_k_falls_back_to_dense_instead_of_lin_alg_error(folder, monkeypatch):
    import bilinear_lens.decomposition.lanczos as lanczos

    model = HookedTransformer.from_pretrained(str(folder))
    U = model.W_U[:, :3].T.detach()

    def broken(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(lanczos, "lanczos_topk", broken)
    top = bl.eigendecompose(model, 1, U, k=3, method="lanczos")
    dense = bl.eigendecompose(model, 1, U, k=3, method="dense")
    assert torch.equal(top.values, dense.values)
