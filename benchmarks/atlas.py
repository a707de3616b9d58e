"""Benchmark: atlas solver paths vs the paper's reference, per direction, measured in one run.

Layers (``--layers``, default all):

* ``syn512``: d_model 512 x d_mlp 2048 (ts-medium's shape), trained-like random weights as in the
  atlas speed notes: ``W_in, W_gate, W_out`` with singular values ``3 / (1 + i/4)`` and random
  orthonormal factors; the whole 4,096-token vocabulary of a random unembedding with the same
  spectrum (centred columns);
* ``syn2048``: TinyLlama width (2048 x 5632), same construction, a sample of ``--sample`` random
  unembedding directions;
* ``trained``: the bilinear TinyStories model trained here (``--trained DIR``: ``python
  demos/atlas_tinystories.py --out runs/atlas_demo`` or ``bilinear-lens train-lm``; d_model 128,
  d_mlp 512), layer 1, its whole vocabulary through the final norm as the atlas defines it;
* ``stories260k``: stories260k converted to a bilinear model (``--stories260k DIR``: ``bilinear-lens
  convert --model stories260k --data train.txt --tokens 200000 --distill 0.9 --lr 3e-3 --batch-size 32
  --threads 1 --out runs/convert_small``; d_model 64, d_mlp 172), layer 2, its whole 512-token vocabulary.

Methods, top-k for k in ``--ks``: **reference** (form each ``Q`` with one einsum, dense ``eigh``) on
the first ``--ref`` directions; **lanczos today** (``eigendecompose(k)``'s solver,
``lanczos_topk_info`` defaults); the atlas's paths on all directions (:class:`LayerSolver`, batches of
``--batch``): **dense** (formed ``Q``, ``eigh``; skipped above d = 256, where it costs about the reference
cost), **lanczos cold**, **lanczos warm** (shared basis of ``--warm``, at most ``d / 2``, from the top
``k + 4`` eigenvectors of a strided pilot of 128 directions); **auto** is the path ``choose_solver`` takes.
Set-up time (pilot, the warm start's or the dense path's tensor) is amortised over the whole
vocabulary: 4,096 / 32,000 / the model's. Every returned pair's residual ``||Q v - lambda v|| /
|lambda_1|`` is re-checked with explicit matvecs (``interaction_matvec``) on ``--check`` directions,
and the values are compared with the reference (``missed``: directions with a top-k value off by
more than 1e-3 relative); on the trained layers (d <= 128) with float64 ``eigvalsh`` of every
direction. Clock: process CPU time, one thread (wall time alongside). Results: ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from bilinear_lens.atlas.auto import LayerSolver, choose_solver
from bilinear_lens.atlas.solve import GUARD
from bilinear_lens.atlas.warm import shared_subspace
from bilinear_lens.decomposition.eigen import sort_by_magnitude
from bilinear_lens.decomposition.interaction import interaction_from_weights, interaction_matvec, output_scales
from bilinear_lens.decomposition.lanczos import lanczos_topk_info
from bilinear_lens.decomposition.weights import BilinearWeights

PATHS = ("dense", "cold", "warm")


class Clock:
    def __enter__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu, self.wall = time.process_time() - self.cpu, time.perf_counter() - self.wall


def _orth(a: int, b: int, g: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(a, b, generator=g, dtype=torch.float64)).Q


def synthetic(d: int, dm: int, vocab: int, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    r = min(d, dm)
    sig = 3 / (1 + torch.arange(r, dtype=torch.float64) / 4)
    W_in = (_orth(d, r, g) * sig) @ _orth(dm, r, g).T
    W_gate = (_orth(d, r, g) * sig) @ _orth(dm, r, g).T
    W_out = (_orth(dm, r, g) * sig) @ _orth(d, r, g).T
    w = BilinearWeights(W_in.float(), W_gate.float(), W_out.float(), torch.zeros(d), False, 0, None)
    rv = min(d, vocab)
    W_U = (_orth(d, rv, g) * (3 / (1 + torch.arange(rv, dtype=torch.float64) / 4))) @ _orth(vocab, rv, g).T
    U = (W_U - W_U.mean(1, keepdim=True)).T.float()
    return w, U


def trained(folder: str, layer: int) -> tuple:
    from bilinear_lens.atlas.directions import vocab_directions
    from bilinear_lens.decomposition.weights import bilinear_weights
    from bilinear_lens.loading import load_model_and_tokenizer as load_model

    if not Path(folder).is_dir():
        raise SystemExit(f"{folder} does not exist; train it first (see this script's docstring) or skip the layer.")
    model, tok = load_model(folder)
    return bilinear_weights(model, layer), vocab_directions(model, tok).vectors.float()


def reference(w: BilinearWeights, U: torch.Tensor, k: int) -> tuple:
    vals = []
    with Clock() as c:
        for u in U.split(4):
            e, v = sort_by_magnitude(*torch.linalg.eigh(interaction_from_weights(w, u)))
            vals.append(e[:, :k])
    return torch.cat(vals), c


def exact_values(w: BilinearWeights, U: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k by |lambda| from float64 ``eigvalsh`` of every direction (narrow layers only)."""
    w64 = BilinearWeights(w.W_in.double(), w.W_gate.double(), w.W_out.double(), w.b_out, False, 0, None)
    out = []
    for u in U.split(256):
        e = torch.linalg.eigvalsh(interaction_from_weights(w64, u.double()))
        out.append(e.gather(-1, e.abs().argsort(-1, descending=True))[:, :k])
    return torch.cat(out)


