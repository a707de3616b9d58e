"""What an SAE was trained on, recorded in its folder and checked by ``compare``.

    model_identity(model)  {"sha256": sha256 over (name, dtype, shape, bytes) of every state-dict
                            tensor in name order, "d_model", "n_layers"}
    tokens_digest(tokens)  sha256 of the int64 token rows [n_rows, context]

``train-sae`` stores ``model_identity`` and the hook in the SAE folder's ``run.json`` (identity
``model`` / ``hook_name``); :func:`check_trained_on` refuses an SAE whose recorded model differs from
the model ``compare`` was given, or that has no record at all. Both commands load the model the same way
(:func:`bilinear_lens.sae.cli.load_model`), so equal folders give equal digests.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Union

import torch

from bilinear_lens.runs import RunError
from bilinear_lens.runs.folder import read_run_file

KIND = "train-sae"


def model_identity(model: Any) -> Dict[str, Any]:
    """A digest of every weight of ``model`` (a HookedTransformer), with its width and depth."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return {"sha256": h.hexdigest(), "d_model": int(model.cfg.d_model), "n_layers": int(model.cfg.n_layers)}


def tokens_digest(tokens: torch.Tensor) -> str:
    """sha256 of the token rows (int64, row-major)."""
    return hashlib.sha256(tokens.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()


def check_trained_on(sae_dir: Union[str, Path], identity: Dict[str, Any], flag: str) -> None:
    """Refuse (one line) an SAE folder not trained by ``train-sae`` on this model (its hook is
    checked by :func:`bilinear_lens.sae.compare.check_sae`). A finished ``import-sae`` folder (a
    published SAE, whose model is not recorded) is accepted with a warning."""
    doc = read_run_file(Path(sae_dir))
    if doc is not None and doc.get("kind") == "import-sae" and doc.get("finished"):
        import warnings

        warnings.warn(f"{flag} {sae_dir} is a published SAE imported with `bilinear-lens import-sae`: the model "
                      "it was trained on is not recorded, so only its hook and width are checked; use it with "
                      "the published model it belongs to.", stacklevel=2)
        return
    if doc is None or doc.get("kind") != KIND or not doc.get("finished"):
        raise RunError(f"{flag} {sae_dir} holds no record of the model it was trained on (it was not "
                       "written by a finished bilinear-lens train-sae run); train it with "
                       "`bilinear-lens train-sae --model ...` on this model.")
    recorded = doc["identity"]
    if recorded.get("model", {}).get("sha256") != identity["sha256"]:
        raise RunError(f"{flag} {sae_dir} was trained on another model (weights sha256 "
                       f"{str(recorded.get('model', {}).get('sha256'))[:12]}..., this model "
                       f"{identity['sha256'][:12]}...); train an SAE on this model.")
