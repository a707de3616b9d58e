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

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from bilinear_lens.checkpoints import atomic_dir, convert_bilinear_llama_weights, load_hf_model, save_pretrained

RUN_FILE = "run.json"
OWNED = (RUN_FILE, "metrics.json", "model", "checkpoint", "tokenizer", "cache")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def prepare_out_dir(out: Path, identity: Dict[str, Any], resume: bool, overwrite: bool) -> bool:
    """Check ``out`` for a new run described by ``identity``; return True to resume from it.

    * empty or missing folder: a fresh run (``run.json`` is written);
    * the same run (equal ``run.json``): resumed with ``resume=True``, refused otherwise;
    * another run: refused unless ``overwrite=True`` (then its files are deleted);
    * a non-empty folder that is not a train-lm run: always refused.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder.")
    entries = [p.name for p in out.iterdir() if not p.name.startswith(".")] if out.is_dir() else []
    run_file = out / RUN_FILE
    if entries and not run_file.is_file():
        raise ValueError(
            f"--out {out} is not empty and holds no train-lm run ({RUN_FILE} missing; it has "
            f"{', '.join(sorted(entries)[:5])}). Choose a new or empty folder."
        )
    if run_file.is_file():
        old = json.loads(run_file.read_text())
        diff = _differences(old, identity)
        if overwrite:
            for name in OWNED:
                p = out / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        elif diff:
            raise ValueError(
                f"--out {out} holds a different train-lm run ({'; '.join(diff[:6])}). Use another "
                "folder, or --overwrite to delete that run."
            )
        elif resume:
            return (out / "checkpoint" / "state.pt").is_file() or (out / "metrics.json").is_file()
        else:
            raise ValueError(
                f"--out {out} already holds this run. Pass --resume to continue it from its last "
                "checkpoint (a finished run is returned as is), or --overwrite to start again."
            )
    write_json(run_file, identity)
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
