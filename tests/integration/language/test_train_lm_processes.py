"""train-lm on two processes (torchrun, CPU/gloo): the shared loop's data parallelism, with the tokenizer and the
token cache made once by the main process, equals one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bilinear_lens.language.train import train_lm
from tests.integration.convert.test_convert_processes import free_port
from tests.integration.language.test_train_lm import data, tiny  # noqa: F401  (the data fixture)

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_processes_equal_one_with_the_global_batch(data, tmp_path, fsdp):  # noqa: F811
    one = train_lm(tiny(data, tmp_path / "one", tokens=4 * 32 * 6))  # batch 4, 6 steps
    out = tmp_path / "two"
    argv = ["train-lm", "--data", str(data[0]), "--val-data", str(data[1]), "--out", str(out), "--d-model", "16",
            "--n-layers", "1", "--n-heads", "2", "--n-ctx", "32", "--vocab-size", "300", "--batch-size", "2",
            "--tokens", str(4 * 32 * 6), "--eval-every", "4", "--checkpoint-every", "4", "--seed", "3",
            "--threads", "1", "--no-progress"] + (["--fsdp"] if fsdp else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "bilinear_lens.cli", *argv]
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count('"val_loss"') == 1  # one summary, from the main process
    two = json.loads((out / "metrics.json").read_text())
    assert two["processes"] == 2 and two["steps"] == one["steps"] == 6 and two["tokens_per_step"] == 4 * 32
    assert (out / "tokenizer" / "tokenizer.json").read_text() == (tmp_path / "one" / "tokenizer" /
                                                                    "tokenizer.json").read_text()
    for h1, h2 in zip(one["history"], two["history"]):
        assert h2["train_ce"] == pytest.approx(h1["train_ce"], abs=1e-5)
    a, b = load_file(tmp_path / "one" / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-5)