def atlas_solve(w: BilinearWeights, U: torch.Tensor, k: int, batch: int, path: str, warm: int) -> tuple:
    """One path on every direction; returns the stacked results, the solve clock, set-up CPU seconds."""
    with Clock() as c_setup:
        S = None
        if path == "warm":
            idx = torch.linspace(0, U.shape[0] - 1, min(128, U.shape[0])).round().long().unique()
            pilot = LayerSolver(w, min(k + GUARD, w.d), solver="lanczos")
            vecs = torch.cat([pilot(U[idx[i:i + batch]], seed=10_007 + i).vectors for i in range(0, len(idx), batch)])
            S = shared_subspace(vecs.reshape(-1, w.d), min(warm, w.d // 2))  # at most half the space
        solver = LayerSolver(w, k, solver="dense" if path == "dense" else "lanczos", S=S)
    parts = []
    with Clock() as c:
        for b0 in range(0, U.shape[0], batch):
            parts.append(solver(U[b0:b0 + batch], seed=b0))
    cat = {name: torch.cat([getattr(p, name) for p in parts]) for name in ("values", "vectors", "residuals", "matvecs")}
    return cat, c, c_setup.cpu


def explicit_residuals(w: BilinearWeights, U: torch.Tensor, vals: torch.Tensor, vecs: torch.Tensor) -> float:
    s = output_scales(w, U)
    Qv = interaction_matvec(w, s, vecs.transpose(1, 2)).transpose(1, 2)
    r = (Qv - vals.unsqueeze(-1) * vecs).norm(dim=-1) / vals[:, :1].abs()
    return float(r.max())


def _missed(vals: torch.Tensor, truth: torch.Tensor) -> tuple:
    rel = (vals.double() - truth.double()).abs() / truth.double().abs().clamp_min(1e-300)
    return float(rel.max()), int((rel.amax(-1) > 1e-3).sum())


def bench(name: str, w: BilinearWeights, U: torch.Tensor, k: int, args: argparse.Namespace, n_ref: int,
          n_check: int, full: int) -> dict:
    ref_vals, c_ref = reference(w, U[:n_ref], k)
    per_ref = c_ref.cpu / n_ref
    auto = choose_solver(w, k)
    row = dict(layer=name, d=w.d, d_mlp=w.W_in.shape[1], n=U.shape[0], k=k, n_ref=n_ref, full=full, auto=auto,
               batch=args.batch,
               ref_cpu_s_per_dir=per_ref, ref_wall_s_per_dir=c_ref.wall / n_ref)
    truth = exact_values(w, U, k) if w.d <= 128 else None
    if not args.skip_today:
        with Clock() as c:
            _, _, info = lanczos_topk_info(w, U, k, progress=False)
        row.update(today_ratio=per_ref * U.shape[0] / c.cpu, today_matvecs=float(info.matvecs.float().mean()))
    for path in PATHS:
        if path == "dense" and w.d > 256:
            continue
        r, c, setup = atlas_solve(w, U, k, args.batch, path, args.warm)
        err, missed = _missed(r["values"][:n_ref], ref_vals)
        row.update({f"{path}_cpu_s_per_dir": c.cpu / U.shape[0], f"{path}_wall_s_per_dir": c.wall / U.shape[0],
                    f"{path}_setup_cpu_s": setup, f"{path}_matvecs": float(r["matvecs"].float().mean()),
                    f"{path}_ratio": per_ref * U.shape[0] / (c.cpu + setup * U.shape[0] / full),
                    f"{path}_residual_max": float(r["residuals"].max()), f"{path}_err_vs_ref": err,
                    f"{path}_missed_of_ref": missed, f"{path}_projected_s_{full}": c.cpu / U.shape[0] * full + setup,
                    f"{path}_explicit_residual_max": explicit_residuals(w, U[:n_check], r["values"][:n_check],
                                                                        r["vectors"][:n_check])})
        if truth is not None:
            row[f"{path}_missed_of_all"] = _missed(r["values"], truth)[1]
    key = "dense" if auto == "dense" else "warm" if args.warm else "cold"
    row.update(auto_path=f"{auto} ({key})" if auto == "lanczos" else auto, auto_ratio=row[f"{key}_ratio"])
    print(json.dumps(row), flush=True)
    return row


def _cell(r: dict, path: str) -> str:
    if f"{path}_ratio" not in r:
        return "-"
    return f"{r[f'{path}_ratio']:.1f}x ({r[f'{path}_matvecs']:.1f})" if path != "dense" else f"{r['dense_ratio']:.2f}x"


def table(rows: list) -> str:
    out = ["| layer | k | reference CPU s/dir | lanczos today | dense | lanczos cold | lanczos warm | auto | "
           "max residual (explicit) | missed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        res = max(r[f"{p}_explicit_residual_max"] for p in PATHS if f"{p}_ratio" in r)
        missed = "/".join(str(r.get(f"{p}_missed_of_all", r[f"{p}_missed_of_ref"])) for p in PATHS if f"{p}_ratio" in r)
        today = f"{r['today_ratio']:.1f}x ({r['today_matvecs']:.0f})" if "today_ratio" in r else "-"
        out.append(f"| {r['layer']} ({r['d']}x{r['d_mlp']}, n={r['n']}, batch {r['batch']}) | {r['k']} | "
                   f"{r['ref_cpu_s_per_dir']:.4f} | {today} | {_cell(r, 'dense')} | {_cell(r, 'cold')} | "
                   f"{_cell(r, 'warm')} | {r['auto_path']}: **{r['auto_ratio']:.1f}x** | {res:.1e} | {missed} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default="syn2048,syn512,trained,stories260k")
    ap.add_argument("--ks", default="8,16")
    ap.add_argument("--sample", type=int, default=256, help="TinyLlama-width directions")
    ap.add_argument("--ref", type=int, default=16, help="TinyLlama-width reference directions")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--warm", type=int, default=128, help="warm-start basis size")
    ap.add_argument("--skip-today", action="store_true", help="skip eigendecompose's solver (slow on many directions)")
    ap.add_argument("--trained", default="runs/atlas_demo/lm/model")
    ap.add_argument("--stories260k", default="runs/convert_small/model")
    ap.add_argument("--out", default="benchmarks/results/atlas.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    ks = [int(k) for k in args.ks.split(",")]
    rows = []
    for name in args.layers.split(","):
        if name == "syn2048":
            w, U = synthetic(2048, 5632, args.sample)
            rows += [bench(name, w, U[: args.sample], k, args, args.ref, 16, 32000) for k in ks]
        elif name == "syn512":
            w, U = synthetic(512, 2048, 4096)
            rows += [bench(name, w, U, k, args, 32, 64, 4096) for k in ks]
        elif name in ("trained", "stories260k"):
            w, U = trained(args.trained, 1) if name == "trained" else trained(args.stories260k, 2)
            rows += [bench(name, w, U, k, args, 256, 64, U.shape[0]) for k in ks]
        else:
            raise SystemExit(f"--layers: unknown layer {name!r}; use syn2048, syn512, trained, stories260k.")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                              "cpus": os.cpu_count(), "threads": 1, "load_avg_start": load_start,
                                              "load_avg_end": os.getloadavg(),
                                              "rows": rows}, indent=1))
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
