"""Training throughput of the train-lm model (tokens/s), bilinear vs SwiGLU, 1 vs 2 torch threads.

    python benchmarks/language_throughput.py [--d-model 128] [--layers 2] [--ctx 128] [--batch 16]

One AdamW training step (forward, backward, update) of ``bilinear_lens.language`` models with
the train-lm defaults, on random tokens. Settings are interleaved and repeated so that load
changes on a shared machine hit all of them; the table reports the median over repeats and the
ratio against the reference (bilinear, 1 thread) measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def main() -> None:
    from bilinear_lens.language.model import LMShape, build_model, count_params
    from bilinear_lens.training.losses import lm_loss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    args = ap.parse_args()

    settings = [(mlp, th) for mlp in ("bilinear", "swiglu") for th in (1, 2)]
    models = {}
    for mlp in ("bilinear", "swiglu"):
        m = build_model(LMShape(mlp=mlp, d_model=args.d_model, n_layers=args.layers, n_heads=4,
                                n_ctx=args.ctx, d_vocab=args.vocab))
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3, foreach=True)
        models[mlp] = (m, opt)
    x = torch.randint(0, args.vocab, (args.batch, args.ctx))
    rates = {s: [] for s in settings}
    for _ in range(args.repeats):
        for mlp, th in settings:
            torch.set_num_threads(th)
            m, opt = models[mlp]
            loss = lm_loss(m(x), x)[0]; loss.backward(); opt.step(); opt.zero_grad()  # warm-up
            t = time.perf_counter()
            for _ in range(args.steps):
                loss = lm_loss(m(x), x)[0]; loss.backward(); opt.step(); opt.zero_grad()
            rates[(mlp, th)].append(args.steps * x.numel() / (time.perf_counter() - t))
    ref = statistics.median(rates[("bilinear", 1)])
    n = count_params(models["bilinear"][0])
    print(f"d_model {args.d_model}, {args.layers} layers, ctx {args.ctx}, batch {args.batch}, "
          f"vocab {args.vocab}: {n:,} parameters; median of {args.repeats} repeats x {args.steps} steps")
    print(f"| {'mlp':8} | threads | tokens/s | ratio vs bilinear@1 |")
    print("|---|---:|---:|---:|")
    for mlp, th in settings:
        r = statistics.median(rates[(mlp, th)])
        print(f"| {mlp:8} | {th} | {r:,.0f} | {r / ref:.2f} |")


if __name__ == "__main__":
    main()
