"""Output folders and resumable checkpoints of ``train_lm``.

Layout of a run folder ``OUT``::

    OUT/run.json         the settings that define the run (a folder holding another run is refused)
    OUT/tokenizer/       Hugging Face tokenizer folder
    OUT/checkpoint/      model/ (Hugging Face Llama folder, bilinear_lens.save_pretrained) + state.pt
                         (optimizer, scheduler, RNG, step = data position, metrics so far)
    OUT/model/           the final model (HF folder incl. tokenizer), written when training ends
    OUT/metrics.json     validation-loss history and final numbers
    OUT/cache/           token streams (so a resumed run skips tokenisation)

Every file or folder is written atomically (temp + ``os.replace`` / ``atomic_dir``), so an
interrupted run leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch

from bilinear_lens.checkpoints import convert_bilinear_llama_weights, load_hf_model, save_pretrained
from bilinear_lens.runs import atomic_dir
from bilinear_lens.runs import RUN_FILE, prepare_run_dir, write_json  # noqa: F401 (write_json re-exported)

OWNED = (RUN_FILE, "metrics.json", "model", "checkpoint", "tokenizer", "cache")


def prepare_out_dir(out: Path, identity: Dict[str, Any], resume: bool, overwrite: bool) -> bool:
    """Check ``out`` (see :func:`bilinear_lens.runs.prepare_run_dir`); True to resume from it.

    Writes ``run.json`` for a fresh run; a resumed run needs a checkpoint or finished metrics.
    """
    if prepare_run_dir(out, identity, resume=resume, overwrite=overwrite, owned=OWNED, kind="train-lm"):
        return (Path(out) / "checkpoint" / "state.pt").is_file() or (Path(out) / "metrics.json").is_file()
    write_json(Path(out) / RUN_FILE, identity)
    return False


def save_checkpoint(out: Path, model: Any, tokenizer: Any, state: Dict[str, Any]) -> None:
    """``out/checkpoint/{model/, state.pt}``, replaced in one rename."""
    with atomic_dir(Path(out) / "checkpoint") as tmp:
        save_pretrained(model, tmp / "model", tokenizer=tokenizer)
        torch.save(state, tmp / "state.pt")


def load_weights(model: Any, folder: Path) -> None:
    """Copy the weights of a Hugging Face Llama folder into ``model`` (an unprocessed
    HookedTransformer of the same shape): exact, since only layouts change."""
    hf = load_hf_model(folder)
    state = convert_bilinear_llama_weights(hf, model.cfg)
    own = model.state_dict()
    missing = [k for k, v in own.items() if k not in state and v.dtype.is_floating_point
               and not k.endswith(("IGNORE", "mask", "rotary_sin", "rotary_cos"))]
    wanted = {k: v for k, v in state.items() if k in own}
    model.load_state_dict(wanted, strict=False)
    for k in missing:  # parameters the HF folder has no place for (biases): must be zero
        if own[k].abs().max() > 0:
            raise ValueError(f"checkpoint {folder} lacks {k}, which is non-zero in the model.")


def load_checkpoint(out: Path, model: Any) -> Optional[Dict[str, Any]]:
    """Load ``out/checkpoint`` into ``model``; return its training state (None when absent)."""
    ckpt = Path(out) / "checkpoint"
    if not (ckpt / "state.pt").is_file():
        return None
    load_weights(model, ckpt / "model")
    return torch.load(ckpt / "state.pt", weights_only=False)
