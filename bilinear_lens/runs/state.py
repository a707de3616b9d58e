"""Training state as safetensors + JSON (no Python objects): nested dicts of tensors and plain values.

A state (an optimiser's ``state_dict()``, RNG states, counters, histories) is split into

    tensors   {"t0": Tensor, "t1": Tensor, ...}   -> <name>.safetensors
    skeleton  the same structure with each tensor replaced by {"__tensor__": "t0"}  -> <name>.json

Tuples are recorded as ``{"__tuple__": [...]}`` and dict keys keep their type (int keys, as in an
optimiser's ``state``, as ``{"__int_keys__": {...}}``), so :func:`load_state` returns a structure equal to the
one saved: floats round-trip exactly through JSON (``repr``), tensors bit for bit. No Python
object is deserialised, so a file planted in a run folder cannot run code; a file that does not parse gives a
:class:`~bilinear_lens.runs.errors.RunError` naming it.

    save_state(folder / "state", obj)      writes state.safetensors, then state.json (atomically)
    obj = load_state(folder / "state")     None when absent
    rng_state() / set_rng_state(s)         torch's global CPU (and CUDA) generators
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

if TYPE_CHECKING:
    import torch

from bilinear_lens.runs.atomic import save_tensors, write_text
from bilinear_lens.runs.errors import RunError

PathLike = Union[str, Path]


def flatten_state(obj: Any) -> Tuple[Any, Dict[str, "torch.Tensor"]]:
    """``(skeleton, tensors)`` for a nested structure of dicts, lists, tuples, tensors and JSON values."""
    import torch

    tensors: Dict[str, torch.Tensor] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = x
            return {"__tensor__": key}
        if isinstance(x, torch.Generator):
            raise TypeError("pass generator.get_state(), not the generator itself")
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {k: walk(v) for k, v in x.items()}
            if all(isinstance(k, int) and not isinstance(k, bool) for k in x):
                return {"__int_keys__": {str(k): walk(v) for k, v in x.items()}}
            raise TypeError(f"state dict keys must be all str or all int, got {sorted(map(repr, x))[:4]}")
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v) for v in x]}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:  # numpy scalar
            return x.item()
        raise TypeError(f"cannot save a {type(x).__name__} in a training state (no Python objects)")

    return walk(obj), tensors


def unflatten_state(skeleton: Any, tensors: Dict[str, "torch.Tensor"]) -> Any:
    """The inverse of :func:`flatten_state`."""

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            if set(x) == {"__tensor__"}:
                return tensors[x["__tensor__"]]
            if set(x) == {"__tuple__"}:
                return tuple(walk(v) for v in x["__tuple__"])
            if set(x) == {"__int_keys__"}:
                return {int(k): walk(v) for k, v in x["__int_keys__"].items()}
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(skeleton)


def _paths(prefix: PathLike) -> Tuple[Path, Path]:
    prefix = Path(prefix)
    return prefix.with_name(prefix.name + ".safetensors"), prefix.with_name(prefix.name + ".json")


def save_state(prefix: PathLike, obj: Any) -> Tuple[Path, Path]:
    """Write ``obj`` as ``<prefix>.safetensors`` + ``<prefix>.json`` (each atomically; JSON last,
    so a state whose JSON exists has its tensors)."""
    skeleton, tensors = flatten_state(obj)
    st, js = _paths(prefix)
    save_tensors(st, tensors)
    write_text(js, json.dumps({"format": "bilinear-lens-state/1", "state": skeleton}, allow_nan=True))
    return st, js


def load_state(prefix: PathLike) -> Optional[Any]:
    """Read a state written by :func:`save_state` (``None`` when its JSON is absent)."""
    from safetensors.torch import load_file

    st, js = _paths(prefix)
    if not js.is_file():
        return None
    try:
        doc = json.loads(js.read_text(encoding="utf-8"))
        skeleton = doc["state"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise RunError(f"{js} is not a bilinear-lens training state ({type(e).__name__}); it is corrupt: "
                       "restart the run with --overwrite.") from e
    try:
        tensors = load_file(str(st))
    except Exception as e:  # missing, truncated or not safetensors
        raise RunError(f"{st} cannot be read ({type(e).__name__}: {str(e)[:120]}); the checkpoint is "
                       "corrupt: restart the run with --overwrite.") from e
    try:
        return unflatten_state(skeleton, tensors)
    except KeyError as e:
        raise RunError(f"{st} lacks tensor {e}; the checkpoint is corrupt: restart the run with "
                       "--overwrite.") from e


def rng_state() -> Dict[str, Any]:
    """torch's global RNG states (CPU, and every CUDA device when initialised)."""
    import torch

    state: Dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    import torch

    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
