"""No code runs from a run folder: malicious pickles planted under every name a command used to read
(state.pt, counter.pt, accelerate's custom_checkpoint_0.pkl / optimizer.bin / random_states_0.pkl,
SAELens' trainer_state.pt, train-lm's cache .pt) are never loaded, and a checkpoint, cache or
tokenizer file replaced by one is refused with a one-line error naming the file. NaN: weights refused
by convert, a non-finite loss stops train-lm and convert naming the step and keeping the checkpoint."""

from __future__ import annotations

import builtins
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from bilinear_lens.cli import main
from bilinear_lens.runs import RunFolder
from tests.run_commands import COMMANDS_BY_NAME, error_lines

LEGACY = ("state.pt", "counter.pt", "custom_checkpoint_0.pkl", "optimizer.bin", "random_states_0.pkl",
          "trainer_state.pt", "pytorch_model.bin", "scheduler.bin", ".metadata")
TRAINING = ("train-lm", "convert", "train-sae")


class _Plant:
    """Unpickling this creates the marker file (as any code could run instead)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


def payload(marker: Path) -> bytes:
    return pickle.dumps(_Plant(marker))


@pytest.fixture(scope="module")
def interrupted(inputs, tmp_path_factory):
    """Per command: a run killed right after its first checkpoint (made on first use)."""
    made = {}

    def get(name):
        if name not in made:
            out = tmp_path_factory.mktemp("interrupted") / name
            original = RunFolder.checkpointed

            def once(self):
                original(self)
                raise KeyboardInterrupt

            mp = pytest.MonkeyPatch()
            mp.setattr(RunFolder, "checkpointed", once)
            try:
                with pytest.raises(KeyboardInterrupt):
                    main(COMMANDS_BY_NAME[name].argv(inputs, out))
            finally:
                mp.undo()
            assert (out / "checkpoint" / "state.json").is_file()
            made[name] = out
        return made[name]

    return get


def copy_of(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / folder.name
    shutil.copytree(folder, out)
    return out


def test_the_payload_does_run_code_when_unpickled(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(payload(marker))
    assert marker.exists()


@pytest.mark.parametrize("name", TRAINING)
def test_planted_pickles_are_never_loaded(name, inputs, interrupted, tmp_path, capsys):
    out = copy_of(interrupted(name), tmp_path)
    marker = tmp_path / "code-ran"
    for f in LEGACY:
        (out / "checkpoint" / f).write_bytes(payload(marker))
    for cache in (out / "cache").glob("*.safetensors") if (out / "cache").is_dir() else ():
        cache.with_suffix(".pt").write_bytes(payload(marker))
    assert main(COMMANDS_BY_NAME[name].argv(inputs, out) + ["--resume"]) == 0
    capsys.readouterr()
    assert not marker.exists()


@pytest.mark.parametrize("name", TRAINING)
@pytest.mark.parametrize("target", ["checkpoint/state.safetensors", "checkpoint/state.json"])
def test_checkpoint_replaced_by_a_pickle_is_refused_in_one_line(name, target, inputs, interrupted, tmp_path,
                                                               capsys):
    out = copy_of(interrupted(name), tmp_path)
    marker = tmp_path / "code-ran"
    (out / target).write_bytes(payload(marker))
    assert main(COMMANDS_BY_NAME[name].argv(inputs, out) + ["--resume"]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(out / target) in lines[0] and "--overwrite" in lines[0], lines
    assert not marker.exists()


@pytest.mark.parametrize("what", ["cache", "tokenizer", "truncated state"])
def test_corrupt_train_lm_files_name_the_file(what, inputs, interrupted, tmp_path, capsys):
    out = copy_of(interrupted("train-lm"), tmp_path)
    if what == "cache":
        victim = sorted((out / "cache").glob("*.safetensors"))[0]
    elif what == "tokenizer":
        victim = out / "tokenizer" / "tokenizer.json"
    else:
        victim = out / "checkpoint" / "state.safetensors"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    assert main(COMMANDS_BY_NAME["train-lm"].argv(inputs, out) + ["--resume"]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and (str(victim) in lines[0] or str(victim.parent) in lines[0]), lines


def test_convert_refuses_a_model_with_a_nan_weight(inputs, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "nan-model"
    shutil.copytree(inputs["swiglu"], model)
    weights = load_file(model / "model.safetensors")
    weights["model.layers.1.mlp.up_proj.weight"][3, 4] = float("nan")
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    argv = COMMANDS_BY_NAME["convert"].argv(inputs, tmp_path / "out")
    argv[argv.index("--model") + 1] = str(model)
    assert main(argv) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "model.layers.1.mlp.up_proj.weight" in lines[0] and "1 NaN" in lines[0], lines
    assert not (tmp_path / "out").exists()
    # a model given in memory is checked by the converter itself
    from bilinear_lens.config import from_args
    from bilinear_lens.convert.cli import add_commands
    from bilinear_lens.convert.config import ConvertConfig
    from bilinear_lens.convert.finetune import run_convert
    from tests.unit.convert.test_swap import tiny_swiglu
    import argparse
    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    model = tiny_swiglu()
    with torch.no_grad():
        model.blocks[1].mlp.W_in[3, 4] = float("inf")
    with pytest.raises(ValueError, match=r"tensor blocks\.1\.mlp\.W_in holds 0 NaN and 1 inf"):
        run_convert(from_args(ConvertConfig, parser.parse_args(argv)), model=model,
                    tokenizer=AutoTokenizer.from_pretrained(inputs["swiglu"]))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["train-lm", "convert"])
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(name, inputs, tmp_path, monkeypatch,
                                                                        capsys):
    import bilinear_lens.training.loop as loop

    calls = {"n": 0}
    real = loop.lm_loss

    def nan_from_the_third_step(logits, tokens, teacher, distill):  # the training loss of step 3 on is NaN
        calls["n"] += 1
        loss, ce = real(logits, tokens, teacher, distill)
        return (loss * float("nan"), ce) if calls["n"] > 2 else (loss, ce)

    monkeypatch.setattr(loop, "lm_loss", nan_from_the_third_step)  # the one loop of train-lm and convert
    out = tmp_path / "out"
    assert main(COMMANDS_BY_NAME[name].argv(inputs, out)) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "at step 3" in lines[0] and "is kept" in lines[0], lines
    assert (out / "checkpoint" / "state.json").is_file() and not (out / "model").exists()
