"""Converter checkpoints as safetensors + JSON (no Python objects): ``OUT/checkpoint/state.*``.

One state (:func:`bilinear_lens.runs.save_state`: tensors as safetensors, the rest as JSON) holds

    model       the unwrapped model's full ``state_dict`` (every weight and buffer)
    optimizer   AdamW's ``state_dict`` (moments and step per parameter, param groups)
    rng         every process's torch RNG states, in process order
    counter     {"step", "history", "extra"} (step = data position; metrics so far)
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

from typing import Any, Dict, Optional

from bilinear_lens.runs import RunError, RunFolder, load_state, rng_state, set_rng_state

STATE = "checkpoint/state"


def _gather_rng(acc: Any) -> list:
    if acc.num_processes == 1:
        return [rng_state()]
    from accelerate.utils import gather_object

    return list(gather_object([rng_state()]))


def _full_state(model: Any, opt: Any) -> tuple:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_checkpoint(acc: Any, run: Optional[RunFolder], raw: Any, model: Any, opt: Any, counter: Any,
                    fsdp: bool) -> None:
    """Write the checkpoint (collective: every process calls it; ``run`` is the main process's)."""
    rng = _gather_rng(acc)
    if fsdp:
        msd, osd = _full_state(model, opt)
    else:
        msd, osd = raw.state_dict(), opt.state_dict()
    if acc.is_main_process:
        assert run is not None
        run.save_state(STATE, {"model": msd, "optimizer": osd, "rng": rng, "counter": counter.state_dict(),
                               "fsdp": fsdp})
    acc.wait_for_everyone()


def _check(state: Any, where: str, fsdp: bool) -> Dict[str, Any]:
    if not isinstance(state, dict) or not {"model", "optimizer", "rng", "counter", "fsdp"} <= set(state):
        raise RunError(f"{where}.json is not a converter checkpoint; it is corrupt: restart the run with "
                       "--overwrite.")
    if bool(state["fsdp"]) != fsdp:
        raise ValueError(f"{where} was written {'with' if not fsdp else 'without'} --fsdp; resume with "
                         "the same setting")
    return state


def load_checkpoint(acc: Any, run_path: Any, raw: Any, model: Any, opt: Any, counter: Any,
                    fsdp: bool) -> bool:
    """Restore the checkpoint of ``run_path`` if there is one (collective); False when absent."""
    from bilinear_lens.convert.distributed import on_main

    where = str(run_path / STATE)
    if fsdp:  # the main process reads, the shards are scattered from it
        held: Dict[str, Any] = {}

        def read() -> bool:
            state = load_state(run_path / STATE)
            if state is not None:
                held["state"] = _check(state, where, fsdp)
            return state is not None

        if not on_main(acc, read):
            return False
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        state = held.get("state")
        msd, osd = (state["model"], state["optimizer"]) if state is not None else ({}, {})
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(model, msd, options=options)  # (separately: an empty dict off rank 0
        set_optimizer_state_dict(model, opt, osd, options=options)  # would skip the model in set_state_dict)
        meta = on_main(acc, lambda: {"rng": state["rng"], "counter": state["counter"]})
    else:
        state = load_state(run_path / STATE)
        if state is None:
            return False
        state = _check(state, where, fsdp)
        try:
            raw.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise RunError(f"{where}.safetensors does not fit this model ({type(e).__name__}); the checkpoint "
                           "is corrupt or of another run: restart with --overwrite.") from e
        meta = state
    counter.load_state_dict(meta["counter"])
    if len(meta["rng"]) == acc.num_processes:
        set_rng_state(meta["rng"][acc.process_index])
    return True


def check_finite_model(model: Any, name: str) -> None:
    """Refuse a model with NaN or inf weights before any training (names the tensor)."""
    from bilinear_lens.runs import require_finite

    require_finite(model.named_parameters(), what=f"--model {name}",
                   fix="the model is corrupt: convert a model with finite weights")
