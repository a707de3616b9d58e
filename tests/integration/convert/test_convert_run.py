"""The conversion loop on a tiny SwiGLU model: resume after a crash, export, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bilinear_lens import BilinearMLP
from bilinear_lens.convert.config import ConvertConfig
from bilinear_lens.convert.finetune import run_convert
from bilinear_lens.runs import InjectedFailure
from tests.unit.convert.test_swap import tiny_swiglu

STORIES = [f"Once upon a time there was a {a} {b} who liked to {c}. The end."
           for a in ("little", "big", "happy", "sad") for b in ("cat", "dog", "girl", "boy")
           for c in ("run", "play", "sing")]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from tests.conftest import shared_path

    return AutoTokenizer.from_pretrained(shared_path("models", "stories260k"))


def write_stories(path: Path, stories) -> str:
    path.write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return str(path)


def config(tmp_path: Path, out: str, **kw) -> ConvertConfig:
    data = write_stories(tmp_path / "train.txt", STORIES)
    val = write_stories(tmp_path / "val.txt", STORIES[:6])
    base = dict(model="unused", data=data, val_data=val, out=str(tmp_path / out), tokens=6 * 4 * 16,
                seq_len=16, batch_size=4, distill=0.5, lr=3e-3, warmup=1, anneal_frac=0.5,
                checkpoint_every=2, eval_every=3, progress=False)
    base.update(kw)
    return ConvertConfig.flat(**base)


def final_params(out: Path) -> dict:
    return load_file(str(out / "model" / "model.safetensors"))


def test_killed_run_resumes_to_the_same_model(tmp_path, tokenizer):
    # uninterrupted: 6 steps
    model = tiny_swiglu()
    full = run_convert(config(tmp_path, "full"), model=model, tokenizer=tokenizer)
    assert all(type(b.mlp) is BilinearMLP for b in model.blocks)
    assert [h["beta"] for h in full["history"]] == [pytest.approx(2 / 3), pytest.approx(1 / 3), 0, 0, 0, 0]
    # crash in the middle of step 3 (after the step-2 checkpoint), then resume with a fresh model
    with pytest.raises(InjectedFailure):
        run_convert(config(tmp_path, "crash", fail_at_step=3), model=tiny_swiglu(), tokenizer=tokenizer)
    assert not (tmp_path / "crash" / "model").exists() and (tmp_path / "crash" / "checkpoint").exists()
    resumed = run_convert(config(tmp_path, "crash", resume=True), model=tiny_swiglu(), tokenizer=tokenizer)
    assert resumed["steps_this_session"] == 4  # steps 2..5 redone, steps 0..1 kept
    a, b = final_params(tmp_path / "full"), final_params(tmp_path / "crash")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["train_ce"] for h in full["history"]] == [h["train_ce"] for h in resumed["history"]]
    for key in ("val_loss_original", "val_loss_start", "val_loss_final"):
        assert resumed[key] == pytest.approx(full[key], abs=1e-6)
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert metrics["mode"] == "bilinear" and metrics["tokens"] == 6 * 4 * 16
    assert metrics["val_loss_final"] < metrics["val_loss_start"]  # finetuning recovered something


def test_export_reloads_in_transformers_with_the_same_logits(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    model = tiny_swiglu()
    run_convert(config(tmp_path, "exp", tokens=2 * 4 * 16), model=model, tokenizer=tokenizer)
    cfg = json.loads((tmp_path / "exp" / "model" / "config.json").read_text())
    assert cfg["hidden_act"] == "linear" and cfg["architectures"] == ["LlamaForCausalLM"]
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "exp" / "model").eval()
    tokens = torch.randint(0, 512, (2, 10))
    with torch.no_grad():
        ref = model(tokens).log_softmax(-1)
        got = hf(tokens).logits.log_softmax(-1)
    assert (ref - got).abs().max() < 1e-4


def test_baseline_keeps_the_silu_gate(tmp_path, tokenizer):
    model = tiny_swiglu()
    m = run_convert(config(tmp_path, "base", baseline=True, tokens=2 * 4 * 16), model=model,
                    tokenizer=tokenizer)
    assert m["mode"] == "baseline" and all(h["beta"] == 1.0 for h in m["history"])
    assert m["val_loss_start"] == m["val_loss_original"]
    assert json.loads((tmp_path / "base" / "model" / "config.json").read_text())["hidden_act"] == "silu"


def test_clear_errors(tmp_path, tokenizer, tiny_bilinear):
    with pytest.raises(ValueError, match="already bilinear"):
        run_convert(config(tmp_path, "a"), model=tiny_bilinear, tokenizer=tokenizer)
    from tests.conftest import tiny_cfg
    from transformer_lens import HookedTransformer

    small_vocab = HookedTransformer(tiny_cfg(act_fn="silu", d_vocab=97))
    with pytest.raises(ValueError, match="does not match the model"):
        run_convert(config(tmp_path, "b"), model=small_vocab, tokenizer=tokenizer)
    empty = write_stories(tmp_path / "empty.txt", [])
    with pytest.raises(ValueError, match="empty"):
        run_convert(config(tmp_path, "c", data=empty), model=tiny_swiglu(), tokenizer=tokenizer)
    few = write_stories(tmp_path / "few.txt", STORIES[:2])
    with pytest.raises(ValueError, match="too small"):
        run_convert(config(tmp_path, "d", data=few), model=tiny_swiglu(), tokenizer=tokenizer)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_convert(config(tmp_path, "e", data=str(tmp_path / "missing.txt")), model=tiny_swiglu(),
                    tokenizer=tokenizer)


def test_output_folder_of_another_run_is_refused(tmp_path, tokenizer):
    run_convert(config(tmp_path, "o", tokens=4 * 16), model=tiny_swiglu(), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="different conversion run.*lr"):
        run_convert(config(tmp_path, "o", tokens=4 * 16, lr=1e-2), model=tiny_swiglu(), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="different conversion run.*lr"):  # --resume does not bypass it
        run_convert(config(tmp_path, "o", tokens=4 * 16, lr=1e-2, resume=True), model=tiny_swiglu(),
                    tokenizer=tokenizer)
    with pytest.raises(ValueError, match="already holds this conversion run"):
        run_convert(config(tmp_path, "o", tokens=4 * 16), model=tiny_swiglu(), tokenizer=tokenizer)
    m = run_convert(config(tmp_path, "o", tokens=4 * 16, lr=1e-2, overwrite=True), model=tiny_swiglu(),
                    tokenizer=tokenizer)
    assert m["config"]["optim"]["lr"] == 1e-2
    assert json.loads((tmp_path / "o" / "run.json").read_text())["identity"]["optim"]["lr"] == 1e-2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a bilinear-lens conversion run"):
        run_convert(config(tmp_path, "other"), model=tiny_swiglu(), tokenizer=tokenizer)


def test_cli_reports_clear_error_for_a_bilinear_model(tmp_path, capsys, tiny_bilinear, shared):
    from bilinear_lens import save_pretrained
    from bilinear_lens.cli import main

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(shared("models", "stories260k"))
    torch.manual_seed(0)
    from tests.conftest import tiny_cfg
    from transformer_lens import HookedTransformer

    save_pretrained(HookedTransformer(tiny_cfg(d_vocab=512)), tmp_path / "bil", tok)
    data = write_stories(tmp_path / "train.txt", STORIES)
    rc = main(["convert", "--model", str(tmp_path / "bil"), "--data", data, "--out", str(tmp_path / "o"),
               "--no-progress"])
    assert rc == 1
    assert "already bilinear" in capsys.readouterr().err


def test_gradient_accumulation_matches_the_large_batch(tmp_path, tokenizer):
    one = run_convert(config(tmp_path, "acc1", tokens=3 * 4 * 16, distill=0.0), model=tiny_swiglu(),
                      tokenizer=tokenizer)
    two = run_convert(config(tmp_path, "acc2", tokens=3 * 4 * 16, distill=0.0, batch_size=2, grad_accum=2),
                      model=tiny_swiglu(), tokenizer=tokenizer)
    assert one["steps"] == two["steps"] == 3
    a, b = final_params(tmp_path / "acc1"), final_params(tmp_path / "acc2")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_bf16_and_gradient_checkpointing_run(tmp_path, tokenizer):
    model = tiny_swiglu()
    before = {k: v.clone() for k, v in model.state_dict().items() if "W_" in k}
    m = run_convert(config(tmp_path, "bf", tokens=2 * 4 * 16, bf16=True, grad_checkpointing=True),
                    model=model, tokenizer=tokenizer)
    assert all(torch.isfinite(torch.tensor(h["train_ce"])) for h in m["history"])
    assert model.blocks[0].mlp.W_in.dtype == torch.float32  # master weights stay float32
    mem = m["memory_bytes_per_process"]
    assert mem["teacher"] == 2 * sum(p.numel() for p in tiny_swiglu().parameters())  # a bf16 teacher
    changed = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert "blocks.0.mlp.W_gate" in changed and "blocks.1.attn.W_Q" in changed


def test_model_from_a_folder_or_the_hub_cache_and_clear_errors(tmp_path, monkeypatch, llama_dir):
    from bilinear_lens.convert.finetune import resolve_model_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="model folder .* does not exist; pass a local Llama folder"):
        resolve_model_folder(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="someone/no-such-llama: no such local folder, and getting it "
                       "from the Hugging Face Hub failed"):
        resolve_model_folder("someone/no-such-llama")
    # a repo already in the Hub cache resolves offline, as a user's downloaded TinyLlama would
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-llama" / "snapshots" / ("0" * 40)
    src, _ = llama_dir("src", hidden_act="silu")
    snapshot.mkdir(parents=True)
    for f in src.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (cache / "models--someone--tiny-llama" / "refs").mkdir()
    (cache / "models--someone--tiny-llama" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    assert Path(resolve_model_folder("someone/tiny-llama")) == snapshot
    from bilinear_lens.convert.finetune import load_swiglu_model

    model, tok = load_swiglu_model(config(tmp_path, "x", model="someone/tiny-llama"))
    assert model.cfg.act_fn == "silu" and model.cfg.gated_mlp and tok.vocab_size == model.cfg.d_vocab


def test_offline_dataset_name_gives_a_clear_error(monkeypatch):
    from bilinear_lens.text.sources import read_texts

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="neither a local file nor a loadable Hugging Face dataset .offline mode"):
        read_texts("someone/no-such-dataset-xyz")


def test_cli_arguments_map_onto_the_config():
    import argparse

    from bilinear_lens.config import from_args
    from bilinear_lens.convert.cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", "--model", "m", "--data", "d", "--out", "o", "--baseline",
                              "--distill", "0.5", "--tokens", "1000", "--anneal-frac", "0.5", "--grad-accum", "4",
                              "--bf16", "--threads", "1", "--lr", "0.01", "--no-progress"])
    cfg = from_args(ConvertConfig, args)
    assert (cfg.mode, cfg.distill, cfg.tokens, cfg.anneal.anneal_frac, cfg.loop.grad_accum, cfg.loop.bf16,
            cfg.run.threads, cfg.optim.lr, cfg.run.progress, cfg.run.out) == (
        "baseline", 0.5, 1000, 0.5, 4, True, 1, 0.01, False, "o")
    default = from_args(ConvertConfig, parser.parse_args(["convert", "--model", "m", "--data", "d", "--out", "o"]))
    assert default.mode == "bilinear" and default == ConvertConfig.flat(model="m", data="d", out="o")
    # every leaf field of the config is a flag of the same name, and nothing else is
    flags = {a.dest for a in parser._subparsers._group_actions[0].choices["convert"]._actions} - {"help"}
    from bilinear_lens.config import fields_of
    assert flags == set(fields_of(ConvertConfig)) - {"stop_after_steps", "fail_at_step"}
