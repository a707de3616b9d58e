"""Data-parallel conversion: two CPU processes (``torchrun``, gloo) behave as one process with the
global batch, survive a crash mid-step and resume, and stop together on a refused output folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bilinear_lens.convert.finetune import run_convert
from tests.integration.convert.test_convert_run import config, final_params
from tests.unit.convert.test_swap import tiny_swiglu

ROOT = Path(__file__).resolve().parents[3]
DRIVER = """
import json, sys
from transformers import AutoTokenizer
from bilinear_lens.convert.config import ConvertConfig
from bilinear_lens.convert.finetune import run_convert
from bilinear_lens.runs import InjectedFailure
from tests.unit.convert.test_swap import tiny_swiglu

cfg = ConvertConfig.from_dict(json.loads(sys.argv[1]))
try:
    run_convert(cfg, model=tiny_swiglu(), tokenizer=AutoTokenizer.from_pretrained(sys.argv[2]))
except InjectedFailure:
    sys.exit(3)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path: Path, cfg, tokenizer_dir: str, launcher: str = "torchrun") -> subprocess.CompletedProcess:
    """Two processes of the driver, started by ``torchrun`` or by ``accelerate launch`` (whose
    multi-GPU launcher is the one that starts several processes; here they run on the CPU)."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("ACCELERATE_USE_CPU", None)  # the converter must form the group by itself
    port = free_port()
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2",
               "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", f"--main_process_port={port}"]
    cmd += [str(driver), json.dumps(cfg.to_dict()), tokenizer_dir]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    from tests.conftest import shared_path

    return str(shared_path("models", "stories260k"))


@pytest.mark.parametrize("fsdp, launcher", [(False, "accelerate"), (True, "torchrun")],
                         ids=["ddp-accelerate-launch", "fsdp-torchrun"])
def test_two_processes_equal_one_with_the_global_batch_and_resume(tmp_path, tokenizer_dir, fsdp, launcher):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    one = run_convert(config(tmp_path, "one"), model=tiny_swiglu(), tokenizer=tok)  # batch 4, 6 steps
    # two processes x batch 2, killed in the middle of step 3, then resumed
    # (with per-block gradient checkpointing, which must not change the result)
    crash = config(tmp_path, "ddp", batch_size=2, fail_at_step=3, fsdp=fsdp, grad_checkpointing=True)
    res = launch(tmp_path, crash, tokenizer_dir, launcher)
    assert res.returncode != 0, res.stderr[-2000:]
    out = tmp_path / "ddp"
    assert (out / "checkpoint").exists() and not (out / "model").exists()
    written = sorted(p.name for p in (out / "checkpoint").iterdir())
    # sharded or not: one pickle-free state (the full model and optimiser gathered on the main process)
    assert written == ["state.json", "state.safetensors"], written
    rng = json.loads((out / "checkpoint" / "state.json").read_text())["state"]["rng"]
    assert len(rng) == 2  # every process's RNG state
    crash = crash.updated(fail_at_step=None, resume=True)
    res = launch(tmp_path, crash, tokenizer_dir, launcher)
    assert res.returncode == 0, res.stderr[-3000:]
    two = json.loads((out / "metrics.json").read_text())
    assert two["processes"] == 2 and two["steps"] == one["steps"] == 6 and two["tokens"] == one["tokens"]
    assert two["steps_this_session"] == 4  # steps 0..1 came from the checkpoint
    # training state per process: sharded -> about half of one process's, replicated -> all of it
    m1, m2 = one["memory_bytes_per_process"], two["memory_bytes_per_process"]
    for part in ("weights", "gradients", "optimizer", "teacher"):
        ratio = m2[part] / m1[part]
        assert (0.45 < ratio < 0.6) if fsdp else ratio == 1.0, (part, ratio)
    # per-step CE is the mean over both processes' halves of the same global batch
    for h1, h2 in zip(one["history"], two["history"]):
        assert h2["train_ce"] == pytest.approx(h1["train_ce"], abs=1e-5)
        assert h2["beta"] == h1["beta"]
    a, b = final_params(tmp_path / "one"), final_params(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert two["val_loss_final"] == pytest.approx(one["val_loss_final"], abs=1e-5)
    if fsdp:  # a sharded checkpoint is refused, by name, by an unsharded resume
        crash = crash.updated(fsdp=False)
        with pytest.raises(ValueError, match="written with --fsdp; resume with the same setting"):
            run_convert(crash, model=tiny_swiglu(), tokenizer=tok)


def test_a_refused_folder_stops_every_process_with_the_message(tmp_path, tokenizer_dir):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's files")
    res = launch(tmp_path, config(tmp_path, "taken", batch_size=2), tokenizer_dir)
    assert res.returncode != 0
    assert res.stderr.count("not a bilinear-lens conversion run") >= 2  # both ranks raise, neither hangs
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_fsdp_needs_several_processes_and_accelerates_fsdp_plugin_is_refused(tmp_path, monkeypatch):
    tok = None  # refused before the tokenizer is used
    with pytest.raises(ValueError, match="--fsdp shards the model over several processes.*drop --fsdp"):
        run_convert(config(tmp_path, "one", fsdp=True), model=tiny_swiglu(), tokenizer=tok)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="pass --fsdp to shard every block"):
        run_convert(config(tmp_path, "two"), model=tiny_swiglu(), tokenizer=tok)
    assert not (tmp_path / "one").exists() and not (tmp_path / "two").exists()


def test_cpu_copy_is_an_independent_equal_model():
    from bilinear_lens.training.sharding import cpu_copy

    model = tiny_swiglu()
    copy = cpu_copy(model)
    pairs = list(zip(model.state_dict().items(), copy.state_dict().items()))
    assert len(pairs) == len(model.state_dict()) and all(k1 == k2 and torch.equal(a, b) for (k1, a), (k2, b) in pairs)
    assert not set(map(id, model.parameters())) & set(map(id, copy.parameters()))
    tokens = torch.randint(0, 512, (2, 9))
    assert torch.equal(model(tokens), copy(tokens))
    with torch.no_grad():
        copy.blocks[0].mlp.W_in.add_(1.0)
    assert not torch.equal(model.blocks[0].mlp.W_in, copy.blocks[0].mlp.W_in)
