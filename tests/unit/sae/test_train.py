"""SAE training through SAELens: bad settings rejected, an interrupted run resumes from its checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from bilinear_lens.sae.config import SAETrainConfig, sae_hook_name
from bilinear_lens.sae.train import train_sae


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


def test_hook_in_of_a_swiglu_model_names_the_fix(tmp_path):
    from tests.unit.convert.test_swap import tiny_swiglu

    model = tiny_swiglu()
    tokens = torch.randint(0, model.cfg.d_vocab, (32, 16))
    with pytest.raises(ValueError, match=r"no hook 'blocks\.1\.mlp\.hook_in': layer 1 is a GatedMLP .*\(SwiGLU\).*"
                                         r"bilinear-lens convert.*--hook out"):
        train_sae(model, tokens, tmp_path / "sae", small_cfg(hook="in"))
    assert not (tmp_path / "sae").exists()


def test_killed_run_resumes_bit_identically(tiny_bilinear, tmp_path):
    from safetensors.torch import load_file
    from sae_lens import SAE

    from bilinear_lens.runs import InjectedFailure

    tokens = torch.randint(0, 97, (32, 16))
    cfg = small_cfg()  # 16 steps, a checkpoint every 4
    full = train_sae(tiny_bilinear, tokens, tmp_path / "full", cfg)
    out = tmp_path / "sae"
    with pytest.raises(InjectedFailure):
        train_sae(tiny_bilinear, tokens, out, cfg, fail_at_step=10)  # after the step-8 checkpoint
    assert (out / "checkpoint" / "state.json").is_file() and not (out / "cfg.json").exists()
    with pytest.raises(ValueError, match="already holds this train-sae run"):
        train_sae(tiny_bilinear, tokens, out, cfg)
    resumed = train_sae(tiny_bilinear, tokens, out, cfg, resume=True)
    assert resumed["training"]["resumed_from_step"] == 8
    a, b = load_file(tmp_path / "full" / "sae_weights.safetensors"), load_file(out / "sae_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(load_file(tmp_path / "full" / "sparsity.safetensors")["sparsity"],
                       load_file(out / "sparsity.safetensors")["sparsity"])
    assert resumed["l0"] == full["l0"] and resumed["explained_variance"] == full["explained_variance"]
    sae = SAE.load_from_disk(str(out))
    assert sae.cfg.metadata.hook_name == "blocks.1.hook_mlp_out" and sae.cfg.k == 4
    # the model's processing is recorded with the SAE (check_processing compares it on hook_in)
    assert sae.cfg.metadata.get("bilinear_lens_processing") == {"fold_ln": True}
    assert json.loads((out / "evals.json").read_text())["l0"] <= 4
    assert not (out / "checkpoint").exists()
    again = train_sae(tiny_bilinear, tokens, out, cfg, resume=True)  # finished: verified and returned
    assert again["l0"] == resumed["l0"]
    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "train-sae" and run["identity"]["hook_name"] == "blocks.1.hook_mlp_out"
    assert len(run["identity"]["model"]["sha256"]) == 64


def test_step_data_is_a_function_of_the_step(tiny_bilinear):
    from bilinear_lens.sae.train import step_activations

    tokens = torch.randint(3, 97, (32, 16))
    tokens[:, 0] = 1
    cfg = small_cfg()
    a = step_activations(tiny_bilinear, tokens, 5, cfg, bos=1)
    assert a.shape == (256, 32) and torch.equal(a, step_activations(tiny_bilinear, tokens, 5, cfg, bos=1))
    assert not torch.equal(a, step_activations(tiny_bilinear, tokens, 6, cfg, bos=1))
    _, cache = tiny_bilinear.run_with_cache(tokens, names_filter=cfg.hook_name)
    pool = cache[cfg.hook_name][:, 1:].reshape(-1, 32)  # every activation a step may draw
    assert all(((pool - row).abs().amax(1) == 0).any() for row in a[:20])


def test_non_finite_loss_stops_with_the_step(tiny_bilinear, tmp_path, monkeypatch):
    from sae_lens import SAETrainer

    original = SAETrainer.step

    def nan_at_6(self, batch):
        return original(self, batch * float("nan") if self.n_training_steps == 5 else batch)

    monkeypatch.setattr(SAETrainer, "step", nan_at_6)
    tokens = torch.randint(0, 97, (32, 16))
    with pytest.raises(ValueError, match=r"loss is nan at step 6.*last checkpoint") as e:
        train_sae(tiny_bilinear, tokens, tmp_path / "sae", small_cfg())
    assert "\n" not in str(e.value)
    assert (tmp_path / "sae" / "checkpoint" / "state.json").is_file()  # the step-4 checkpoint is kept
