"""``build_atlas``: every output direction of one bilinear layer, decomposed once, written resumably.

Pipeline per shard of directions ``U`` ``[s, d_model]`` (module :mod:`~bilinear_lens.atlas.store`
for the layout):

1. top-``k`` eigenpairs of every ``Q(u)`` (:class:`~bilinear_lens.atlas.auto.LayerSolver`, in
   batches of ``batch`` directions), each certified by ``||Q v - lambda v|| <= tol |lambda_1|``, on
   the path ``solver`` picks from the layer's shape (``auto``: dense ``eigh`` for narrow layers,
   else Lanczos), the Lanczos path warm-started from a shared basis ``S`` (``warm`` vectors:
   principal directions of the top ``k + GUARD`` eigenvectors of a strided pilot sample of
   ``pilot`` directions, stored in the run folder, so every process and every resume uses the same
   one; each start vector is the sum of the direction's top ``k + GUARD`` Ritz vectors in
   ``span(S)``);
2. weight-only readings and the spectrum summary (:mod:`~bilinear_lens.atlas.readings`);
3. with ``data``: top contexts per eigenvector (:mod:`~bilinear_lens.atlas.contexts`).

Several processes (``torchrun`` / ``accelerate launch``: ``WORLD_SIZE > 1``) split the shards
round-robin; rank 0 owns the run folder (:func:`bilinear_lens.runs.open_run`), computes the pilot,
and writes the index and the page once every shard is on disk. Peak memory depends on ``batch``
and ``shard``, not on the number of directions.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from tqdm.auto import tqdm

from bilinear_lens.atlas import store
from bilinear_lens.atlas.contexts import top_contexts
from bilinear_lens.atlas.directions import Directions, parse_directions, token_label
from bilinear_lens.atlas.readings import FrobeniusNorm, read_shard, token_inputs
from bilinear_lens.atlas.auto import LayerSolver, choose_solver
from bilinear_lens.atlas.config import CERTIFY_TOL, AtlasConfig
from bilinear_lens.atlas.solve import GUARD
from bilinear_lens.atlas.warm import shared_subspace
from bilinear_lens.decomposition.weights import bilinear_weights
from bilinear_lens.runs import RunError, open_run

FAIL_ENV = "BILINEAR_LENS_ATLAS_KILL_AT"
"""Testing hook: ``"SHARD"`` kills the process (SIGKILL) half-way through that shard."""


def weights_digest(weights: Any) -> str:
    h = hashlib.sha256()
    for t in (weights.W_in, weights.W_gate, weights.W_out):
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class _Dist:
    """Rank/world of a ``torchrun`` / ``accelerate launch`` job (1 process without one)."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.dist = None
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
            self.dist = dist

    def barrier(self) -> None:
        if self.dist is not None:
            self.dist.barrier()

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.dist is None:
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]


def solve_shard(solver: LayerSolver, U: torch.Tensor, batch: int, seed: int) -> Dict[str, torch.Tensor]:
    """Certified top-``k`` of every direction in ``U``, in batches of ``batch``."""
    parts: Dict[str, List[torch.Tensor]] = {"values": [], "vectors": [], "residuals": [], "matvecs": [],
                                            "converged": []}
    for b0 in range(0, U.shape[0], batch):
        r = solver(U[b0 : b0 + batch], seed=seed + b0)
        for name in parts:
            parts[name].append(getattr(r, name).cpu())
    out = {name: torch.cat(v) for name, v in parts.items()}
    out["converged"] = out["converged"].to(torch.uint8)
    return out


def _pilot_subspace(weights: Any, dirs: Directions, k: int, tol: float, batch: int, pilot: int, r: int) -> torch.Tensor:
    """``S`` ``[r, d]`` from the top-``k + GUARD`` eigenvectors of a strided sample of ``pilot`` directions."""
    n = len(dirs)
    idx = torch.linspace(0, n - 1, min(pilot, n)).round().long().unique()
    solver = LayerSolver(weights, min(k + GUARD, weights.d), tol, "lanczos")
    res = solve_shard(solver, dirs.vectors[idx], batch, seed=10_007)
    return shared_subspace(res["vectors"].reshape(-1, weights.d).float(), r).to(weights.W_in.dtype)


