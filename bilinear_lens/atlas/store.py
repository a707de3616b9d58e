"""On-disk layout of an atlas: sharded safetensors, a JSON index, and the page's data files.

    DIR/run.json                      the run-folder record (kind "atlas"; bilinear_lens.runs)
    DIR/index.json                    what the atlas is (model, layer, k, shards, labels, ids, ...)
    DIR/subspace.safetensors          the shared warm-start basis S [r, d] (when used)
    DIR/shards/shard-00000.safetensors  directions [s, d_model], values [s, k], vectors [s, k, d],
                                      residuals [s, k], matvecs [s], readings and contexts
    DIR/index.html, atlas.js, atlas.css   the browser (copied from bilinear_lens/atlas/page/)
    DIR/data/index.js, vocab.js, shard-00000.js   the same data as JavaScript, loadable from file://

A shard is directions ``[i * shard, (i + 1) * shard)``. Its ``.js`` is written first and its
``.safetensors`` last, each atomically (a temporary renamed into place), so a shard counts as done
exactly when its safetensors exists; a shard interrupted half-way leaves at most temporaries and is
redone whole. Shards are computed from their own inputs only, so any split over processes and any
resume give the same bytes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from safetensors.torch import load_file
from torch import Tensor

from bilinear_lens.runs import RunError, save_tensors, write_text

INDEX = "index.json"
SHARDS = "shards"
DATA = "data"
SUBSPACE = "subspace.safetensors"
PAGE_FILES = ("index.html", "atlas.js", "atlas.css")
OWNED = (INDEX, SHARDS, DATA, SUBSPACE, *PAGE_FILES)
FORMAT = "atlas/1"
PAGE_DIR = Path(__file__).with_name("page")


def shard_path(root: Path, i: int) -> Path:
    return root / SHARDS / f"shard-{i:05d}.safetensors"


def shard_js_path(root: Path, i: int) -> Path:
    return root / DATA / f"shard-{i:05d}.js"


def shard_done(root: Path, i: int) -> bool:
    return shard_path(root, i).is_file() and shard_js_path(root, i).is_file()


def load_shard(root: Path, i: int) -> Dict[str, Tensor]:
    p = shard_path(root, i)
    if not p.is_file():
        raise RunError(f"{p} is missing: the atlas is unfinished; rerun bilinear-lens atlas with --resume.")
    return load_file(str(p))


def _js(name: str, payload: Any) -> str:
    """``window.ATLAS.<name>(<json>);``: a data file a page loads with a script tag from disk."""
    return f"window.ATLAS_DATA.{name}({json.dumps(payload, separators=(',', ':'), allow_nan=False)});\n"


def _round(x: Any, digits: int) -> Any:
    if isinstance(x, list):
        return [_round(v, digits) for v in x]
    return float(f"{x:.{digits}g}")


def _r(t: Tensor, digits: int = 5) -> Any:
    """Rounded nested lists (floats with ``digits`` significant digits) for the page files."""
    return _round(t.tolist(), digits) if t.dtype.is_floating_point else t.tolist()


def shard_page_data(i: int, start: int, tensors: Dict[str, Tensor], labels: List[str]) -> Dict[str, Any]:
    """The part of a shard the page shows, as JSON-ready lists."""
    rows = []
    for j in range(tensors["values"].shape[0]):
        row: Dict[str, Any] = {"i": start + j, "label": labels[j],
                               "values": _r(tensors["values"][j]), "residuals": _r(tensors["residuals"][j], 3),
                               "low_rank": _r(tensors["low_rank"][j]), "energy": _r(tensors["energy"][j], 4),
                               "fro": _r(tensors["fro"][j])}
        for key in sorted(tensors):
            if key.startswith(("tokens.", "output.", "sae_in.", "contexts.")) and key != "contexts.row":
                row[key] = _r(tensors[key][j], 4)
        rows.append(row)
    return {"shard": i, "start": start, "rows": rows}


def write_shard(root: Path, i: int, start: int, tensors: Dict[str, Tensor], labels: List[str]) -> None:
    """The shard's page data, then its safetensors (the 'done' marker), each atomically."""
    write_text(shard_js_path(root, i), _js("shard", shard_page_data(i, start, tensors, labels)))
    save_tensors(shard_path(root, i), {k: v.contiguous().cpu() for k, v in tensors.items()})


def write_index(root: Path, index: Dict[str, Any], vocab: Optional[List[str]]) -> None:
    """``index.json``, ``data/index.js`` (labels and the ranking summary) and ``data/vocab.js``."""
    summary = {"low_rank": [], "lambda1": [], "energy": []}
    for i in range(index["n_shards"]):
        t = load_shard(root, i)
        summary["low_rank"] += _r(t["low_rank"])
        summary["lambda1"] += _r(t["values"][:, 0])
        summary["energy"] += _r(t["energy"], 4)
    index = {**index, "format": FORMAT}
    write_text(root / INDEX, json.dumps(index, indent=1, sort_keys=True))
    page_index = {k: index[k] for k in ("model", "layer", "k", "n", "shard", "n_shards", "labels", "ids", "kind",
                                        "directions", "has_contexts", "has_sae_in", "token_paths", "tol")}
    write_text(root / DATA / "index.js", _js("index", {**page_index, **summary}))
    write_text(root / DATA / "vocab.js", _js("vocab", vocab or []))
    for name in PAGE_FILES:
        target = root / name
        tmp = target.with_name(f".bl-tmp-{name}")
        shutil.copyfile(PAGE_DIR / name, tmp)
        tmp.replace(target)


def save_subspace(root: Path, S: Tensor) -> None:
    save_tensors(root / SUBSPACE, {"S": S.contiguous().cpu()})


def load_subspace(root: Path) -> Optional[Tensor]:
    p = root / SUBSPACE
    return load_file(str(p))["S"] if p.is_file() else None


def read_index(root: Path) -> Dict[str, Any]:
    p = Path(root) / INDEX
    if not p.is_file():
        raise RunError(f"{root} has no {INDEX}: not a finished atlas (build one with bilinear-lens atlas).")
    index = json.loads(p.read_text(encoding="utf-8"))
    if index.get("format") != FORMAT:
        raise RunError(f"{p} is not an atlas of format {FORMAT}; rebuild it with bilinear-lens atlas.")
    return index


def tensors_equal(a: Dict[str, Tensor], b: Dict[str, Tensor]) -> bool:
    """Bitwise equality of two shard dicts (tests)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
