"""Bilinear layers with a trained-like (decaying) spectrum, for eigensolver tests and benchmarks.

Random Gaussian weights give interaction matrices whose spectrum is a flat semicircle; trained
layers instead have a few dominant eigenvalues of both signs and a long decaying tail (e.g. ~20
positive + ~20 negative non-negligible eigenvalues of 512 for MNIST). This module builds weights
with that shape:

    W_in, W_gate = U diag(sigma) R^T   (independent random orthonormal U [d, r], R [d_mlp, r])
    sigma_i      = exp(-rate * i / r) + floor,   r = min(d_model, d_mlp)
    W_out[a]     = (1 + a)^(-alpha) g_a / sqrt(d_model),   g_a ~ N(0, I)   (heavy-tailed neuron norms)

so ``s = W_out u`` concentrates on few neurons and ``Q(u) = sum_a s_a sym(w_a v_a^T)`` has a
decaying spectrum of both signs (with the defaults, at d_model 512: ``|lambda_16| ~ 0.3 |lambda_1|``,
``|lambda_128| ~ 0.06 |lambda_1|``). ``bias=True`` adds non-zero branch biases (homogeneous
coordinates) and an output bias.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn

from bilinear_lens.components.bilinear_mlp import BilinearMLP


def _orthonormal(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """``[rows, cols]`` with orthonormal columns (QR of a Gaussian matrix, signs fixed), float64."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def trained_like_layer(
    d_model: int,
    d_mlp: int,
    *,
    rate: float = 8.0,
    floor: float = 0.02,
    alpha: float = 0.7,
    bias: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> BilinearMLP:
    """A stand-alone :class:`BilinearMLP` whose interaction matrices have a decaying spectrum.

    See the module docstring for the construction; ``seed`` makes it reproducible.
    """
    g = torch.Generator().manual_seed(seed)
    r = min(d_model, d_mlp)
    sigma = torch.exp(-rate * torch.arange(r, dtype=torch.float64) / r) + floor

    def factor() -> torch.Tensor:
        return (_orthonormal(d_model, r, g) * sigma) @ _orthonormal(d_mlp, r, g).T

    W_in, W_gate = factor(), factor()
    norms = (1.0 + torch.arange(d_mlp, dtype=torch.float64)) ** -alpha
    W_out = norms[:, None] * torch.randn(d_mlp, d_model, generator=g, dtype=torch.float64) / d_model**0.5
    mlp = BilinearMLP.from_dims(d_model, d_mlp, dtype=dtype)
    with torch.no_grad():
        mlp.W_in.copy_(W_in)
        mlp.W_gate.copy_(W_gate)
        mlp.W_out.copy_(W_out)
        if bias:
            scale = sigma[0].item() / d_model**0.5
            mlp.b_in.copy_(scale * torch.randn(d_mlp, generator=g, dtype=torch.float64))
            mlp.b_gate.copy_(scale * torch.randn(d_mlp, generator=g, dtype=torch.float64))
            mlp.b_out.copy_(0.1 * torch.randn(d_model, generator=g, dtype=torch.float64))
    return mlp


class BilinearStack(nn.Module):
    """Stand-alone bilinear layers exposing ``bilinear_layers()`` (the decomposition adapter)."""

    def __init__(self, layers: List[BilinearMLP]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def bilinear_layers(self) -> List[BilinearMLP]:
        return list(self.layers)
