"""Memory per process of the converter: one process vs data parallel (DDP) vs sharded (``--fsdp``).

A Llama folder with TinyLlama-1.1B's shapes (d_model 2048, d_mlp 5632, 32 heads, 4 KV heads, vocab
32000) but ``--layers`` layers and random weights is converted for ``--steps`` steps with
distillation, three ways, at the same global batch:

* ``1 process``: ``bilinear-lens convert`` (the reference);
* ``DDP x N``: ``torchrun --nproc_per_node N -m bilinear_lens.cli convert`` (replicated);
* ``FSDP x N``: the same plus ``--fsdp`` (weights, gradients, AdamW moments and teacher sharded).

Each run's ``metrics.json`` reports, for the main process, the bytes of weights, gradients, optimiser
state and teacher it holds, and its peak resident memory; the table gives them with the ratio to the
one-process run measured in the same invocation. On CPU the processes talk over gloo; the same code
runs over NCCL on GPUs (``accelerate launch``).

    python benchmarks/convert_sharding.py --layers 2 --processes 2 --out runs/sharding
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert_tinyllama_shape import SHARED, make_folder  # noqa: E402


def run(label: str, cmd: list, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t = time.time()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{label} failed:\n{res.stderr[-3000:]}")
    m = json.loads((out / "metrics.json").read_text())
    m["wall_s"] = time.time() - t
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--out", default="runs/sharding")
    args = ap.parse_args()
    root = Path(args.out)
    src = root / "tinyllama-shape"
    if not (src / "config.json").exists():
        make_folder(src, args.layers)
    n = args.processes
    global_batch = n  # one sequence per process per step
    common = ["--model", str(src), "--data", str(SHARED / "data" / "tinystories" / "train.txt"),
              "--tokens", str(args.steps * global_batch * args.seq_len), "--seq-len", str(args.seq_len),
              "--distill", "0.9", "--lr", "1e-4", "--warmup", "0", "--train-limit", "300",
              "--val-stories", "4", "--val-max-len", "64", "--checkpoint-every", str(args.steps),
              "--threads", "1", "--no-progress", "--overwrite"]
    cli = ["-m", "bilinear_lens.cli", "convert"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}"]
    runs = [("1 process", [sys.executable, *cli, *common, "--batch-size", str(global_batch)], "one"),
            (f"DDP x {n}", [*torchrun, *cli, *common, "--batch-size", "1"], "ddp"),
            (f"FSDP x {n}", [*torchrun, *cli, *common, "--batch-size", "1", "--fsdp"], "fsdp")]
    rows = []
    for label, cmd, name in runs:
        out = root / name
        cmd = cmd + ["--out", str(out)]
        print(f"running {label} ...", flush=True)
        rows.append((label, run(label, cmd, out)))
    ref = rows[0][1]["memory_bytes_per_process"]
    gb = 1e9
    print(f"\nTinyLlama-1.1B shape, {args.layers} layers, {args.steps} steps, global batch "
          f"{global_batch}x{args.seq_len}, distillation on; bytes held by the main process")
    print("| run | weights GB | gradients GB | AdamW GB | teacher GB | states GB | ratio | peak RSS GB | ratio | s/step |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    table = []
    for label, m in rows:
        mem = m["memory_bytes_per_process"]
        s_per_step = m["seconds_this_session"] / max(m["steps_this_session"], 1)
        print(f"| {label} | {mem['weights'] / gb:.2f} | {mem['gradients'] / gb:.2f} | {mem['optimizer'] / gb:.2f} | "
              f"{mem['teacher'] / gb:.2f} | {mem['states'] / gb:.2f} | {mem['states'] / ref['states']:.2f} | "
              f"{mem['peak_rss'] / gb:.2f} | {mem['peak_rss'] / ref['peak_rss']:.2f} | {s_per_step:.1f} |")
        table.append({"run": label, "memory_bytes": mem, "s_per_step": s_per_step,
                      "val_loss_final": m["val_loss_final"], "processes": m["processes"]})
    finals = [m["val_loss_final"] for _, m in rows]
    print(f"\nfinal validation loss: {', '.join(f'{v:.6f}' for v in finals)} "
          f"(max difference {max(finals) - min(finals):.1e})")
    result = {"layers": args.layers, "processes": n, "steps": args.steps, "seq_len": args.seq_len, "runs": table}
    tmp = root / ".sharding.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, root / "sharding.json")


if __name__ == "__main__":
    main()
