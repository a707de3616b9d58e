"""Benchmark: implicit top-k eigensolver vs the paper's reference, and the cost of eigenvector hooks.

Part 1, per size (default ``d_model x d_mlp`` = 512 x 2048 and TinyLlama's 2048 x 5632), on a
bilinear layer with a trained-like decaying spectrum (:mod:`bilinear_lens.testing`:
``W_in, W_gate = U diag(exp(-8 i / r) + 0.02) R^T`` with random orthonormal factors, neuron output
norms ``(1 + a)^-0.7``), for ``n`` = 32 random unit output directions, float32:

* reference (the paper's code): form every ``Q(u)`` with one einsum, then dense ``torch.linalg.eigh``
  and keep the top ``k`` = 16 by ``|lambda|`` (``dense_eigh``);
* implicit: ``lanczos_topk`` (batched thick-restart Lanczos on the weight matvec, never forms ``Q``);
* accuracy: max relative eigenvalue error of the implicit top-k against the reference, min ``|cos|``
  of eigenvectors whose eigenvalue is separated (relative gap > 1e-2), and, on the first ``--truth``
  directions, the error of *both* methods against float64 dense eigh ("equal accuracy").

Part 2: ``run_with_cache`` on a 2-layer bilinear HookedTransformer (d_model 512, d_mlp 2048) over a
batch of tokens, with ``n x k`` = 32 x 16 eigenvectors attached to both layers vs without (median of
``--reps``).

Results go to ``--out`` (JSON, written atomically after every measurement); ``--resume`` reuses the
rows already there, so an interrupted run continues where it stopped. ``--quick``: 256 x 1024 and
512 x 2048 only, smaller hook batch.

    python benchmarks/decompose.py               # full run (TinyLlama-size reference takes minutes)
    python benchmarks/decompose.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

import bilinear_lens  # noqa: F401  (registers the plugin)
from bilinear_lens.decomposition.eigen import sort_by_magnitude
from bilinear_lens.testing import BilinearStack, trained_like_layer
from bilinear_lens.decomposition.interaction import interaction_from_weights, output_scales
from bilinear_lens.decomposition.lanczos import (
    DEFAULT_TOL,
    _Operator,
    _ritz,
    default_block_size,
    default_krylov_dim,
    lanczos_topk_info,
)
from bilinear_lens.decomposition.weights import bilinear_weights


def write_json(path: Path, data: dict) -> None:
    """Atomic write: temp file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


