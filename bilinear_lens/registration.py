"""Registering bilinear MLPs with TransformerLens (and SAELens, and the TransformerBridge).

``register()`` runs on ``import bilinear_lens``; it is idempotent and ``unregister()`` undoes it.
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

from bilinear_lens.components.bilinear_mlp import BILINEAR_ACT_FNS, BilinearMLP, is_bilinear_act_fn

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
        if cfg.gated_mlp and not cfg.num_experts and is_bilinear_act_fn(cfg.act_fn):
            return BilinearMLP(cfg)
        return original(cfg)

    return staticmethod(create_mlp)


def _loading_wrapper(ours: Callable) -> Callable[[Callable], Callable]:
    def make(original: Callable) -> Callable:
        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            return ours(original, *args, **kwargs)

        return wrapper

    return make


def _sae_lens_hook_in(original: Callable) -> Callable:
    @functools.wraps(original)
    def add_hook_in_to_mlp(mlp):
        if isinstance(mlp, BilinearMLP):
            return  # it already has a real hook_in
        return original(mlp)

    return add_hook_in_to_mlp


def _bridge_activation(original: Callable) -> Callable:
    @functools.wraps(original)
    def resolve_activation_fn(config):
        for attr in ("activation_function", "hidden_activation", "hidden_act", "act_fn"):
            name = getattr(config, attr, None) if config is not None else None
            if name is not None:
                return _identity if is_bilinear_act_fn(name) else original(config)
        return original(config)

    return resolve_activation_fn


def is_registered() -> bool:
    return bool(_PATCHES)


def register() -> None:
    """Install every hook of the plugin (idempotent)."""
    if _PATCHES:
        return
    from bilinear_lens.checkpoints import load as ckpt

    for name in BILINEAR_ACT_FNS:
        SUPPORTED_ACTIVATIONS[name] = _identity
    _patch(MLPFactory, "create_mlp", lambda orig: _create_mlp(orig.__func__))
    _patch(loading, "get_official_model_name", _loading_wrapper(ckpt.get_official_model_name))
    _patch(loading, "convert_hf_model_config", _loading_wrapper(ckpt.convert_hf_model_config))
    _patch(loading, "get_pretrained_state_dict", _loading_wrapper(ckpt.get_pretrained_state_dict))
    try:
        import sae_lens.analysis.hooked_sae_transformer as hst
    except Exception:  # pragma: no cover - sae-lens is a dependency, but stay importable without it
        hst = None
    if hst is not None:
        _patch(hst, "add_hook_in_to_mlp", _sae_lens_hook_in)
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
    while _PATCHES:
        owner, name, original = _PATCHES.pop()
        setattr(owner, name, original)
    for name in BILINEAR_ACT_FNS:
        SUPPORTED_ACTIVATIONS.pop(name, None)

