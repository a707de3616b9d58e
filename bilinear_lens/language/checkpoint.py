"""Run folders and resumable checkpoints of ``train_lm`` (the contract of :mod:`bilinear_lens.runs`).

Layout of a run folder ``OUT``::

    OUT/run.json         kind "train-lm" and the settings that define the run (LMTrainConfig.identity)
    OUT/tokenizer/       Hugging Face tokenizer folder
    OUT/checkpoint/      model/ (Hugging Face Llama folder, bilinear_lens.save_pretrained) +
                         state.safetensors + state.json (optimiser, scheduler, RNG, step = data
                         position, metrics so far; bilinear_lens.runs.save_state: no Python objects)
    OUT/model/           the final model (HF folder incl. tokenizer), written when training ends
    OUT/metrics.json     validation-loss history and final numbers
    OUT/cache/           token streams as safetensors (so a resumed run skips tokenisation)

Every file or folder is written atomically (``.bl-tmp-*`` temporaries inside ``OUT``, then
``os.replace``), so an interrupted run leaves either the previous checkpoint or the new one. No Python
object in the folder is deserialised: a planted ``state.pt`` or cache ``.pt`` is never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from bilinear_lens.runs import RUN_FILE, RunError, RunFolder, load_state, save_state

OWNED = (RUN_FILE, "metrics.json", "model", "checkpoint", "tokenizer", "cache")
STATE = "state"  # checkpoint/state.safetensors + checkpoint/state.json


def save_checkpoint(run: RunFolder, model: Any, tokenizer: Any, state: Dict[str, Any]) -> None:
    """``run/checkpoint/{model/, state.*}``, replaced in one rename; counts as a checkpoint."""
    from bilinear_lens.checkpoints import save_pretrained

    with run.atomic_dir("checkpoint") as tmp:
        save_pretrained(model, tmp / "model", tokenizer=tokenizer)
        save_state(tmp / STATE, state)
    run.checkpointed()


def save_model(run: RunFolder, name: str, model: Any, tokenizer: Any = None) -> None:
    """``bilinear_lens.save_pretrained(model)`` as the entry ``name`` of ``run``, atomically (built in
    a ``.bl-tmp-*`` folder inside the run, then renamed over the old entry)."""
    from bilinear_lens.checkpoints import save_pretrained

    with run.atomic_dir(name) as tmp:
        save_pretrained(model, tmp / "model", tokenizer=tokenizer)  # a fresh path, never a user's
        for f in (tmp / "model").iterdir():
            f.rename(tmp / f.name)
        (tmp / "model").rmdir()


def load_weights(model: Any, folder: Path) -> None:
    """Copy the weights of a Hugging Face Llama folder into ``model`` (an unprocessed
    HookedTransformer of the same shape): exact, since only layouts change."""
    from bilinear_lens.checkpoints import convert_bilinear_llama_weights, load_hf_model

    try:
        hf = load_hf_model(folder)
    except (OSError, ValueError, RuntimeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise RunError(f"{folder} cannot be loaded ({type(e).__name__}: {first}); the checkpoint is "
                       "corrupt: restart the run with --overwrite.") from e
    state = convert_bilinear_llama_weights(hf, model.cfg)
    own = model.state_dict()
    missing = [k for k, v in own.items() if k not in state and v.dtype.is_floating_point
               and not k.endswith(("IGNORE", "mask", "rotary_sin", "rotary_cos"))]
    wanted = {k: v for k, v in state.items() if k in own}
    model.load_state_dict(wanted, strict=False)
    for k in missing:  # parameters the HF folder has no place for (biases): must be zero
        if own[k].abs().max() > 0:
            raise RunError(f"checkpoint {folder} lacks {k}, which is non-zero in the model.")


def load_checkpoint(run: RunFolder, model: Any) -> Optional[Dict[str, Any]]:
    """Load ``run/checkpoint`` into ``model``; return its training state (None when absent)."""
    ckpt = run.file("checkpoint")
    state = load_state(ckpt / STATE)
    if state is None:
        return None
    for key in ("optimizer", "scheduler", "rng", "train"):
        if not isinstance(state, dict) or key not in state:
            raise RunError(f"{ckpt / STATE}.json lacks {key!r}; the checkpoint is corrupt: restart the "
                           "run with --overwrite.")
    load_weights(model, ckpt / "model")
    return state