class Timer:
    """Wall-clock and process CPU time of a block. On a shared machine, CPU time (with one thread)
    measures the work done and is robust to other users' load; wall time is reported alongside."""

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def directions(n: int, d_model: int, seed: int = 1) -> torch.Tensor:
    u = torch.randn(n, d_model, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (u / u.norm(dim=-1, keepdim=True)).float()


def reference(weights, u: torch.Tensor, k: int, chunk: int = 4) -> tuple:
    """The paper's method, timed in two parts: einsum-form all Q, then dense eigh (+ sort by |lambda|)."""
    with Timer() as t_form:
        Q = interaction_from_weights(weights, u)
    vals, vecs = [], []
    with Timer() as t_eigh:
        for q in tqdm(Q.split(chunk), desc="  reference eigh", leave=False, unit=f"x{chunk}"):
            e, v = sort_by_magnitude(*torch.linalg.eigh(q))
            vals.append(e[:, :k])
            vecs.append(v.transpose(-1, -2)[:, :k])
    return torch.cat(vals), torch.cat(vecs), t_form, t_eigh


def truth(weights, u: torch.Tensor, k: int) -> tuple:
    """float64 dense top-k (and the k+1-th |lambda|, for separation) on a few directions."""
    e, v = torch.linalg.eigh(interaction_from_weights(weights.to(dtype=torch.float64), u.double()))
    e, v = sort_by_magnitude(e, v)
    return e, v.transpose(-1, -2)


def rel_err(values: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((values.double() - ref.double()).abs() / ref.double().abs()).max())


def separated_cos(vecs: torch.Tensor, ref_vecs: torch.Tensor, full_ref: torch.Tensor, k: int) -> float:
    """min |cos| over eigenvectors whose eigenvalue has relative gap > 1e-2 to its neighbours."""
    e = full_ref.double()
    scale = e[:, :1].abs()
    gap_next = (e[:, :k] - e[:, 1 : k + 1]).abs()
    gap_prev = torch.cat([torch.full_like(e[:, :1], float("inf")), (e[:, 1:k] - e[:, : k - 1]).abs()], 1)
    ok = torch.minimum(gap_next, gap_prev) / scale > 1e-2
    cos = (vecs.double() * ref_vecs.double()).sum(-1).abs()
    return float(cos[ok].min()) if ok.any() else float("nan")


def bench_size(d_model: int, d_mlp: int, n: int, k: int, n_truth: int) -> dict:
    print(f"\n[{d_model} x {d_mlp}] building trained-like layer ...", flush=True)
    model = BilinearStack([trained_like_layer(d_model, d_mlp, dtype=torch.float32)])
    w = bilinear_weights(model, 0)
    u = directions(n, d_model)
    _ = lanczos_topk_info(w, u[:1], k)  # warm-up (allocations, BLAS threads)

    with Timer() as t_impl:
        vals, vecs, info = lanczos_topk_info(w, u, k, progress=True)
    print(f"  implicit top-{k}: {t_impl.cpu:.1f} CPU s ({t_impl.wall:.1f} s wall), "
          f"{info.matvecs.float().mean():.0f} matvecs/direction", flush=True)

    ref_vals, ref_vecs, t_form, t_eigh = reference(w, u, k)
    print(f"  reference: form Q {t_form.cpu:.1f} + eigh {t_eigh.cpu:.1f} CPU s "
          f"({t_form.wall + t_eigh.wall:.1f} s wall)", flush=True)

    row = dict(
        d_model=d_model, d_mlp=d_mlp, n=n, k=k, dtype="float32",
        cpu_reference_s=t_form.cpu + t_eigh.cpu, cpu_form_s=t_form.cpu, cpu_eigh_s=t_eigh.cpu,
        cpu_implicit_s=t_impl.cpu, ratio_cpu=(t_form.cpu + t_eigh.cpu) / t_impl.cpu,
        wall_reference_s=t_form.wall + t_eigh.wall, wall_implicit_s=t_impl.wall,
        ratio_wall=(t_form.wall + t_eigh.wall) / t_impl.wall,
        matvecs_per_direction=float(info.matvecs.float().mean()), krylov_dim=info.krylov_dim,
        restarts_max=int(info.restarts.max()), residual_max=float(info.residuals.max()),
        err_implicit_vs_reference=rel_err(vals, ref_vals),
    )
    if n_truth:
        print(f"  float64 dense truth on {n_truth} directions ...", flush=True)
        e64, v64 = truth(w, u[:n_truth], k)
        row.update(
            n_truth=n_truth,
            err_reference_vs_f64=rel_err(ref_vals[:n_truth], e64[:, :k]),
            err_implicit_vs_f64=rel_err(vals[:n_truth], e64[:, :k]),
            cos_implicit_vs_f64=separated_cos(vecs[:n_truth], v64[:, :k], e64, k),
            cos_reference_vs_f64=separated_cos(ref_vecs[:n_truth], v64[:, :k], e64, k),
            lambda_ratio_k_over_1=float((e64[:, k - 1].abs() / e64[:, 0].abs()).mean()),
        )
    return row


def subspace_iteration(weights, u: torch.Tensor, k: int, tol: float, block: int, max_iter: int = 1000) -> tuple:
    """Alternative solver for the comparison: block power iteration with Rayleigh-Ritz every step.

    ``X <- orth(Q X)`` on ``block`` vectors per direction; converges like ``|lambda_{block+1} / lambda_k|``.
    """
    op = _Operator(weights, output_scales(weights, u))
    g = torch.Generator().manual_seed(0)
    X = torch.linalg.qr(torch.randn(u.shape[0], weights.d, block, generator=g).to(u)).Q.transpose(1, 2)
    for it in range(1, max_iter + 1):
        QX = op(X)
        theta, Y = _ritz(torch.bmm(X, QX.transpose(1, 2)).double())
        Yt = Y.transpose(1, 2).to(X.dtype)
        X, QX = torch.bmm(Yt, X), torch.bmm(Yt, QX)
        res = (QX[:, :k] - theta[:, :k, None].to(X.dtype) * X[:, :k]).norm(dim=-1) / theta[:, :1].abs().to(X.dtype)
        if bool((res <= tol).all()):
            break
        X = torch.linalg.qr(QX.transpose(1, 2)).Q.transpose(1, 2)
    return theta[:, :k].to(u.dtype), it * block


def compare_solvers(d_model: int, d_mlp: int, n: int, k: int) -> list:
    """Lanczos with several block and Krylov sizes vs block subspace iteration, same tolerance (1e-5, float32)."""
    print(f"\n[solver choice at {d_model} x {d_mlp}] ...", flush=True)
    w = bilinear_weights(BilinearStack([trained_like_layer(d_model, d_mlp, dtype=torch.float32)]), 0)
    u = directions(n, d_model)
    ref_vals = reference(w, u, k)[0]
    rows = []
    default = (default_block_size(n), default_krylov_dim(k, w.d))
    for b, m in ((1, 32), (1, 48), (1, 64), (2, 48), (4, 48), (4, 64), (8, 64)):
        with Timer() as t:
            vals, _, info = lanczos_topk_info(w, u, k, krylov_dim=m, block_size=b)
        rows.append(dict(solver=f"Lanczos block {b}, m={m}" + (" (default)" if (b, m) == default else ""),
                         cpu_s=t.cpu, matvecs=float(info.matvecs.float().mean()), err=rel_err(vals, ref_vals)))
    for block in (2 * k, 3 * k):
        with Timer() as t:
            vals, mv = subspace_iteration(w, u, k, DEFAULT_TOL[torch.float32], block)
        rows.append(dict(solver=f"block subspace iteration, block {block}", cpu_s=t.cpu, matvecs=float(mv),
                         err=rel_err(vals, ref_vals)))
    return rows


def bench_hooks(d_model: int, d_mlp: int, batch: int, seq: int, n: int, k: int, reps: int) -> dict:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from bilinear_lens import attach_eigenvectors, eigendecompose

    cfg = HookedTransformerConfig(
        d_model=d_model, d_mlp=d_mlp, n_layers=2, n_heads=d_model // 64, d_head=64, n_ctx=seq,
        d_vocab=4096, act_fn="bilinear", gated_mlp=True, normalization_type="RMS",
        positional_embedding_type="rotary", rotary_dim=64, final_rms=True, seed=0,
    )
    model = HookedTransformer(cfg).eval()
    tokens = torch.randint(0, cfg.d_vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
    eigs = [eigendecompose(model, layer, directions(n, d_model, seed=layer), k=k) for layer in range(2)]

    def run_plain() -> Timer:
        with torch.no_grad(), Timer() as t:
            model.run_with_cache(tokens)
        return t

    attach_cpu = []

    def run_attached() -> Timer:  # attaching (once per session in practice) is timed separately
        with Timer() as total:
            with torch.no_grad(), attach_eigenvectors(model, 0, eigs[0]), attach_eigenvectors(model, 1, eigs[1]):
                with Timer() as t:
                    _, cache = model.run_with_cache(tokens)
        attach_cpu.append(total.cpu - t.cpu)
        assert cache["blocks.1.mlp.hook_eig"].shape == (batch, seq, n, k)
        return t

    times = {"plain": [], "attached": []}
    run_plain(), run_attached()  # warm-up
    for _ in tqdm(range(reps), desc="  run_with_cache", leave=False):
        for name, fn in (("plain", run_plain), ("attached", run_attached)):  # interleaved: same load
            t = fn()
            times[name].append((t.cpu, t.wall))
    med = {name: [statistics.median(x[i] for x in ts) for i in (0, 1)] for name, ts in times.items()}
    med["attach"] = statistics.median(attach_cpu[1:])
    return dict(d_model=d_model, d_mlp=d_mlp, layers=2, tokens=batch * seq, n=n, k=k, reps=reps,
                cpu_plain_s=med["plain"][0], cpu_attached_s=med["attached"][0],
                wall_plain_s=med["plain"][1], wall_attached_s=med["attached"][1],
                ratio_cpu=med["attached"][0] / med["plain"][0], ratio_wall=med["attached"][1] / med["plain"][1],
                cpu_attach_detach_both_layers_s=med["attach"])


def plot(rows: list, path: Path) -> None:
    """Stacked bars of CPU seconds per size: reference (form Q + eigh) vs implicit, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=110)
    labels = [f"{r['d_model']} x {r['d_mlp']}" for r in rows]
    x = torch.arange(len(rows)).float()
    ax.bar(x - 0.2, [r["cpu_form_s"] for r in rows], 0.38, label="reference: form Q (einsum)", color="#9ecae1")
    ax.bar(x - 0.2, [r["cpu_eigh_s"] for r in rows], 0.38, bottom=[r["cpu_form_s"] for r in rows],
           label="reference: dense eigh", color="#3182bd")
    ax.bar(x + 0.2, [r["cpu_implicit_s"] for r in rows], 0.38, label="implicit Lanczos top-k", color="#e6550d")
    for i, r in enumerate(rows):
        ax.text(i + 0.2, r["cpu_implicit_s"] * 1.15, f"{r['ratio_cpu']:.1f}x", ha="center", fontsize=9)
    ax.set_xticks(x.tolist(), labels)
    ax.set_yscale("log")
    ax.set_ylabel("CPU seconds (1 thread)")
    ax.set_title(f"top-{rows[0]['k']} eigenpairs of {rows[0]['n']} interaction matrices, float32", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp)
    os.replace(tmp, path)
    print(f"figure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (minutes on 2 cores)")
    parser.add_argument("--sizes", default=None, help="comma-separated d_modelxd_mlp, e.g. 512x2048,2048x5632")
    parser.add_argument("--n", type=int, default=32, help="output directions")
    parser.add_argument("--k", type=int, default=16, help="top-k eigenpairs")
    parser.add_argument("--truth", type=int, default=4, help="directions checked against float64 dense eigh")
    parser.add_argument("--reps", type=int, default=7, help="repetitions of run_with_cache")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: CPU time then measures work, robust to a shared machine)")
    parser.add_argument("--compare-solvers", action="store_true",
                        help="also run Lanczos variants and block subspace iteration at the first size")
    parser.add_argument("--skip-hooks", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/decompose.json"))
    parser.add_argument("--resume", action="store_true", help="reuse rows already in --out")
    parser.add_argument("--plot", type=Path, default=None, help="write a bar chart of the timings (PNG)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = args.sizes or ("256x1024,512x2048" if args.quick else "512x2048,2048x5632")
    sizes = [tuple(int(v) for v in s.split("x")) for s in sizes.split(",")]

    results = json.loads(args.out.read_text()) if args.resume and args.out.exists() else {}
    results["machine"] = (f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
                          f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")
    rows = results.setdefault("eigen", {})
    for d_model, d_mlp in sizes:
        key = f"{d_model}x{d_mlp}/n{args.n}/k{args.k}"
        if key not in rows:
            rows[key] = bench_size(d_model, d_mlp, args.n, args.k, args.truth)
            write_json(args.out, results)
    if args.compare_solvers and "solvers" not in results:
        results["solvers"] = dict(size=f"{sizes[0][0]}x{sizes[0][1]}", rows=compare_solvers(*sizes[0], args.n, args.k))
        write_json(args.out, results)
    if not args.skip_hooks:
        key = "quick" if args.quick else "full"
        if key not in results.setdefault("hooks", {}):
            batch, seq = (2, 64) if args.quick else (4, 128)
            print("\n[hooks] run_with_cache with / without eigenvectors attached ...", flush=True)
            results["hooks"][key] = bench_hooks(512, 2048, batch, seq, args.n, args.k, args.reps)
            write_json(args.out, results)

    print(f"\nmachine: {results['machine']}")
    print(f"\nImplicit top-{args.k} (batched Lanczos) vs reference (einsum Q + dense eigh), {args.n} directions, "
          "float32; CPU seconds (wall seconds in brackets)")
    print("| d_model x d_mlp | reference (form + eigh) | implicit | throughput ratio | matvecs/dir | "
          "max rel err vs ref | err ref vs f64 | err implicit vs f64 | min cos vs f64 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for d_model, d_mlp in sizes:
        r = rows[f"{d_model}x{d_mlp}/n{args.n}/k{args.k}"]
        print(f"| {d_model} x {d_mlp} | {r['cpu_reference_s']:.1f} ({r['cpu_form_s']:.1f} + {r['cpu_eigh_s']:.1f}) "
              f"[{r['wall_reference_s']:.0f}] | {r['cpu_implicit_s']:.2f} [{r['wall_implicit_s']:.1f}] "
              f"| **{r['ratio_cpu']:.1f}x** [{r['ratio_wall']:.1f}x] | {r['matvecs_per_direction']:.0f} "
              f"| {r['err_implicit_vs_reference']:.1e} | {r.get('err_reference_vs_f64', float('nan')):.1e} "
              f"| {r.get('err_implicit_vs_f64', float('nan')):.1e} | {r.get('cos_implicit_vs_f64', float('nan')):.6f} |")
    for key, h in results.get("hooks", {}).items():
        print(f"\nrun_with_cache, {h['layers']} layers d_model {h['d_model']} d_mlp {h['d_mlp']}, {h['tokens']} tokens, "
              f"{h['n']} x {h['k']} eigenvectors on every layer ({key}): without {h['cpu_plain_s'] * 1e3:.0f} CPU ms, "
              f"with {h['cpu_attached_s'] * 1e3:.0f} CPU ms -> **{h['ratio_cpu']:.2f}x** (wall {h['ratio_wall']:.2f}x); "
              f"attach + detach (both layers, once per session): {h.get('cpu_attach_detach_both_layers_s', float('nan')) * 1e3:.0f} CPU ms")
    if "solvers" in results:
        print(f"\nSolver choice at {results['solvers']['size']}, {args.n} directions, top-{args.k}, tol 1e-5, float32")
        print("| solver | CPU s | matvecs/direction | max rel err vs dense |\n|---|---|---|---|")
        for r in results["solvers"]["rows"]:
            print(f"| {r['solver']} | {r['cpu_s']:.2f} | {r['matvecs']:.0f} | {r['err']:.1e} |")
    if args.plot:
        plot([rows[f"{d}x{m}/n{args.n}/k{args.k}"] for d, m in sizes], args.plot)
    print(f"\nraw results: {args.out}")


if __name__ == "__main__":
    main()
