"""Runs started by the release before the shared training loop: train-lm and convert runs (whose checkpoints
and settings changed) are refused with one line that says why and what to do; --overwrite replaces them.
mnist and train-sae runs keep their settings' names, so their identities (and resumes) are unchanged."""

from __future__ import annotations

import json

import pytest

from bilinear_lens.cli import main
from bilinear_lens.runs import RunError, open_run
from tests.run_commands import COMMANDS_BY_NAME, error_lines

# run.json as the previous release wrote it (format run/1, no version; flat settings)
OLD = {
    "train-lm": {"train_data": "train.txt", "val_data": None, "mlp": "bilinear", "d_model": 16, "n_layers": 1,
                 "n_heads": 2, "d_mlp": None, "n_ctx": 32, "vocab_size": 280, "tokenizer": None, "lr": 0.005,
                 "min_lr_ratio": 0.1, "warmup_steps": None, "weight_decay": 0.1, "betas": [0.9, 0.95],
                 "grad_clip": 1.0, "batch_size": 4, "max_tokens": 384, "epochs": None, "seed": 0},
    "conversion": {"model": "m", "data": "d", "tokens": 192, "mode": "bilinear", "distill": 0.0, "lr": 0.001},
}


def files(folder):
    """Every file of the run (the lock file every open leaves in a run folder aside)."""
    return {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".bl-lock"}


def old_run(folder, kind):
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"bilinear_lens": "run/1", "kind": kind, "identity": OLD[kind]}))
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "state.json").write_text("{}")
    return files(folder)


@pytest.mark.parametrize("command, kind", [("train-lm", "train-lm"), ("convert", "conversion")])
def test_an_unfinished_run_of_the_earlier_release_is_refused_then_replaced(command, kind, inputs, tmp_path, capsys):
    out = tmp_path / "old"
    before = old_run(out, kind)
    argv = COMMANDS_BY_NAME[command].argv(inputs, out)
    for extra in (["--resume"], []):
        assert main(argv + extra) == 1
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and f"holds a {kind} run of format 1, written by another bilinear-lens release; " \
            "this release (0.2.0) writes format 2" in lines[0] and "finish it with the release that started it, " \
            "or pass --overwrite" in lines[0], lines
        assert files(out) == before  # untouched
    assert main(argv + ["--overwrite"]) == 0
    doc = json.loads((out / "run.json").read_text())
    assert doc["version"] == 2 and doc["finished"] and (out / "model" / "config.json").is_file()


def test_a_run_of_a_newer_format_is_refused_by_an_older_command(tmp_path):
    with open_run(tmp_path / "r", "thing", {"a": 1}, version=3):
        pass
    with pytest.raises(RunError, match=r"holds a thing run of format 3, written by bilinear-lens 0\.2\.0; this "
                       r"release \(0\.2\.0\) writes format 2"):
        open_run(tmp_path / "r", "thing", {"a": 1}, resume=True, version=2)


def test_mnist_and_train_sae_identities_keep_the_earlier_release_s_names():
    """Unchanged identity keys: their runs from before the change still resume (version 1, same settings)."""
    from bilinear_lens.image.config import StudyConfig
    from bilinear_lens.sae.config import SAETrainConfig

    assert set(StudyConfig().identity()) == {
        "dataset", "data", "epochs", "d_hidden", "n_layers", "residual", "batch_size", "lr", "weight_decay",
        "input_noise", "latent_noise", "seed", "n_train", "n_test", "unregularised"}
    assert set(SAETrainConfig(layer=1).identity()) == {
        "layer", "hook", "architecture", "k", "expansion", "training_tokens", "context_size", "batch_size_tokens",
        "lr", "lr_end", "n_checkpoints", "dead_feature_window", "feature_sampling_window", "eval_batches",
        "eval_batch_prompts", "seed", "sae_kwargs", "hook_name"}
