"""The ``act_fn`` names of a bilinear GLU (pure Python: registration reads them before torch models exist)."""

from __future__ import annotations

from typing import Optional

__all__ = ["BILINEAR_ACT_FNS", "is_bilinear_act_fn"]

BILINEAR_ACT_FNS = ("bilinear", "linear")
"""``act_fn`` names that mean "no nonlinearity" (``linear`` is Hugging Face's name)."""


def is_bilinear_act_fn(act_fn: Optional[str]) -> bool:
    """True when ``act_fn`` names the identity gate of a bilinear GLU."""
    return act_fn is not None and act_fn.lower() in BILINEAR_ACT_FNS
