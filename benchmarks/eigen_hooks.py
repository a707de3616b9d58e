"""Benchmark: cost of eigenvector hooks (attach_eigenvectors) and truncation against plain runs, same run.

    python benchmarks/eigen_hooks.py [--threads 1] [--reps 9] [--batch 4] [--seq 128] [--n 32] [--k 16]

A random 2-layer bilinear HookedTransformer (d_model 512, d_mlp 2048); top-``k`` eigenvectors of ``n`` random
directions attached to *both* layers (attach + detach inside every timed run). Rows, each against its plain
reference, interleaved and timed as the median of ``--reps``:

* ``run_with_cache`` with eigenvectors attached vs plain ``run_with_cache`` (goal <= 1.3x);
* ``run_with_hooks`` editing every ``hook_eig`` (x0.5) vs a plain forward;
* a forward inside ``truncated_mlp`` (both layers, k of 16) vs a plain forward.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from tqdm.auto import tqdm

warnings.filterwarnings("ignore", category=DeprecationWarning)

import bilinear_lens as bl  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a shared CPU)")
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--k", type=int, default=16)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(d_model=512, d_mlp=2048, n_layers=2, n_heads=8, d_head=64, n_ctx=max(256, args.seq),
                                  d_vocab=1000, act_fn="bilinear", gated_mlp=True, normalization_type="RMS",
                                  positional_embedding_type="rotary", rotary_dim=64)
    model = HookedTransformer(cfg).eval()
    tokens = torch.randint(0, 1000, (args.batch, args.seq))
    eigs = [bl.eigendecompose(model, L, torch.randn(args.n, 512), k=args.k) for L in (0, 1)]
    halve = [(f"blocks.{L}.mlp.hook_eig", lambda v, hook: v * 0.5) for L in (0, 1)]

    def attached(fn):
        def run():
            with torch.no_grad(), bl.attach_eigenvectors(model, 0, eigs[0]), bl.attach_eigenvectors(model, 1, eigs[1]):
                fn()
        return run

    def truncated():
        with torch.no_grad(), bl.truncated_mlp(model, 0, eigs[0]), bl.truncated_mlp(model, 1, eigs[1]):
            model(tokens)

    def plain(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    fns = {
        "run_with_cache": plain(lambda: model.run_with_cache(tokens)),
        "run_with_cache + eigenvectors": attached(lambda: model.run_with_cache(tokens)),
        "forward": plain(lambda: model(tokens)),
        "run_with_hooks editing hook_eig": attached(lambda: model.run_with_hooks(tokens, fwd_hooks=halve)),
        f"forward in truncated_mlp (k={args.k})": truncated,
    }
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in tqdm(range(args.reps), desc="reps"):
        for name, fn in fns.items():  # interleaved: same load for all
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    refs = {"run_with_cache + eigenvectors": "run_with_cache", "run_with_hooks editing hook_eig": "forward",
            f"forward in truncated_mlp (k={args.k})": "forward"}
    print(f"\n2 layers, d_model 512, d_mlp 2048, {args.batch}x{args.seq} tokens, n={args.n} directions x k={args.k} "
          f"eigenvectors on both layers, {args.threads} thread(s), median of {args.reps}\n")
    print(f"| {'run':<40} | {'ms':>7} | {'reference':<16} | {'ratio':>6} |")
    print(f"|{'-' * 42}|{'-' * 9}|{'-' * 18}|{'-' * 8}|")
    for name, t in med.items():
        ref = refs.get(name)
        ratio = f"{t / med[ref]:.3f}" if ref else ""
        print(f"| {name:<40} | {t * 1e3:7.0f} | {ref or '':<16} | {ratio:>6} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
