"""Low-rank correlation against output-SAE training length (the paper's App. H question, small scale).

    python demos/sae_training_length.py --demo runs/demo_quick [--tokens 50000,100000,200000,400000]

Uses the bilinear model, input SAE and settings of a finished ``tinystories_sae_vs_eigen.py`` run
(``--demo``), trains one output SAE per token budget (resumable: finished SAEs are reused) and
prints / writes ``DEMO/sae_length/results.json``: SAELens evals and the low-rank correlation (mean and
fraction above 0.75 at k = 1, 2, 4) for each budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

for var, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                   ("WANDB_MODE", "disabled")):
    os.environ.setdefault(var, value)
warnings.filterwarnings("ignore")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", required=True, help="output folder of tinystories_sae_vs_eigen.py")
    ap.add_argument("--tokens", default="50000,100000,200000,400000")
    args = ap.parse_args(argv)
    demo = Path(args.demo)
    metrics = json.loads((demo / "metrics.json").read_text())
    s, data = metrics["settings"], metrics["data"]
    train_txt = str(Path(data).with_name("train.txt"))

    import torch
    from sae_lens import SAE

    torch.set_num_threads(1)  # one thread: fastest on a shared machine

    from bilinear_lens.loading import load_model_and_tokenizer as load_model
    from bilinear_lens.text.tokens import text_blocks
    from bilinear_lens.sae.compare import collect_activations, lowrank_correlation
    from bilinear_lens.sae.evals import write_json
    from bilinear_lens.sae.config import SAETrainConfig
    from bilinear_lens.sae.train import train_sae

    model, tok = load_model(metrics["model"])
    L, ctx = s["layer"], s["n_ctx"]
    budgets = [int(t) for t in args.tokens.split(",")]
    train = text_blocks(train_txt, tok, ctx, max_rows=-(-max(budgets) // ctx))
    evals_rows = text_blocks(data, tok, ctx, max_rows=s["eval_rows"], skip_rows=s["rows"])
    tokens = text_blocks(data, tok, ctx, max_rows=s["rows"])
    sae_in = SAE.load_from_disk(str(demo / "sae-in"))
    results = []
    for n in budgets:
        folder = demo / "sae_length" / f"sae-out-{n}"
        if not (folder / "evals.json").is_file():
            train_sae(model, train, folder, SAETrainConfig(
                layer=L, hook="out", k=s["k"], expansion=s["expansion"], training_tokens=n, context_size=ctx,
                batch_size_tokens=s["sae_batch"], lr=s["sae_lr"], eval_batches=max(1, s["eval_rows"] // 16)),
                eval_tokens=evals_rows, model_name=metrics["model"], resume=True)
        ev = json.loads((folder / "evals.json").read_text())
        sae_out = SAE.load_from_disk(str(folder))
        acts = collect_activations(model, L, tokens, sae_in, sae_out, bos=tok.bos_token_id)
        lr = lowrank_correlation(model, L, sae_out.W_enc.detach().T, acts.x, acts.z_out, ks=(1, 2, 4)).summary()
        row = {"tokens": n, "explained_variance": ev["explained_variance"], "ce_loss_recovered": ev["ce_loss_recovered"],
               "dead": ev["training"]["num_dead_features"], "n_features": lr["n_features"],
               "mean_r": lr["mean"], "frac_above_0.75": lr["frac_above_0.75"]}
        results.append(row)
        print(json.dumps(row), flush=True)
    write_json(demo / "sae_length" / "results.json", results)
    print(f"{'tokens':>8} {'expl.var':>8} {'CE rec.':>8} {'r(k=1)':>7} {'r(k=2)':>7} {'>0.75@2':>8}")
    for r in results:
        print(f"{r['tokens']:>8} {r['explained_variance']:>8.3f} {r['ce_loss_recovered']:>8.3f} "
              f"{r['mean_r'][0]:>7.3f} {r['mean_r'][1]:>7.3f} {r['frac_above_0.75'][1]:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
