"""Benchmark: atlas solver vs the paper's reference, per direction, measured in one run.

Layers (``--layers``, default all):

* ``syn512``: d_model 512 x d_mlp 2048 (ts-medium's shape), trained-like random weights as in
  /work/shared/notes/atlas_speed.md: ``W_in, W_gate, W_out`` with singular values ``3 / (1 + i/4)``
  and random orthonormal factors; the whole 4,096-token vocabulary of a random unembedding with the
  same spectrum (centred columns);
* ``syn2048``: TinyLlama width (2048 x 5632), same construction, a sample of ``--sample`` random unit
  directions;
* ``trained``: a bilinear model trained here with ``bilinear-lens train-lm`` (``--trained DIR``,
  layer 1, its whole vocabulary through the final norm as the atlas defines it);
* ``stories260k``: stories260k's SwiGLU MLP weights read *as if* bilinear (``W_gate = gate_proj^T``
  with the ``post_attention_layernorm`` weight folded in, ``W_in = up_proj^T``, ``W_out = down_proj^T``;
  the SiLU is dropped, so this is not the model's function, only its trained weight statistics),
  layer 2, the whole 512-token vocabulary.

Methods, top-k for k in ``--ks``: **reference** (form each ``Q`` with one einsum, dense ``eigh``) on
the first ``--ref`` directions; **lanczos** (today's ``eigendecompose(k)`` solver,
``lanczos_topk_info`` defaults) on all; **atlas cold** and **atlas warm** (``certified_topk`` in
batches of ``--batch``; warm: shared basis of 64 from the top ``k + 4`` eigenvectors of a strided
pilot of 128 directions, pilot time amortised over the whole vocabulary: 4,096 / 32,000 / the model's). Every atlas pair's residual ``||Q v - lambda v|| / |lambda_1|`` is
re-checked with explicit matvecs (``interaction_matvec``) on ``--check`` directions. Clock: process
CPU time, one thread (wall time alongside). Results: ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from bilinear_lens.atlas.solve import GUARD, certified_topk
from bilinear_lens.atlas.warm import shared_subspace, subspace_starts
from bilinear_lens.decomposition.eigen import sort_by_magnitude
from bilinear_lens.decomposition.interaction import interaction_from_weights, interaction_matvec, output_scales
from bilinear_lens.decomposition.lanczos import lanczos_topk_info
from bilinear_lens.decomposition.weights import BilinearWeights


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
    from bilinear_lens.sae.cli import load_model

    model, tok = load_model(folder)
    return bilinear_weights(model, layer), vocab_directions(model, tok).vectors.float()


def stories260k(folder: str, layer: int) -> tuple:
    from safetensors.torch import load_file

    t = load_file(str(Path(folder) / "model.safetensors"))
    p = f"model.layers.{layer}."
    ln = t[p + "post_attention_layernorm.weight"][:, None]
    w = BilinearWeights((ln * t[p + "mlp.up_proj.weight"].T).float(), (ln * t[p + "mlp.gate_proj.weight"].T).float(),
                        t[p + "mlp.down_proj.weight"].T.contiguous().float(), torch.zeros(ln.shape[0]), False, layer, None)
    W_U = t.get("lm_head.weight", t["model.embed_tokens.weight"]).T * t["model.norm.weight"][:, None]
    return w, (W_U - W_U.mean(1, keepdim=True)).T.contiguous().float()


def reference(w: BilinearWeights, U: torch.Tensor, k: int) -> tuple:
    vals = []
    with Clock() as c:
        for u in U.split(4):
            e, v = sort_by_magnitude(*torch.linalg.eigh(interaction_from_weights(w, u)))
            vals.append(e[:, :k])
    return torch.cat(vals), c


def atlas_solve(w: BilinearWeights, U: torch.Tensor, k: int, batch: int, warm: bool) -> tuple:
    vals, vecs, res, mv = [], [], [], []
    S = None
    with Clock() as c_pilot:
        if warm:
            idx = torch.linspace(0, U.shape[0] - 1, min(128, U.shape[0])).round().long().unique()
            pilot = torch.cat([certified_topk(w, U[idx[i:i + batch]], min(k + GUARD, w.d)).vectors
                               for i in range(0, len(idx), batch)])
            S = shared_subspace(pilot.reshape(-1, w.d), 64)
    with Clock() as c:
        for b0 in range(0, U.shape[0], batch):
            u = U[b0:b0 + batch]
            start = None if S is None else subspace_starts(w, u, S, min(k + GUARD, S.shape[0]))
            r = certified_topk(w, u, k, start=start, seed=b0)
            vals.append(r.values), vecs.append(r.vectors), res.append(r.residuals), mv.append(r.matvecs)
    c.pilot = c_pilot.cpu
    return torch.cat(vals), torch.cat(vecs), torch.cat(res), torch.cat(mv).float(), c


def explicit_residuals(w: BilinearWeights, U: torch.Tensor, vals: torch.Tensor, vecs: torch.Tensor) -> float:
    s = output_scales(w, U)
    Qv = interaction_matvec(w, s, vecs.transpose(1, 2)).transpose(1, 2)
    r = (Qv - vals.unsqueeze(-1) * vecs).norm(dim=-1) / vals[:, :1].abs()
    return float(r.max())


def bench(name: str, w: BilinearWeights, U: torch.Tensor, ks, n_ref: int, batch: int, n_check: int, full: int) -> list:
    rows = []
    for k in ks:
        ref_vals, c_ref = reference(w, U[:n_ref], k)
        per_ref = c_ref.cpu / n_ref
        row = dict(layer=name, d=w.d, d_mlp=w.W_in.shape[1], n=U.shape[0], k=k, n_ref=n_ref,
                   ref_cpu_s_per_dir=per_ref, ref_wall_s_per_dir=c_ref.wall / n_ref)
        _, _, info = lanczos_topk_info(w, U[:batch], k, progress=False)  # warm-up allocations
        with Clock() as c:
            _, _, info = lanczos_topk_info(w, U, k, progress=False)
        row.update(lanczos_cpu_s_per_dir=c.cpu / U.shape[0], lanczos_matvecs=float(info.matvecs.float().mean()),
                   lanczos_ratio=per_ref * U.shape[0] / c.cpu)
        for warm in (False, True):
            tag = "warm" if warm else "cold"
            vals, vecs, res, mv, c = atlas_solve(w, U, k, batch, warm)
            rel = (vals[:n_ref].double() - ref_vals.double()).abs() / ref_vals.double().abs()
            err, missed = float(rel.max()), int((rel.amax(-1) > 1e-3).sum())
            row.update({f"{tag}_pilot_cpu_s": c.pilot, f"{tag}_cpu_s_per_dir": c.cpu / U.shape[0], f"{tag}_wall_s_per_dir": c.wall / U.shape[0],
                        f"{tag}_ratio": per_ref * U.shape[0] / (c.cpu + c.pilot * U.shape[0] / full), f"{tag}_matvecs": float(mv.mean()),
                        f"{tag}_residual_max": float(res.max()), f"{tag}_err_vs_ref": err, f"{tag}_missed_of_ref": missed,
                        f"{tag}_explicit_residual_max": explicit_residuals(w, U[:n_check], vals[:n_check], vecs[:n_check]),
                        f"{tag}_projected_s_{full}": c.cpu / U.shape[0] * full + c.pilot})
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default="syn512,syn2048,trained,stories260k")
    ap.add_argument("--ks", default="8,16")
    ap.add_argument("--sample", type=int, default=256, help="TinyLlama-width directions")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--trained", default="runs/atlas_lm/model")
    ap.add_argument("--stories260k", default="/work/shared/models/stories260k")
    ap.add_argument("--out", default="benchmarks/results/atlas.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ks = [int(k) for k in args.ks.split(",")]
    rows = []
    for name in args.layers.split(","):
        if name == "syn512":
            w, U = synthetic(512, 2048, 4096)
            rows += bench(name, w, U, ks, 32, args.batch, 64, 4096)
        elif name == "syn2048":
            w, U = synthetic(2048, 5632, args.sample)
            rows += bench(name, w, U[: args.sample], ks, 8, args.batch, 16, 32000)
        elif name == "trained":
            w, U = trained(args.trained, 1)
            rows += bench(name, w, U, ks, 128, args.batch, 64, U.shape[0])
        elif name == "stories260k":
            w, U = stories260k(args.stories260k, 2)
            rows += bench(name, w, U, ks, 128, args.batch, 64, U.shape[0])
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                              "threads": 1, "rows": rows}, indent=1))
    print("\n| layer | k | reference s/dir | lanczos today (ratio, matvecs) | atlas cold (ratio, matvecs) | "
          "atlas warm (ratio, matvecs) | max residual (explicit) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} ({r['d']}x{r['d_mlp']}, n={r['n']}) | {r['k']} | {r['ref_cpu_s_per_dir']:.4f} | "
              f"{r['lanczos_ratio']:.1f}x, {r['lanczos_matvecs']:.0f} | {r['cold_ratio']:.1f}x, {r['cold_matvecs']:.1f} | "
              f"{r['warm_ratio']:.1f}x, {r['warm_matvecs']:.1f} | "
              f"{max(r['cold_explicit_residual_max'], r['warm_explicit_residual_max']):.1e} |")


if __name__ == "__main__":
    main()
