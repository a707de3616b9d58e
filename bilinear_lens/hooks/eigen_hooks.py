"""Eigenvector activations as an ordinary TransformerLens hook: ``blocks.{L}.mlp.hook_eig``.

While an :class:`~bilinear_lens.Eigendecomposition` is attached to a bilinear layer, the layer's
forward computes, for its input ``x`` (what ``hook_in`` records)::

    acts[..., j, i] = lambda_ji (v_ji . x')^2          [..., n, k]   (x' = x or [x, 1])

and passes ``acts`` through the HookPoint ``hook_eig``. Whatever a hook returns there (``edited``)
changes the MLP output by::

    delta_out = (sum_i edited[..., :, i] - sum_i acts[..., :, i]) @ pinv(D)^T     [..., d_model]

with ``D`` the ``[n, d_model]`` output directions. Because ``D pinv(D) = I`` for linearly
independent directions, ``u_j . MLP(x)`` changes by exactly the change of ``sum_i acts[..., j, i]``
and the part of the output orthogonal to ``span(D)`` is untouched; ablating, scaling or patching
single eigenvectors is therefore ordinary ``run_with_hooks`` usage. (For ``n > d_model`` or
dependent directions ``D pinv(D)`` is only a projection and edits are applied in the least-squares
sense; a warning says so on the first edit.)

Cost: ``pinv(D)`` is computed once at attach time. Without any hook on ``hook_eig`` nothing is
computed at all; when the hook returns its input unchanged (caching hooks), one extra
``[..., d_model] x [d_model, n k]`` matmul and no output matmul is done.

Truncation (:func:`bilinear_lens.truncated_mlp`) reuses the mechanism with ``replace=True``: the
MLP output along the directions is *replaced* by ``sum_i edited[..., :, i]``.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator, List, Optional, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from bilinear_lens.components.bilinear_mlp import BilinearMLP
from bilinear_lens.decomposition.eigen import Eigendecomposition
from bilinear_lens.decomposition.interaction import output_scales
from bilinear_lens.decomposition.weights import ModelWithBilinearLayers, bilinear_layer, bilinear_weights, mlp_layers

_global_hooks = torch.nn.modules.module


def _hook_is_idle(hook: Any) -> bool:
    """True when calling ``hook`` cannot observe or change its input (a bare HookPoint)."""
    return (
        isinstance(hook, HookPoint)
        and not hook._forward_hooks
        and not hook._forward_pre_hooks
        and not hook._backward_hooks
        and not getattr(_global_hooks, "_global_forward_hooks", None)
        and not getattr(_global_hooks, "_global_forward_pre_hooks", None)
        and not getattr(_global_hooks, "_global_backward_hooks", None)
    )


def pinv_transpose(directions: Float[Tensor, "n d_model"]) -> tuple:
    """``(pinv(D)^T [n, d_model], D has full row rank)``, in float64 through the ``[n, n]`` Gram matrix.

    ``pinv(D)^T = (D D^T)^+ D``; eigenvalues of ``D D^T`` below ``10 max(n, 10) eps`` of the largest count as zero.
    """
    d64 = directions.detach().to(torch.float64)
    n, d_model = d64.shape
    if n > d_model:  # more directions than dimensions: never full rank, use the SVD
        u, sv, vh = torch.linalg.svd(d64, full_matrices=False)
        keep = sv > sv.max().clamp_min(1e-300) * n * torch.finfo(torch.float64).eps
        inv = torch.where(keep, 1.0 / sv.clamp_min(1e-300), torch.zeros_like(sv))
        return (u * inv) @ vh, False
    evals, evecs = torch.linalg.eigh(d64 @ d64.T)
    keep = evals > evals.max().clamp_min(1e-300) * max(n, 10) * 10 * torch.finfo(torch.float64).eps
    inv = torch.where(keep, 1.0 / evals.clamp_min(1e-300), torch.zeros_like(evals))
    return (evecs * inv) @ evecs.T @ d64, bool(keep.all())


def _version(t: Tensor) -> Optional[int]:
    """The in-place version counter, or None for inference-mode tensors (which track none)."""
    return None if t.is_inference() else t._version


class AttachedEigen:
    """What :func:`attach_eigenvectors` puts in ``BilinearMLP.eigen`` (a plain object, no buffers).

    ``edit(x, hook)`` computes ``acts = eig.activations(x)`` ``[..., n, k]``, passes it through
    ``hook`` and returns the change of MLP output implied by the hook's edit (module docstring).
    With ``replace=True`` the MLP output along the directions is replaced by
    ``sum_i edited[..., :, i]`` instead (truncation).
    """

    def __init__(self, eig: Eigendecomposition, mlp: BilinearMLP, replace: bool = False):
        ref = mlp.W_out.detach()
        d_model = ref.shape[1]
        eig = eig.to(device=ref.device, dtype=ref.dtype)
        self.eig = eig
        self.mlp_ref = (mlp.W_in, mlp.W_gate, mlp.W_out, mlp.b_in, mlp.b_gate)  # for replace=True
        self.replace = replace
        n, k = eig.n, eig.k
        vectors = eig.vectors
        # F.linear(x, weight, bias) = x @ V_x^T + v_1: the projections v . [x, 1] without concatenating.
        self._weight: Tensor = vectors[..., :d_model].reshape(n * k, d_model).contiguous()
        self._bias = vectors[..., d_model].reshape(n * k).contiguous() if eig.d == d_model + 1 else None
        self._values: Tensor = eig.values.reshape(n * k).contiguous()
        self._shape = (n, k)
        self._pinv_T, self.full_rank = pinv_transpose(eig.directions)
        self._pinv_T = self._pinv_T.to(ref)
        self._directions_T: Tensor = eig.directions.detach().T.contiguous()  # [d_model, n]
        self._warned = False

    def activations(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... n k"]:
        """``lambda_i (v_i . x')^2`` in the model's dtype (same as ``eig.activations``)."""
        proj = F.linear(x, self._weight, self._bias)
        return proj.square().mul_(self._values).unflatten(-1, self._shape)

    def _full(self, x: Float[Tensor, "... d_model"], post: Optional[Tensor] = None) -> Float[Tensor, "... n"]:
        """``x'^T Q(u_j) x' = u_j . (MLP(x) - b_out) = (W_out u_j) . post``, recomputing ``post`` if not given."""
        W_in, W_gate, W_out, b_in, b_gate = self.mlp_ref
        if post is None:
            post = (x @ W_gate + b_gate) * (x @ W_in + b_in)
        return post @ (W_out @ self._directions_T)

    def edit(self, x: Float[Tensor, "... d_model"], hook: Any, post: Optional[Tensor] = None) -> Union[Tensor, float]:
        """Fire ``hook`` on the eigenvector activations; return the implied change of MLP output.

        ``post``: the layer's ``hook_post`` value, if the caller has it (saves recomputing it for truncation).
        """
        if not self.replace and _hook_is_idle(hook):
            return 0.0
        acts = self.activations(x)
        version = _version(acts)
        before = None if self.replace else acts.sum(-1)
        edited = hook(acts)
        if edited is None:
            edited = acts
        if edited is acts and not self.replace:
            if version is not None and _version(acts) == version:
                return 0.0  # nothing changed: no output matmul
            if version is None and torch.equal(acts.sum(-1), before):
                return 0.0  # inference tensors track no version: compare the sums instead
        if edited.shape != acts.shape:
            raise ValueError(
                f"a hook on {getattr(hook, 'name', 'hook_eig')} returned shape {tuple(edited.shape)}; "
                f"it must keep the eigenvector-activation shape {tuple(acts.shape)} [..., n, k]."
            )
        target = edited.sum(-1)
        delta = target - (self._full(x, post) if self.replace else before)
        if not self.full_rank and not self._warned:
            self._warned = True
            warnings.warn(
                "the attached output directions are linearly dependent (or more than d_model): edits of "
                "hook_eig are applied in the least-squares sense, not exactly per direction.",
                stacklevel=2,
            )
        return delta.to(self._pinv_T) @ self._pinv_T


def check_matches_layer(model: ModelWithBilinearLayers, layer: int, eig: Eigendecomposition, n_check: int = 8) -> None:
    """Raise if ``eig`` cannot have come from this layer's current (processed) weights.

    Checks widths, then the Rayleigh quotient ``v^T Q v = sum_a s_a (v . w_in_a)(v . w_gate_a) = lambda``
    of the top eigenpair of up to ``n_check`` directions (``O(n_check * d * d_mlp)``, ``Q`` never formed): this catches
    eigenvectors computed before ``fold_ln``/weight processing or for another layer.
    """
    weights = bilinear_weights(model, layer)
    if eig.layer != weights.layer:
        raise ValueError(f"this Eigendecomposition is of layer {eig.layer}; it cannot be attached to layer "
                         f"{weights.layer}. Use eigendecompose(model, {weights.layer}, ...).")
    if eig.directions.shape[-1] != weights.d_model:
        raise ValueError(f"eig.directions have width {eig.directions.shape[-1]} but layer {weights.layer} has "
                         f"d_model={weights.d_model}.")
    if eig.d != weights.d and not (eig.d == weights.d + 1 and not weights.homogeneous):
        raise ValueError(
            f"eigenvectors have d={eig.d} but layer {weights.layer} needs d={weights.d}"
            f"{' (homogeneous [x, 1]: it has branch biases)' if weights.homogeneous else ''}: the "
            "decomposition was computed from other weights; recompute it with eigendecompose(model, layer, ...)."
        )
    if eig.k == 0 or eig.d != weights.d:
        return
    m = min(n_check, eig.n)
    v = eig.vectors[:m, 0].to(weights.W_out)  # [m, d]
    lam = eig.values[:m, 0].to(weights.W_out)
    s = output_scales(weights, eig.directions[:m].detach().to(weights.W_out))  # [m, d_mlp]
    rayleigh = ((v @ weights.W_in) * (v @ weights.W_gate) * s).sum(-1)  # v^T Q v, Q never formed
    eps = torch.finfo(weights.W_out.dtype).eps
    tol = max(1e-3, 1e4 * eps) if weights.W_out.dtype != torch.float64 else 1e-6
    scale = lam.abs() + lam.abs().max() * 1e-3 + torch.finfo(weights.W_out.dtype).tiny
    bad = ((rayleigh - lam).abs() / scale > tol).nonzero().flatten()
    if len(bad):
        j = int(bad[0])
        raise ValueError(
            f"the eigendecomposition does not match layer {weights.layer}'s current weights (direction {j}: "
            f"lambda={float(lam[j]):.6g} but v^T Q v={float(rayleigh[j]):.6g}). Compute it from the same, "
            "processed model (e.g. after fold_ln) with eigendecompose(model, layer, ...), or pass check=False."
        )


@contextlib.contextmanager
def _attached(model: ModelWithBilinearLayers, layer: int, eig: Eigendecomposition, replace: bool, check: bool) -> Iterator[AttachedEigen]:
    mlp = bilinear_layer(model, layer)
    if not isinstance(eig, Eigendecomposition):
        raise TypeError(f"expected an Eigendecomposition (from bilinear_lens.eigendecompose), got {type(eig).__name__}.")
    if mlp.eigen is not None:
        raise RuntimeError(
            f"layer {layer} already has an eigendecomposition attached (attach_eigenvectors or truncated_mlp); "
            "exit that block first, or attach one Eigendecomposition holding all directions."
        )
    if check:
        check_matches_layer(model, layer, eig)
    attached = AttachedEigen(eig, mlp, replace=replace)
    mlp.eigen = attached
    try:
        yield attached
    finally:
        mlp.eigen = None


@contextlib.contextmanager
def attach_eigenvectors(model: ModelWithBilinearLayers, layer: int, eig: Eigendecomposition, check: bool = True) -> Iterator[AttachedEigen]:
    """Expose ``eig``'s eigenvector activations at ``blocks.{layer}.mlp.hook_eig`` while the block runs.

    ``cache[hook_eig]`` is ``[batch, pos, n, k]`` = ``eig.activations(cache[hook_in])``; a hook that
    edits it changes ``u_j . MLP(x)`` by the change of ``sum_i acts[..., j, i]`` (module docstring).
    ``model``: a HookedTransformer (or HookedSAETransformer) with bilinear blocks, a TransformerBridge
    (or SAETransformerBridge) of a bilinear folder, or any model with ``bilinear_layers()``. ``check``: verify ``eig`` matches the layer's current weights
    (:func:`check_matches_layer`). Several layers may be attached at once (nest the blocks);
    attaching twice to one layer is an error. On exit (also on exceptions) ``.eigen`` is ``None``
    again; no module, buffer or hook is added to the model at any time.

    Example::

        eig = bl.eigendecompose(model, 1, model.W_U[:, [42, 7]].T)
        with bl.attach_eigenvectors(model, 1, eig):
            _, cache = model.run_with_cache(tokens, names_filter="blocks.1.mlp.hook_eig")
    """
    with _attached(model, layer, eig, replace=False, check=check) as attached:
        yield attached


def attached_layers(model: ModelWithBilinearLayers) -> List[int]:
    """Indices of the bilinear layers that currently have an eigendecomposition attached."""
    return [i for i, mlp in enumerate(mlp_layers(model)) if getattr(mlp, "eigen", None) is not None]
