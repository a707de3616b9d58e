"""Registering bilinear MLPs with TransformerLens (and SAELens, and the TransformerBridge).

``register()`` runs when TransformerLens is imported (at once if ``import bilinear_lens`` finds it
imported already; otherwise the moment it is, so ``import bilinear_lens`` itself loads neither torch
nor TransformerLens, :mod:`bilinear_lens._after_import`); it is idempotent and ``unregister()`` undoes it.
TransformerLens 3.9 has no plugin registry for HookedTransformer architectures, so every step
wraps a module attribute that TransformerLens resolves at call time and delegates everything
it does not own:

1. ``SUPPORTED_ACTIVATIONS["bilinear"]`` and ``["linear"]`` (identity), mutated in place: config
   validation and the activation factory hold the same dict object.
2. ``MLPFactory.create_mlp`` builds :class:`BilinearMLP` when ``gated_mlp`` and a bilinear
   ``act_fn``; ``TransformerBlock`` calls it before ``setup()``, so hooks register normally.
3. ``loading.get_official_model_name`` / ``convert_hf_model_config`` /
   ``get_pretrained_state_dict`` accept local Hugging Face folders (see
   :mod:`bilinear_lens.checkpoints.load`), which makes ``HookedTransformer.from_pretrained(dir)``,
   ``from_pretrained_no_processing``, ``HookedSAETransformer`` and SAELens' ``load_model`` work.
4. SAELens' ``add_hook_in_to_mlp`` skips :class:`BilinearMLP`, which has its own ``hook_in``.
5. The TransformerBridge's activation resolver maps ``linear``/``bilinear`` to the identity
   (stock TransformerLens silently falls back to SiLU in compatibility mode).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, List, Tuple

import torch
import transformer_lens.loading_from_pretrained as loading
from transformer_lens.factories.mlp_factory import MLPFactory
from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

from bilinear_lens._after_import import after_import, cancel_all

BILINEAR_ACT_FNS = ("bilinear", "linear")
"""= :data:`bilinear_lens.components.bilinear_mlp.BILINEAR_ACT_FNS` (a test checks they agree).
The package's own modules are imported at call time only: ``register`` may run while one of them
is being imported (the one whose import of TransformerLens triggered it)."""


def _bilinear() -> Any:
    from bilinear_lens.components import bilinear_mlp

    return bilinear_mlp

_PATCHES: List[Tuple[Any, str, Any]] = []  # (owner, attribute, original)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _patch(owner: Any, name: str, make_wrapper: Callable[[Any], Any]) -> None:
    # Classes keep the raw descriptor (a staticmethod stays a staticmethod on restore).
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    _PATCHES.append((owner, name, original))
    setattr(owner, name, make_wrapper(original))


def _create_mlp(original: Callable) -> Callable:
    @functools.wraps(original)
    def create_mlp(cfg):
        if cfg.gated_mlp and not cfg.num_experts and _bilinear().is_bilinear_act_fn(cfg.act_fn):
            return _bilinear().BilinearMLP(cfg)
        return original(cfg)

    return staticmethod(create_mlp)


def _loading_wrapper(name: str) -> Callable[[Callable], Callable]:
    """Wrap TransformerLens' ``name`` with :mod:`bilinear_lens.checkpoints.load`'s function of that name."""

    def make(original: Callable) -> Callable:
        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            from bilinear_lens.checkpoints import load as ckpt

            return getattr(ckpt, name)(original, *args, **kwargs)

        return wrapper

    return make


def _sae_lens_hook_in(original: Callable) -> Callable:
    @functools.wraps(original)
    def add_hook_in_to_mlp(mlp):
        if isinstance(mlp, _bilinear().BilinearMLP):
            return  # it already has a real hook_in
        return original(mlp)

    return add_hook_in_to_mlp


def _bridge_activation(original: Callable) -> Callable:
    @functools.wraps(original)
    def resolve_activation_fn(config):
        for attr in ("activation_function", "hidden_activation", "hidden_act", "act_fn"):
            name = getattr(config, attr, None) if config is not None else None
            if name is not None:
                return _identity if _bilinear().is_bilinear_act_fn(name) else original(config)
        return original(config)

    return resolve_activation_fn


def _patch_sae_lens() -> None:
    import sys

    hst = sys.modules.get("sae_lens.analysis.hooked_sae_transformer")
    if hst is not None and hasattr(hst, "add_hook_in_to_mlp") and _PATCHES and not any(
            owner is hst for owner, _, _ in _PATCHES):
        _patch(hst, "add_hook_in_to_mlp", _sae_lens_hook_in)


def is_registered() -> bool:
    return bool(_PATCHES)


def register() -> None:
    """Install every hook of the plugin (idempotent)."""
    if _PATCHES:
        return
    for name in BILINEAR_ACT_FNS:
        SUPPORTED_ACTIVATIONS[name] = _identity
    _patch(MLPFactory, "create_mlp", lambda orig: _create_mlp(orig.__func__))
    _patch(loading, "get_official_model_name", _loading_wrapper("get_official_model_name"))
    _patch(loading, "convert_hf_model_config", _loading_wrapper("convert_hf_model_config"))
    _patch(loading, "get_pretrained_state_dict", _loading_wrapper("get_pretrained_state_dict"))
    # SAELens: patched when its HookedSAETransformer module is imported (now, if it already is)
    after_import("sae_lens.analysis.hooked_sae_transformer", _patch_sae_lens)
    for module_name in ("gated_mlp", "joint_gate_up_mlp"):
        try:
            module = __import__(
                f"transformer_lens.model_bridge.generalized_components.{module_name}",
                fromlist=["resolve_activation_fn"],
            )
        except Exception:  # pragma: no cover - bridge layout differs between versions
            continue
        if hasattr(module, "resolve_activation_fn"):
            _patch(module, "resolve_activation_fn", _bridge_activation)


def unregister() -> None:
    """Undo :func:`register` (restores every wrapped attribute, drops the activations)."""
    cancel_all()
    while _PATCHES:
        owner, name, original = _PATCHES.pop()
        setattr(owner, name, original)
    for name in BILINEAR_ACT_FNS:
        SUPPORTED_ACTIVATIONS.pop(name, None)


register()  # importing this module registers too (TransformerLens is imported above)
