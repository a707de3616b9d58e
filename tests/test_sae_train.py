"""SAE training through SAELens: bad settings rejected, an interrupted run resumes from its checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from bilinear_lens.sae.train import SAETrainConfig, sae_hook_name, train_sae


def small_cfg(**kw):
    base = dict(layer=1, hook="out", k=4, expansion=2, training_tokens=16 * 256, batch_size_tokens=256,
                context_size=16, eval_batches=1, eval_batch_prompts=4, n_checkpoints=3)
    base.update(kw)
    return SAETrainConfig(**base)


def test_hook_names():
    assert sae_hook_name(3, "in") == "blocks.3.mlp.hook_in"
    assert sae_hook_name(3, "out") == "blocks.3.hook_mlp_out"
    with pytest.raises(ValueError, match="'in' .* or 'out'"):
        sae_hook_name(0, "mid")


@pytest.mark.parametrize("kw,message", [
    (dict(architecture="nope"), "unknown SAE architecture 'nope'.*topk"),
    (dict(k=999), "k=999 must be between 1 and d_sae=64"),
    (dict(sae_kwargs={"l1_coefficient": 1.0}), "topk SAEs have no option"),
    (dict(context_size=8), "rows have 16 tokens but context_size is 8"),
])
def test_bad_settings_rejected_before_writing(tiny_bilinear, tmp_path, kw, message):
    tokens = torch.randint(0, 97, (32, 16))
    with pytest.raises(ValueError, match=message):
        train_sae(tiny_bilinear, tokens, tmp_path / "sae", small_cfg(**kw))
    assert not (tmp_path / "sae").exists()


def test_interrupted_training_resumes_from_checkpoint(tiny_bilinear, tmp_path, monkeypatch):
    from sae_lens import SAE, LanguageModelSAETrainingRunner
    from sae_lens.training.sae_trainer import SAETrainer

    tokens = torch.randint(0, 97, (32, 16))
    cfg = small_cfg()
    out = tmp_path / "sae"
    original = LanguageModelSAETrainingRunner.save_checkpoint
    calls = {"n": 0}

    def interrupt_after_first(self, checkpoint_path):
        original(self, checkpoint_path)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C right after a checkpoint

    monkeypatch.setattr(LanguageModelSAETrainingRunner, "save_checkpoint", interrupt_after_first)
    with pytest.raises(KeyboardInterrupt):
        train_sae(tiny_bilinear, tokens, out, cfg)
    assert not out.exists()  # nothing half-written
    ckpts = sorted(int(p.name) for p in (tmp_path / "sae.checkpoints").iterdir())
    assert ckpts and 0 < ckpts[-1] < cfg.training_tokens

    monkeypatch.setattr(LanguageModelSAETrainingRunner, "save_checkpoint", original)
    steps = {"n": 0}
    train_step = SAETrainer._train_step

    def counted(self, *a, **k):
        steps["n"] += 1
        return train_step(self, *a, **k)

    monkeypatch.setattr(SAETrainer, "_train_step", counted)
    summary = train_sae(tiny_bilinear, tokens, out, cfg)
    assert summary["training"]["resumed_from"].endswith(str(ckpts[-1]))
    assert steps["n"] == (cfg.training_tokens - ckpts[-1]) // cfg.batch_size_tokens  # only the rest
    assert SAE.load_from_disk(str(out)).cfg.metadata.hook_name == "blocks.1.hook_mlp_out"
    # the model's processing is recorded with the SAE (check_processing compares it on hook_in)
    assert SAE.load_from_disk(str(out)).cfg.metadata.get("bilinear_lens_processing") == {"fold_ln": True}
    assert json.loads((out / "evals.json").read_text())["l0"] <= 4
    assert not (tmp_path / "sae.checkpoints").exists()
