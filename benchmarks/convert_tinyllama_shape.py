"""TinyLlama-1.1B shape through the converter, and a step-time/memory estimate for the full model.

Part 1 (the full-size path, random weights): a Llama folder with TinyLlama-1.1B's exact shapes
(d_model 2048, d_mlp 5632, 32 heads, 4 KV heads, vocab 32000, RMSNorm, rotary) but only
``--layers`` layers, the real TinyLlama tokenizer, runs ``--steps`` conversion steps on TinyStories,
is exported, and the export is reloaded with ``HookedTransformer.from_pretrained`` and with plain
``transformers``; the script prints the largest log-probability difference to the trained model.

Part 2 (measured): forward+backward time of ONE TinyLlama block (attention + annealed-gate MLP,
bf16-free float32) on ``[1, --ctx, 2048]`` on this machine, and of the embedding/unembedding, with
the analytic FLOP count; then the estimate for the 22-layer model (see docs/convert.md).

    python benchmarks/convert_tinyllama_shape.py --layers 1 --steps 2 --out runs/tinyllama-shape
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TINYLLAMA = dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4,
                 vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
                 hidden_act="silu", tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def make_folder(path: Path, layers: int) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(num_hidden_layers=layers, **TINYLLAMA)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(SHARED / "models" / "tinyllama-tokenizer").save_pretrained(path)


def block_flops(d: int, d_mlp: int, n_heads: int, n_kv: int, T: int) -> float:
    """Forward FLOPs of one Llama block on T tokens: 2 * params * T + attention scores/values."""
    d_head = d // n_heads
    params = d * d + 2 * d * n_kv * d_head + d * d + 3 * d * d_mlp
    return 2 * params * T + 2 * 2 * n_heads * d_head * T * T / 2  # causal: half the score matrix


def time_block(ctx: int, repeats: int) -> dict:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from bilinear_lens.convert.swap import set_beta, swap_to_annealed
    from bilinear_lens.training.optim import freeze_biases
    from bilinear_lens.training.speedups import use_sdpa

    cfg = HookedTransformerConfig(n_layers=1, d_model=2048, d_mlp=5632, n_heads=32, d_head=64,
                                  n_key_value_heads=4, n_ctx=ctx, d_vocab=32000, act_fn="silu",
                                  gated_mlp=True, normalization_type="RMS", positional_embedding_type="rotary",
                                  rotary_dim=64, final_rms=True)
    model = HookedTransformer(cfg)
    swap_to_annealed(model)
    freeze_biases(model)
    set_beta(model, 0.5)
    use_sdpa(model)
    block = model.blocks[0]
    x = torch.randn(1, ctx, 2048)
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        block(x).pow(2).mean().backward()
        times.append(time.perf_counter() - t)
    emb = []
    tokens = torch.randint(0, 32000, (1, ctx))
    for _ in range(repeats + 1):
        t = time.perf_counter()
        logits = model.unembed(model.ln_final(model.embed(tokens)))
        torch.nn.functional.cross_entropy(logits[0], tokens[0]).backward()
        emb.append(time.perf_counter() - t)
    f_block = 3 * block_flops(2048, 5632, 32, 4, ctx)  # forward + backward = 3x forward
    f_emb = 3 * 2 * 2048 * 32000 * ctx
    tb, te = min(times[1:]), min(emb[1:])
    return {"ctx": ctx, "block_fwd_bwd_s": tb, "block_gflops_per_s": f_block / tb / 1e9,
            "unembed_fwd_bwd_s": te, "unembed_gflops_per_s": f_emb / te / 1e9,
            "block_fwd_flops": f_block / 3, "unembed_fwd_flops": f_emb / 3,
            "threads": torch.get_num_threads()}


def estimate(meas: dict, tokens: float, n_layers: int = 22, distill: bool = True) -> dict:
    """Full-model numbers derived from the measured per-block cost (FLOP counts scale it)."""
    ctx = meas["ctx"]
    per_token_fwd = (n_layers * meas["block_fwd_flops"] + meas["unembed_fwd_flops"]) / ctx
    per_token = 3 * per_token_fwd + (per_token_fwd if distill else 0)  # + teacher forward
    cpu_s_per_token = (n_layers * meas["block_fwd_bwd_s"] + meas["unembed_fwd_bwd_s"]) / ctx * (
        (4 / 3) if distill else 1)
    params = 22 * (2 * 2048 * 2048 + 2 * 2048 * 256 + 3 * 2048 * 5632 + 2 * 2048) + 2 * 32000 * 2048 + 2048
    return {"params": params, "train_flops_per_token": per_token, "total_flops": per_token * tokens,
            "cpu_hours_this_machine": cpu_s_per_token * tokens / 3600,
            # memory: fp32 master weights + grads + AdamW (m, v) = 16 B/param, + bf16 teacher 2 B/param
            "memory_states_gb": params * (16 + (2 if distill else 0)) / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=256, help="tokens for the per-block timing")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="runs/tinyllama-shape")
    ap.add_argument("--skip-convert", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    if not args.skip_convert:
        from transformers import AutoModelForCausalLM

        from bilinear_lens import load_pretrained
        from bilinear_lens.convert.config import ConvertConfig
        from bilinear_lens.convert.finetune import load_swiglu_model, run_convert

        src = Path(tempfile.mkdtemp(prefix="tl-shape-src-"))
        t = time.time()
        make_folder(src, args.layers)
        cfg = ConvertConfig.flat(model=str(src), data=str(SHARED / "data" / "tinystories" / "train.txt"),
                                 out=str(out / "convert"), tokens=args.steps * 2 * args.seq_len, seq_len=args.seq_len,
                                 batch_size=2, lr=1e-4, warmup=0, anneal_frac=0.5, train_limit=200, distill=0.0,
                                 val_stories=4, val_max_len=64, checkpoint_every=args.steps, overwrite=True)
        model, tok = load_swiglu_model(cfg)
        metrics = run_convert(cfg, model=model, tokenizer=tok)
        t_convert = time.time() - t
        tokens = torch.tensor(tok(["Once upon a time, there was a little girl named Lily."])["input_ids"])
        with torch.no_grad():
            ref = model(tokens).log_softmax(-1)
            tl = load_pretrained(out / "convert" / "model", processing=False)
            d_tl = float((tl(tokens).log_softmax(-1) - ref).abs().max())
            del tl
            hf = AutoModelForCausalLM.from_pretrained(out / "convert" / "model").eval()
            d_hf = float((hf(tokens).logits.log_softmax(-1) - ref).abs().max())
        result["convert"] = {"layers": args.layers, "steps": args.steps, "seconds": round(t_convert, 1),
                             "blocks": sorted({type(b.mlp).__name__ for b in model.blocks}),
                             "act_fn": model.cfg.act_fn, "max_abs_dlogp_hookedtransformer": d_tl,
                             "max_abs_dlogp_transformers": d_hf,
                             **{k: metrics[k] for k in ("val_loss_original", "val_loss_start", "val_loss_final")}}
        print(json.dumps(result["convert"], indent=1), flush=True)
        del model, hf
    meas = time_block(args.ctx, args.repeats)
    result["measured"] = meas
    result["estimate_400M_tokens"] = estimate(meas, 400e6)
    result["estimate_2M_tokens"] = estimate(meas, 2e6)
    print(json.dumps({k: result[k] for k in ("measured", "estimate_400M_tokens")}, indent=1))
    tmp = out / ".result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out / "result.json")


if __name__ == "__main__":
    main()
