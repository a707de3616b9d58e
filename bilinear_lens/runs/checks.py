"""Input checks shared by every command: numeric options, finite numbers.

    check_int("--seq-len", v, minimum=1)              one-line RunError naming the option and range
    check_float("--lr", v, minimum=0, inclusive=False)
    require_finite(tensors, what="model.safetensors")  names the first tensor holding NaN or inf
    check_resume_overwrite(resume, overwrite)          the two run-folder flags are exclusive
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Tuple, Union

if TYPE_CHECKING:
    import torch

from bilinear_lens.runs.errors import RunError


def check_int(name: str, value: Optional[int], minimum: Optional[int] = None,
              maximum: Optional[int] = None, allow_none: bool = True) -> Optional[int]:
    """``value`` if it is an int in ``[minimum, maximum]`` (None allowed when ``allow_none``)."""
    if value is None:
        if allow_none:
            return None
        raise RunError(f"{name} is required.")
    if isinstance(value, bool) or not isinstance(value, int):
        raise RunError(f"{name} must be an integer, got {value!r}.")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise RunError(f"{name} must be {_range(minimum, maximum)}, got {value}.")
    return value


def check_float(name: str, value: Optional[float], minimum: Optional[float] = None,
                maximum: Optional[float] = None, inclusive: Union[bool, Tuple[bool, bool]] = True,
                allow_none: bool = True) -> Optional[float]:
    """``value`` if it is a finite number in the range (``inclusive``: both ends, or a pair)."""
    if value is None:
        if allow_none:
            return None
        raise RunError(f"{name} is required.")
    lo_inc, hi_inc = (inclusive, inclusive) if isinstance(inclusive, bool) else inclusive
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RunError(f"{name} must be a finite number, got {value!r}.")
    bad = (minimum is not None and (value < minimum or (value == minimum and not lo_inc))) or \
          (maximum is not None and (value > maximum or (value == maximum and not hi_inc)))
    if bad:
        raise RunError(f"{name} must be {_range(minimum, maximum, lo_inc, hi_inc)}, got {value}.")
    return float(value)


def check_resume_overwrite(resume: bool, overwrite: bool) -> None:
    """``--resume`` continues a run and ``--overwrite`` replaces it: asking for both is refused."""
    if resume and overwrite:
        raise RunError("--resume and --overwrite contradict each other; pass one of them.")


def _range(lo, hi, lo_inc: bool = True, hi_inc: bool = True) -> str:
    if lo is not None and hi is not None:
        return f"in {'[' if lo_inc else '('}{lo}, {hi}{']' if hi_inc else ')'}"
    if lo is not None:
        return f"{'>=' if lo_inc else '>'} {lo}"
    return f"{'<=' if hi_inc else '<'} {hi}"


def first_non_finite(tensors: Union[Mapping[str, "torch.Tensor"], Iterable[Tuple[str, "torch.Tensor"]]]
                     ) -> Optional[Tuple[str, int, int]]:
    """``(name, n_nan, n_inf)`` of the first floating tensor holding NaN or inf, else None."""
    import torch

    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    for name, t in items:
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            if not bool(torch.isfinite(t).all()):
                return name, int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    return None


def require_finite(tensors: Union[Mapping[str, "torch.Tensor"], Iterable[Tuple[str, "torch.Tensor"]]],
                   what: str, fix: str = "check how it was made, or use another file") -> None:
    """Raise a one-line :class:`RunError` naming the first tensor of ``what`` with NaN or inf."""
    bad = first_non_finite(tensors)
    if bad is not None:
        name, n_nan, n_inf = bad
        raise RunError(f"{what}: tensor {name} holds {n_nan} NaN and {n_inf} inf values; {fix}.")


def require_finite_loss(loss: float, step: int, checkpoint: str = "the last checkpoint") -> None:
    """Stop training with a one-line error when the loss is NaN or inf."""
    if not math.isfinite(loss):
        raise RunError(f"the training loss is {loss} at step {step}: training diverged (lower the "
                       f"learning rate, or check the data for NaN); {checkpoint} is kept.")
