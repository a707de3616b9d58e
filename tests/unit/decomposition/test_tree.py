"""eigen_tree on a tiny stack of bilinear layers (no residual): children sum to their parent's projection."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformer_lens import HookedRootModule  # (kept in TransformerLens 4)

import bilinear_lens as bl
from bilinear_lens.components import BilinearMLP

D_MODEL, D_MLP = 6, 10


class Stack(HookedRootModule):
    """``y_l = B_l(y_{l-1})``: bilinear layers composed directly, like the deep image models."""

    def __init__(self, n_layers: int = 2, bias: bool = False, residual: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(BilinearMLP.from_dims(D_MODEL, D_MLP, torch.float64) for _ in range(n_layers))
        if bias:
            with torch.no_grad():
                for mlp in self.layers:
                    for b in (mlp.b_in, mlp.b_gate, mlp.b_out):
                        b.normal_(std=0.3)
        self.cfg = SimpleNamespace(residual=residual)
        self.setup()

    def bilinear_layers(self):
        return list(self.layers)

    def forward(self, x):
        for mlp in self.layers:
            x = mlp(x)
        return x


def test_children_sum_to_parent_projection():
    for bias in (False, True):
        model = Stack(2, bias)
        u = torch.randn(2, D_MODEL, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        d = D_MODEL + bias
        tree = bl.eigen_tree(model, u, depth=2, k=d)  # full spectra: the sums are exact
        x0 = torch.randn(5, D_MODEL, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            y0 = model.layers[0](x0)
            y1 = model.layers[1](y0)
        b0, b1 = model.layers[0].b_out, model.layers[1].b_out
        assert len(tree.roots) == 2 * d and all(node.layer == 1 for node in tree.roots)
        for j in range(2):  # roots of direction j sum to u_j . (y1 - b_out1)
            roots = [node for node in tree.roots if node.path[0] == j]
            total = sum(node.activation(y0) for node in roots)
            torch.testing.assert_close(total, (y1 - b1) @ u[j], rtol=1e-10, atol=1e-10)
        for parent in tree.roots:
            v = parent.vector[:D_MODEL]
            assert len(parent.children) == d
            assert all(torch.equal(child.direction, v) and child.layer == 0 for child in parent.children)
            total = sum(child.activation(x0) for child in parent.children)
            torch.testing.assert_close(total, (y0 - b0) @ v, rtol=1e-10, atol=1e-10)
            if not bias:  # parent's projection v . y_0 is exactly what its children explain
                torch.testing.assert_close(total, y0 @ parent.vector, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n_layers,depth,k", [(2, 1, 2), (2, 2, 2), (3, 3, 2), (3, 2, 3)])
def test_depth_and_k_prune_sizes(n_layers, depth, k):
    model = Stack(n_layers)
    n = 3
    u = torch.randn(n, D_MODEL, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    tree = bl.eigen_tree(model, u, depth=depth, k=k, method="dense")
    assert len(tree) == sum(n * k ** (t + 1) for t in range(depth))
    assert [len(tree.at_layer(n_layers - 1 - t)) for t in range(depth)] == [n * k ** (t + 1) for t in range(depth)]
    assert len({node.path for node in tree.nodes}) == len(tree)  # every path is distinct
    leaves = [node for node in tree.nodes if not node.children]
    assert len(leaves) == n * k**depth and all(node.level == depth - 1 for node in leaves)
    full = bl.eigendecompose(model, n_layers - 1, u)
    for node in tree.roots:  # top-k by |lambda| of the full spectrum
        assert node.value == pytest.approx(full.values[node.path[0], node.rank].item(), rel=1e-10, abs=1e-12)
    assert tree.vectors(n_layers - depth).shape == (n * k**depth, D_MODEL)
    assert len(tree.levels) == depth and tree.levels[-1].n == n * k ** (depth - 1)


def test_start_layer_and_errors(tiny_transformer):
    model = Stack(3)
    u = torch.randn(D_MODEL, dtype=torch.float64)
    tree = bl.eigen_tree(model, u, depth=2, k=6, layer=1)
    assert {node.layer for node in tree.nodes} == {1, 0} and len(tree.roots) == 6
    with pytest.raises(ValueError, match="depth"):
        bl.eigen_tree(model, u, depth=3, k=2, layer=1)
    with pytest.raises(ValueError, match="residual"):
        bl.eigen_tree(Stack(2, residual=True), u, depth=1, k=2)
    with pytest.raises(TypeError, match="bilinear_layers"):
        bl.eigen_tree(tiny_transformer, torch.randn(32), depth=1, k=2)
    with pytest.raises(ValueError, match="d_model=6"):
        bl.eigen_tree(model, torch.randn(7, dtype=torch.float64), depth=1, k=2)


def test_hooks_work_on_a_stack():
    model = Stack(2)
    u = torch.randn(2, D_MODEL, dtype=torch.float64)
    eig = bl.eigendecompose(model, 1, u)
    x = torch.randn(4, D_MODEL, dtype=torch.float64)
    with bl.attach_eigenvectors(model, 1, eig):
        out, cache = model.run_with_cache(x)
    torch.testing.assert_close(cache["layers.1.hook_eig"].sum(-1), (out - model.layers[1].b_out) @ u.T,
                               rtol=1e-10, atol=1e-10)
