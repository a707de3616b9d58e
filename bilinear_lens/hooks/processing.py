"""Which weight processing a model's hooks reflect, so SAEs are never applied to differently scaled inputs.

``blocks.L.mlp.hook_in`` is the MLP input ``x = ln2(resid)``. Without ``fold_ln`` it includes
``ln2``'s elementwise weight ``w`` (``x = w * resid / rms(resid)``); with ``fold_ln`` the weight
lives in ``W_in``/``W_gate`` instead and ``x = resid / rms(resid)`` (``[batch, pos, d_model]``,
coordinates scaled by ``1 / w``). SAELens' training runner loads models unprocessed while
``HookedSAETransformer.from_pretrained`` processes them, so an SAE trained on one and used on the
other reads wrongly scaled inputs without any error. For RMSNorm models (all that
``save_pretrained`` writes) ``fold_ln`` is the only processing that changes ``hook_in``;
``hook_pre``/``hook_pre_linear``/``hook_post``/``hook_mlp_out`` are the same either way.

:func:`processing_signature` reads the state off the model itself (HookedTransformer or
TransformerBridge): ``fold_ln`` is True when no block's ``ln2`` applies a weight (absent, or all
ones). SAEs trained by bilinear-lens record it in ``cfg.metadata.bilinear_lens_processing``;
:func:`check_processing` refuses an SAE on a processing-sensitive hook whose record differs.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

METADATA_KEY = "bilinear_lens_processing"
"""Key in an SAE's ``cfg.metadata`` (SAELens ``cfg.json``) holding :func:`processing_signature`."""

SENSITIVE_SUFFIXES = ("mlp.hook_in",)
"""Hook names (suffixes) whose values depend on ``fold_ln``."""


def _norm_weight(norm: Any) -> Optional[torch.Tensor]:
    """The elementwise weight a (HookedTransformer or bridge) norm module applies, or None."""
    for owner in (norm, getattr(norm, "original_component", None)):
        for name in ("w", "weight"):
            value = getattr(owner, name, None) if owner is not None else None
            if isinstance(value, torch.Tensor):
                return value
    return None


def processing_signature(model: Any) -> Dict[str, Any]:
    """``{"fold_ln": bool}``: True when ``hook_in`` carries no ``ln2`` weight (folded, or every weight is 1)."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise TypeError(f"{type(model).__name__} has no blocks; processing_signature needs a transformer.")
    folded = True
    for block in blocks:
        weight = _norm_weight(getattr(block, "ln2", None))
        if weight is not None and not bool(torch.all(weight.detach() == 1)):
            folded = False
    return {"fold_ln": folded}


def _fix(recorded: Dict[str, Any]) -> str:
    if recorded.get("fold_ln"):
        return ("load the model processed (bl.load_pretrained(path), or TransformerBridge."
                "boot_transformers(path) then enable_compatibility_mode())")
    return ("load the model unprocessed (bl.load_pretrained(path, processing=False), or a bridge "
            "without enable_compatibility_mode())")


def check_processing(model: Any, sae: Any, what: str = "SAE") -> None:
    """Raise ``ValueError`` when ``sae`` reads a ``fold_ln``-sensitive hook and recorded another processing.

    SAEs without a record (not trained by bilinear-lens) are accepted as they are.
    """
    metadata = getattr(getattr(sae, "cfg", None), "metadata", None)
    hook = getattr(metadata, "hook_name", None) or ""
    recorded = metadata.get(METADATA_KEY) if hasattr(metadata, "get") else None
    if not recorded or not hook.endswith(SENSITIVE_SUFFIXES):
        return
    current = processing_signature(model)
    if recorded.get("fold_ln") != current["fold_ln"]:
        state = {True: "with fold_ln (ln2's weight folded into W_in/W_gate)", False: "without fold_ln"}
        raise ValueError(
            f"the {what} on {hook} was trained on a model {state[bool(recorded.get('fold_ln'))]}, but this model "
            f"is {state[current['fold_ln']]}: its inputs would be scaled differently; {_fix(recorded)}."
        )