def build_atlas(model: Any, layer: int, out: str, directions: str = "vocab", *, k: int = 8,
                data: Optional[str] = None, sae_in: Optional[str] = None, device: str = "cpu", batch: int = 256,
                shard: Optional[int] = None, tol: float = CERTIFY_TOL, top: int = 10, contexts: int = 5,
                rows: int = 256, ctx: int = 128, warm: int = 128, pilot: int = 128, ov: bool = False,
                solver: str = "auto", block: int = 1,
                tokenizer: Any = None, resume: bool = False, overwrite: bool = False, progress: bool = True,
                source: Optional[str] = None) -> Any:
    """Build (or resume, or verify and return) the atlas of ``model``'s layer ``layer`` in ``out``.

    ``directions``: ``vocab`` | ``tokens:FILE`` | ``sae:DIR`` | ``diff:A,B``; ``solver``: ``auto`` |
    ``dense`` | ``lanczos`` (:mod:`~bilinear_lens.atlas.auto`; the index records the path taken);
    ``block``: start vectors per direction on the Lanczos path (2: near-degenerate pairs are not
    missed, for 17-45% more time; :func:`~bilinear_lens.atlas.solve.certified_topk`). Returns the
    :class:`~bilinear_lens.atlas.reader.Atlas`. See the module docstring and docs/atlas.md.
    """
    from bilinear_lens.atlas.reader import Atlas

    AtlasConfig(directions=directions, k=k, data=data, rows=rows, contexts=contexts, sae_in=sae_in, device=device,
                batch=batch, shard=shard, top=top, warm=warm, solver=solver, block=block, ov=ov, tol=tol, ctx=ctx,
                pilot=pilot).check()  # one-line errors naming the flag
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    dist = _Dist(device)
    model = model.to(device).eval() if hasattr(model, "to") else model
    weights = bilinear_weights(model, layer)
    if k > weights.d:
        raise RunError(f"--k {k} exceeds the interaction matrices' size {weights.d}; use --k <= {weights.d}.")
    path = choose_solver(weights, k, solver)
    warm, block = (warm, block) if path == "lanczos" else (0, 1)  # the dense path needs no start vectors
    dirs = parse_directions(directions, model, tokenizer)
    shard = shard or batch
    n_shards = -(-len(dirs) // shard)
    identity = dict(model=source or type(model).__name__, weights=weights_digest(weights), layer=weights.layer,
                    directions=directions, n=len(dirs), k=k, tol=tol, top=top, shard=shard, batch=batch,
                    solver=path, block=block, warm=warm, pilot=pilot, ov=ov, data=str(data) if data else None,
                    rows=rows, ctx=ctx, contexts=contexts, sae_in=str(sae_in) if sae_in else None)
    run, status = None, "ok"
    if dist.rank == 0:
        try:
            run = open_run(out, kind="atlas", identity=identity, resume=resume, overwrite=overwrite,
                           owned=store.OWNED, inputs=[data, sae_in])
            status = "finished" if run.finished else "ok"
        except RunError as err:
            status = f"error:{err}"
    status = dist.share(status)
    if status.startswith("error:"):
        raise RunError(status[len("error:"):])
    root = Path(out)
    try:
        if status != "finished":
            _compute(model, weights, dirs, root, run, dist, identity, n_shards, tokenizer, data, sae_in,
                     progress, device)
        dist.barrier()
        if dist.rank == 0 and status != "finished":
            vocab = [token_label(tokenizer, t) for t in range(model.cfg.d_vocab)] if hasattr(model, "cfg") else None
            index = dict(identity, n_shards=n_shards, labels=dirs.labels, ids=dirs.ids, kind=dirs.kind,
                         d=weights.d, d_model=weights.d_model, homogeneous=weights.homogeneous,
                         hook_in=weights.hook_in, has_contexts=data is not None, has_sae_in=sae_in is not None,
                         token_paths=["direct"] + ([f"ov.0.{h}" for h in range(model.cfg.n_heads)] if ov else []))
            store.write_index(root, index, vocab)
            run.finish()
        dist.barrier()
    finally:
        if run is not None:
            run.close()
    return Atlas.load(out)


def _compute(model: Any, weights: Any, dirs: Directions, root: Path, run: Any, dist: _Dist, cfg: Dict[str, Any],
             n_shards: int, tokenizer: Any, data: Optional[str], sae_in: Optional[str], progress: bool,
             device: str) -> None:
    """Every missing shard of this rank (pilot subspace first, on rank 0)."""
    k, tol, batch, shard = cfg["k"], cfg["tol"], cfg["batch"], cfg["shard"]
    if cfg["warm"] and dist.rank == 0 and store.load_subspace(root) is None:
        store.save_subspace(root, _pilot_subspace(weights, dirs, k, tol, batch, cfg["pilot"], cfg["warm"]))
        run.checkpointed()
    dist.barrier()
    S = store.load_subspace(root) if cfg["warm"] else None
    todo = [i for i in range(n_shards) if i % dist.world == dist.rank and not store.shard_done(root, i)]
    if not todo:
        return
    solver = LayerSolver(weights, k, tol, cfg["solver"], S, cfg["block"])
    tokens = _context_rows(data, tokenizer, cfg["rows"], min(cfg["ctx"], model.cfg.n_ctx)) if data else None
    decoder = _sae_decoder(sae_in) if sae_in else None
    inputs = token_inputs(model, weights.layer, weights, ov=cfg["ov"]) if hasattr(model, "W_E") else {}
    fro = FrobeniusNorm(weights)
    kill_at = os.environ.get(FAIL_ENV)
    bar = tqdm(total=len(todo) * shard, desc=f"atlas L{weights.layer} top-{k}", unit="dir",
               disable=not progress or dist.rank != 0, dynamic_ncols=True)
    for i in todo:
        start, stop = i * shard, min((i + 1) * shard, len(dirs))
        U = dirs.vectors[start:stop]
        t = solve_shard(solver, U, batch, seed=start)
        t["directions"] = U.to(t["values"]).cpu()
        t.update(read_shard(model, weights, U.to(weights.W_in), t["vectors"].to(weights.W_in),
                            t["values"].to(weights.W_in), inputs, fro, cfg["top"], decoder))
        t = {name: v.cpu() for name, v in t.items()}
        if tokens is not None:
            t.update(top_contexts(model, weights.layer, tokens, t["values"], t["vectors"], weights.lift,
                                  top=cfg["contexts"]))
        if kill_at is not None and int(kill_at) == i:
            store.write_text(store.shard_js_path(root, i), "partial")  # a half-written shard ...
            os.kill(os.getpid(), 9)  # ... and a kill -9 before its safetensors
        store.write_shard(root, i, start, t, dirs.labels[start:stop])
        if run is not None:
            run.checkpointed()
        bar.update(stop - start)
    bar.close()


def _context_rows(data: str, tokenizer: Any, rows: int, ctx: int) -> torch.Tensor:
    from bilinear_lens.text.tokens import text_blocks

    if not Path(data).is_file():
        raise RunError(f"--data {data} does not exist; give a text file (one story per line).")
    return text_blocks(data, tokenizer, ctx, max_rows=rows)


def _sae_decoder(path: str) -> torch.Tensor:
    if not Path(path).is_dir():
        raise RunError(f"--sae-in {path} does not exist; give a SAELens SAE folder (bilinear-lens train-sae).")
    from bilinear_lens.atlas.directions import sae_lens_sae

    return sae_lens_sae("--sae-in").load_from_disk(path, device="cpu").W_dec.detach()
