"""Batched low-rank correlation (``lowrank_correlation``, 64 directions per eigendecomposition and one
pass over the tokens per chunk) against the same computation one feature at a time (``chunk=1``).

    python benchmarks/sae_lowrank.py [--d-model 128] [--features 256] [--tokens 16384]

A random bilinear layer (TransformerLens config, RMSNorm) and random non-negative "feature
activations" (half the tokens active); prints a table with the time ratio and checks that both give the
same correlations.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("TQDM_DISABLE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    import bilinear_lens  # noqa: F401
    from bilinear_lens.sae.compare import lowrank_correlation

    d = args.d_model
    cfg = HookedTransformerConfig(d_model=d, d_mlp=4 * d, n_layers=1, n_heads=4, d_head=d // 4, n_ctx=16,
                                  d_vocab=50, act_fn="bilinear", gated_mlp=True, normalization_type="RMS", seed=0)
    model = HookedTransformer(cfg).eval()
    torch.manual_seed(0)
    x = torch.randn(args.tokens, d)
    y = torch.relu(torch.randn(args.tokens, args.features))
    dirs = torch.randn(args.features, d)
    ks = (1, 2, 4, 8, 16, 32, 64)
    rows, results = [], {}
    for name, chunk in (("per feature (chunk=1)", 1), ("batched (chunk=64)", 64)):
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = lowrank_correlation(model, 0, dirs, x, y, ks=ks, chunk=chunk)
            best = min(best, time.perf_counter() - t)
        results[name] = res.corr
        rows.append((name, best))
    ref = rows[0][1]
    diff = (results[rows[0][0]] - results[rows[1][0]]).abs().max().item()
    print(f"lowrank_correlation: d_model {d}, {args.features} features, {args.tokens} tokens, k = {ks}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'method':<24} {'seconds':>9} {'speed-up':>9}")
    for name, sec in rows:
        print(f"{name:<24} {sec:>9.2f} {ref / sec:>8.1f}x")
    print(f"max |difference| of the correlations: {diff:.2e}")


if __name__ == "__main__":
    main()
