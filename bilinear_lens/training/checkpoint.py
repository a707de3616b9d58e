"""Training checkpoints as safetensors + JSON (no Python objects): ``OUT/checkpoint/state.*``.

One state (:func:`bilinear_lens.runs.save_state`: tensors as safetensors, the rest as JSON) holds

    model       the unwrapped model's full ``state_dict`` (every weight and buffer)
    optimizer   AdamW's ``state_dict`` (moments and step per parameter, param groups)
    rng         every process's torch RNG states, in process order
    counter     {"step", "history", "extra"} (step = data position; metrics so far; see :class:`Counter`)
    fsdp        whether the run shards the model (a checkpoint is resumed with the same setting)

Data parallel (DDP): the main process writes the unwrapped model and the optimiser (replicated, so
every process holds the same state) after gathering the RNG states; every process reads the file
back on ``--resume``. Nothing of accelerate's own (``save_state`` / ``load_state``, which deserialise
Python objects from ``custom_checkpoint_0.pkl``, ``random_states_*.pkl`` and ``optimizer.bin``) is used.

Sharded (``--fsdp``): ``torch.distributed.checkpoint`` would write each process's shards, but its
``.metadata`` file is a serialised Python object that ``dcp.load`` deserialises, so a planted file
would run code. Instead
the shards are gathered into full (unsharded) model and optimiser state dicts on the main process's
CPU (``get_state_dict(..., full_state_dict=True, cpu_offload=True)``, collective), written as above,
and on resume read by the main process only and scattered back into the shards
(``set_state_dict(..., broadcast_from_rank0=True)``). The price: the main process holds the full
training state in CPU memory while a checkpoint is written or read (about 12 bytes per parameter
for AdamW in float32). Optimiser state is keyed by parameter name in this form and by index in the
unsharded form, so a checkpoint records ``fsdp`` and refuses a resume with the other setting.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from bilinear_lens.runs import RunError, RunFolder, load_state, rng_state, set_rng_state

STATE = "checkpoint/state"

__all__ = ["Counter", "STATE", "check_fsdp_setting", "export_model", "load_checkpoint", "save_checkpoint"]


class Counter:
    """The loop's position and record: ``step`` (= data position), ``history`` (one dict per step),
    ``extra`` (numbers measured once, e.g. the validation loss before training)."""

    def __init__(self) -> None:
        self.step: int = 0
        self.history: List[Dict[str, Any]] = []
        self.extra: Dict[str, Any] = {}

    def state_dict(self) -> Dict[str, Any]:
        return {"step": self.step, "history": self.history, "extra": self.extra}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.step, self.history, self.extra = int(state["step"]), list(state["history"]), dict(state["extra"])


def _gather_rng(procs: Any) -> list:
    if procs.n == 1:
        return [rng_state()]
    from accelerate.utils import gather_object

    return list(gather_object([rng_state()]))


def _full_state(model: Any, opt: Any) -> tuple:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_checkpoint(procs: Any, run: Optional[RunFolder], raw: Any, model: Any, opt: Any, counter: Counter) -> None:
    """Write the checkpoint (collective: every process calls it; ``run`` is the main process's)."""
    rng = _gather_rng(procs)
    if procs.fsdp:
        msd, osd = _full_state(model, opt)
    else:
        msd, osd = raw.state_dict(), opt.state_dict()
    if procs.is_main:
        assert run is not None
        run.save_state(STATE, {"model": msd, "optimizer": osd, "rng": rng, "counter": counter.state_dict(),
                               "fsdp": procs.fsdp})
    procs.wait()


def check_fsdp_setting(recorded: Any, fsdp: bool, where: str) -> None:
    """Refuse to continue (or return) a run written with the other ``--fsdp`` setting."""
    if bool(recorded) != fsdp:
        raise ValueError(f"{where} was written {'with' if not fsdp else 'without'} --fsdp; resume with the same "
                         "setting")


def _check(state: Any, where: str, fsdp: bool) -> Dict[str, Any]:
    if not isinstance(state, dict) or not {"model", "optimizer", "rng", "counter", "fsdp"} <= set(state):
        raise RunError(f"{where}.json is not a bilinear-lens training checkpoint; it is corrupt: restart the run "
                       "with --overwrite.")
    check_fsdp_setting(state["fsdp"], fsdp, where)
    return state


def _load_sharded(procs: Any, run_path: Any, model: Any, opt: Any) -> Optional[Dict[str, Any]]:
    """The main process reads the state and scatters it into the shards; ``{"rng", "counter"}`` or None."""
    where = str(run_path / STATE)
    held: Dict[str, Any] = {}

    def read() -> bool:
        state = load_state(run_path / STATE)
        if state is not None:
            held["state"] = _check(state, where, True)
        return state is not None

    if not procs.on_main(read):
        return None
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    state = held.get("state")
    msd, osd = (state["model"], state["optimizer"]) if state is not None else ({}, {})
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, msd, options=options)  # (separately: an empty dict off rank 0
    set_optimizer_state_dict(model, opt, osd, options=options)  # would skip the model in set_state_dict)
    return procs.on_main(lambda: {"rng": state["rng"], "counter": state["counter"]})


def load_checkpoint(procs: Any, run_path: Any, raw: Any, model: Any, opt: Any, counter: Counter) -> bool:
    """Restore the checkpoint of ``run_path`` if there is one (collective); False when absent."""
    if procs.fsdp:
        meta = _load_sharded(procs, run_path, model, opt)
        if meta is None:
            return False
    else:
        where = str(run_path / STATE)
        meta = load_state(run_path / STATE)
        if meta is None:
            return False
        meta = _check(meta, where, False)
        try:
            raw.load_state_dict(meta["model"])
            opt.load_state_dict(meta["optimizer"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise RunError(f"{where}.safetensors does not fit this model ({type(e).__name__}); the checkpoint is "
                           "corrupt or of another run: restart with --overwrite.") from e
    counter.load_state_dict(meta["counter"])
    if len(meta["rng"]) == procs.n:
        set_rng_state(meta["rng"][procs.rank])
    return True


def export_model(run: RunFolder, name: str, model: Any, tokenizer: Any = None) -> None:
    """``bilinear_lens.save_pretrained(model)`` as the entry ``name`` of ``run`` (a Hugging Face Llama folder
    with its tokenizer), atomically: built in a ``.bl-tmp-*`` folder inside the run, renamed over the old entry."""
    from bilinear_lens.checkpoints import save_pretrained

    with run.atomic_dir(name) as tmp:
        save_pretrained(model, tmp / "model", tokenizer=tokenizer)  # a fresh path, never a user's
        for f in (tmp / "model").iterdir():
            f.rename(tmp / f.name)
        (tmp / "model").rmdir()
