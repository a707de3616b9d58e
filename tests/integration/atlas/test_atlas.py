"""The eigenvector atlas: exactness against dense eigh, readings and contexts against brute force,
the reader, kill -9 / resume and 2-process runs giving the same bytes as one uninterrupted run."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bilinear_lens.atlas import Atlas, build_atlas, certified_topk
from bilinear_lens.atlas import store
from bilinear_lens.cli import main
from bilinear_lens.decomposition.weights import bilinear_weights

REPO = Path(__file__).resolve().parents[3]


def model_folder(path: Path) -> Path:
    """A random 2-layer bilinear Llama folder (vocab 97, d_model 32, d_mlp 64, 4 heads, non-trivial norm
    weights) with its word tokenizer (w3 .. w96), at TransformerLens' initialisation scale."""
    from tests.conftest import make_llama_dir

    make_llama_dir(path, vocab=97, n_kv=4, initializer_range=0.8 / 32 ** 0.5)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The model folder, the model as the atlas command loads it (TransformerLens 3.x: HookedTransformer,
    4.x: TransformerBridge in compatibility mode), a text file, a built atlas."""
    from bilinear_lens.atlas.cli import load_source

    root = tmp_path_factory.mktemp("atlas")
    model_folder(root / "model")
    rng = random.Random(0)
    data = root / "text.txt"
    data.write_text("".join(" ".join(f"w{rng.randint(3, 96)}" for _ in range(40)) + "\n<|endoftext|>\n"
                            for _ in range(30)), encoding="utf-8")
    model, tokenizer = load_source(str(root / "model"), "cpu")
    atlas = build_atlas(model, 1, str(root / "atlas"), k=4, data=str(data), batch=16, rows=12, ctx=32,
                        tokenizer=tokenizer, progress=False, source="tiny")
    return root, model, tokenizer, data, atlas


def _dense(model, layer, u):
    from bilinear_lens.decomposition.interaction import interaction_from_weights

    w = bilinear_weights(model, layer, dtype=torch.float64)
    Q = interaction_from_weights(w, u.double())
    e, v = torch.linalg.eigh(Q)
    order = e.abs().argsort(-1, descending=True)
    return Q, e.gather(-1, order), v.gather(-1, order.unsqueeze(1).expand_as(v)).transpose(1, 2)


@pytest.fixture(scope="module")
def lanczos_atlas(setup):
    """The same layer's atlas forced onto the Lanczos path (warm-started, band of 2), no contexts."""
    root, model, tokenizer, _, _ = setup
    return build_atlas(model, 1, str(root / "atlas_lanczos"), k=4, batch=16, warm=8, solver="lanczos", block=2,
                       tokenizer=tokenizer, progress=False, source="tiny")


@pytest.mark.parametrize("path", ["auto", "lanczos"])
def test_eigenpairs_equal_dense_eigh_truncated(setup, lanczos_atlas, path):
    _, model, _, _, atlas = setup
    from bilinear_lens import eigendecompose

    if path == "lanczos":
        atlas = lanczos_atlas
    assert atlas.index["solver"] == ("dense" if path == "auto" else "lanczos")  # d_model 32: dense is cheaper

    idx = list(range(0, len(atlas), 7))
    eig = atlas.eigen(idx)
    full = eigendecompose(model, 1, eig.directions.double(), k=None, dtype=torch.float64)
    Q, e, v = _dense(model, 1, eig.directions)
    assert torch.allclose(full.values, e)
    ref = full.values[:, : atlas.k]
    rel = (eig.values.double() - ref).abs() / ref.abs()
    assert rel.max() < 1e-5
    # vectors, where the spectrum is separated (relative gap to both neighbours > 1e-2)
    gaps = (full.values[:, :-1] - full.values[:, 1:]).abs() / full.values[:, :1].abs()
    sep = torch.minimum(torch.cat([torch.full_like(gaps[:, :1], 1.0), gaps[:, : atlas.k - 1]], 1), gaps[:, : atlas.k]) > 1e-2
    cos = (eig.vectors.double() * full.vectors[:, : atlas.k]).sum(-1).abs()
    assert sep.sum() > len(idx)  # the check is not vacuous
    assert cos[sep].min() > 0.9999
    # every returned pair is certified by its full-space residual
    V = eig.vectors.double()
    r = (torch.einsum("nij,nkj->nki", Q, V) - eig.values.double().unsqueeze(-1) * V).norm(dim=-1)
    assert (r / e[:, :1].abs()).max() <= 1e-4 * 1.01
    assert atlas.residuals().max() <= 1e-4


def test_dense_and_lanczos_atlases_agree(setup, lanczos_atlas):
    _, _, _, _, dense = setup
    assert dense.index["solver"] == "dense" and dense.index["warm"] == 0 and lanczos_atlas.index["block"] == 2
    a, b = dense.eigen(list(range(len(dense)))), lanczos_atlas.eigen(list(range(len(dense))))
    assert torch.allclose(a.values, b.values, rtol=1e-5, atol=1e-7 * float(a.values.abs().max()))
    _, e, _ = _dense(setup[1], 1, a.directions)  # the whole spectrum: gaps to both neighbours
    gaps = (e[:, :-1].abs() - e[:, 1:].abs()) / e[:, :1].abs()
    sep = torch.minimum(torch.cat([torch.ones_like(gaps[:, :1]), gaps[:, :3]], 1), gaps[:, :4]) > 1e-2
    assert sep.sum() > sep.numel() // 2
    assert (a.vectors * b.vectors).sum(-1).abs()[sep].min() > 0.9999
    assert dense.residuals().max() <= 1e-4 and lanczos_atlas.residuals().max() <= 1e-4


def test_solver_float64_matches_and_counts(setup):
    _, model, _, _, _ = setup
    w = bilinear_weights(model, 0, dtype=torch.float64)
    u = torch.randn(20, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    res = certified_topk(w, u, 5, tol=1e-9)
    _, e, _ = _dense(model, 0, u)
    assert torch.allclose(res.values, e[:, :5], rtol=1e-8, atol=0)
    assert bool(res.converged.all()) and res.residuals.max() <= 1e-9
    with pytest.raises(ValueError, match="out of range"):
        certified_topk(w, u, 33)


def test_readings_and_summary_against_brute_force(setup):
    _, model, _, _, atlas = setup
    i = 11
    ent = atlas.entry(i)
    Q, e, _ = _dense(model, 1, ent["directions"][None])
    assert torch.allclose(ent["fro"].double(), Q.norm(dim=(1, 2))[0], rtol=1e-5)
    assert torch.allclose(ent["low_rank"].double(), e[0, :2].abs().sum(), rtol=1e-5)
    assert torch.allclose(ent["energy"].double(), e[0, :4].square().sum() / e[0].square().sum(), rtol=1e-4)
    x = model.blocks[1].ln2(model.W_E[None])[0].detach()  # every token through ln2 (direct path)
    proj = ent["vectors"] @ x.T  # [k, V]
    top = proj.abs().topk(10, dim=-1).indices
    assert torch.equal(ent["tokens.direct.ids"].long(), top)
    assert torch.allclose(ent["tokens.direct.proj"], proj.gather(-1, top), atol=1e-6)
    W_U = model.W_U.detach()
    logits = ent["directions"] @ (W_U - W_U.mean(1, keepdim=True))
    assert torch.equal(ent["output.ids"].long(), logits.topk(10).indices)
    # the vocab direction of token t is its centred unembedding column
    assert torch.allclose(atlas.direction(i), W_U[:, i] - W_U.mean(1))


def test_contexts_are_the_top_rows_by_brute_force(setup):
    _, model, tokenizer, data, atlas = setup
    from bilinear_lens.text.tokens import text_blocks

    tokens = text_blocks(str(data), tokenizer, 32, max_rows=12)
    _, cache = model.run_with_cache(tokens, names_filter="blocks.1.mlp.hook_in")
    x = cache["blocks.1.mlp.hook_in"]  # [rows, ctx, d]: all activations, fine at this size
    for i in (0, 40, 96):
        ent = atlas.entry(i)
        acts = ent["values"] * (x @ ent["vectors"].T).square()  # [rows, ctx, k]
        peak = acts.abs().amax(1)  # [rows, k]
        for e in range(atlas.k):
            rows = peak[:, e].topk(5).indices
            assert torch.equal(ent["contexts.row"][e].long(), rows)
            r, p = int(rows[0]), int(ent["contexts.pos"][e, 0])
            assert torch.allclose(ent["contexts.act"][e, 0], acts[r, p, e], rtol=1e-5)
            window = ent["contexts.acts"][e, 0]
            assert torch.allclose(window[12], acts[r, p, e], rtol=1e-5)  # the peak sits after 12 tokens
            assert int(ent["contexts.tokens"][e, 0, 12]) == int(tokens[r, p])


def test_reader_lookup_rank_and_hooks(setup):
    _, model, tokenizer, _, atlas = setup
    import bilinear_lens as bl

    assert len(atlas) == 97 and atlas.k == 4
    i = atlas.for_token("w42")
    assert atlas.labels[i] == "w42" and atlas.for_token(42) == i
    order = atlas.rank(by="low_rank")
    lr = atlas.summary("low_rank")
    assert sorted(order) == list(range(97)) and bool((lr[order][:-1] >= lr[order][1:]).all())
    with pytest.raises(KeyError, match="not SAE features"):
        atlas.for_feature(3)
    eig = atlas.eigen(i)
    tokens = torch.randint(0, 97, (1, 8))
    with bl.attach_eigenvectors(model, 1, eig.to(dtype=torch.float32)):
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_eig"))
    assert cache["blocks.1.mlp.hook_eig"].shape == (1, 8, 1, 4)
    again = Atlas.load(atlas.root)
    assert torch.equal(again.eigen(i).vectors, eig.vectors)


def _cli(args, env=None, launcher=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    cmd = (launcher or [sys.executable, "-m", "bilinear_lens.cli"]) + ["atlas", *args, "--no-progress"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _shards(root):
    n = store.read_index(root)["n_shards"]
    return [store.load_shard(root, i) for i in range(n)], [store.shard_js_path(root, i).read_bytes() for i in range(n)]


@pytest.fixture(scope="module")
def reference_run(setup):
    root = setup[0]
    args = ["--model", str(root / "model"), "--layer", "0", "--k", "3", "--batch", "16", "--warm", "8", "--top", "5",
            "--solver", "lanczos"]  # the path with state: the warm-start basis
    ref = root / "ref"
    res = _cli([*args, "--out", str(ref)])
    assert res.returncode == 0, res.stderr[-2000:]
    return args, ref


def test_kill_and_resume_give_the_same_atlas(setup, reference_run):
    args, ref = reference_run
    out = setup[0] / "killed"
    res = _cli([*args, "--out", str(out)], env={"BILINEAR_LENS_ATLAS_KILL_AT": "3"})
    assert res.returncode == -9
    assert store.shard_done(out, 2) and not store.shard_done(out, 3)
    res = _cli([*args, "--out", str(out)])
    assert res.returncode == 1 and "--resume" in res.stderr  # refuses to silently continue
    res = _cli([*args, "--out", str(out), "--resume"])
    assert res.returncode == 0, res.stderr[-2000:]
    (a, ja), (b, jb) = _shards(ref), _shards(out)
    assert all(store.tensors_equal(x, y) for x, y in zip(a, b)) and ja == jb
    assert (ref / "data" / "index.js").read_bytes() == (out / "data" / "index.js").read_bytes()
    assert not list(out.rglob(".bl-tmp-*"))
    res = _cli([*args, "--out", str(out), "--resume"])  # finished: verified and returned
    assert res.returncode == 0


def test_two_processes_give_the_same_atlas(setup, reference_run):
    args, ref = reference_run
    out = setup[0] / "two"
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun not installed")
    res = _cli([*args, "--out", str(out)], launcher=[torchrun, "--nproc_per_node", "2", "--master_port", "29517",
                                                     "-m", "bilinear_lens.cli"])
    assert res.returncode == 0, res.stderr[-3000:]
    (a, ja), (b, jb) = _shards(ref), _shards(out)
    assert len(a) == 7 and all(store.tensors_equal(x, y) for x, y in zip(a, b)) and ja == jb


def _error_lines(capsys) -> list:
    return [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
            if "error" in line.lower() or "Traceback" in line]


def test_bad_inputs_are_one_line_errors(setup, capsys):
    root = setup[0]
    assert main(["atlas", "--model", str(root / "model"), "--layer", "1", "--out", str(root / "bad"),
                 "--directions", "words", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "--directions 'words' is not one of" in err and len(err.strip().splitlines()) == 1
    assert not (root / "bad").exists()
    assert main(["atlas", "--model", str(root / "model"), "--layer", "1", "--out", str(root / "bad"),
                 "--directions", "diff:w5,zz zz", "--no-progress"]) == 1
    assert "not one" in capsys.readouterr().err
    for layer, why in (("2", "layer 2 is out of range: the model has 2 layers"), ("-3", "--layer must be >= 0, got -3")):
        assert main(["atlas", "--model", str(root / "model"), "--layer", layer, "--out", str(root / "bad"),
                     "--no-progress"]) == 1
        errors = _error_lines(capsys)  # (the model loads first: transformers' loading bars come before)
        assert len(errors) == 1 and why in errors[0] and not (root / "bad").exists()
    from tests.conftest import make_llama_dir

    swiglu = root / "swiglu"
    make_llama_dir(swiglu, hidden_act="silu", vocab=97)
    assert main(["atlas", "--model", str(swiglu), "--layer", "1", "--out", str(root / "bad"), "--no-progress"]) == 1
    errors = _error_lines(capsys)
    assert len(errors) == 1 and "(SwiGLU), not a bilinear MLP" in errors[0] and "bilinear-lens convert" in errors[0]
    assert not (root / "bad").exists()
    tokens = root / "toks.txt"
    tokens.write_text("w5\n#7\n", encoding="utf-8")
    assert main(["atlas", "--model", str(root / "model"), "--layer", "1", "--out", str(root / "toks"),
                 "--directions", f"tokens:{tokens}", "--k", "2", "--no-progress"]) == 0
    a = Atlas.load(root / "toks")
    assert a.labels == ["w5", "w7"] and a.for_token("w7") == 1


def test_sae_directions_and_input_alignment(setup):
    pytest.importorskip("sae_lens", reason="SAE folders are read with SAELens (not installed with TransformerLens 4.x)")
    root, model, tokenizer, _, _ = setup
    from tests.unit.sae.test_metrics import make_sae

    sae_out, sae_in = make_sae(32, 12, "blocks.1.hook_mlp_out", seed=1), make_sae(32, 20, "blocks.1.mlp.hook_in", seed=2)
    sae_out.save_model(str(root / "sae_out"))
    sae_in.save_model(str(root / "sae_in"))
    a = build_atlas(model, 1, str(root / "atlas_sae"), directions=f"sae:{root / 'sae_out'}", k=3, top=5,
                    sae_in=str(root / "sae_in"), tokenizer=tokenizer, progress=False, warm=0)
    assert len(a) == 12 and a.labels[4] == "feature 4" and a.for_feature(4) == 4
    assert torch.allclose(a.direction(4), sae_out.W_enc.detach()[:, 4])
    ent = a.entry(4)
    D = sae_in.W_dec.detach()
    cos = (ent["vectors"] / ent["vectors"].norm(dim=-1, keepdim=True)) @ (D / D.norm(dim=-1, keepdim=True)).T
    top = cos.abs().topk(5, dim=-1).indices
    assert torch.equal(ent["sae_in.ids"].long(), top)
    assert torch.allclose(ent["sae_in.cos"], cos.gather(-1, top), atol=1e-6)
    with pytest.raises(KeyError, match="not tokens"):
        a.for_token("w5")


@pytest.mark.skipif(not __import__("bilinear_lens.registration").registration.has_hooked_transformer(),
                    reason="compares with a HookedTransformer (TransformerLens 3.x); on 4.x the fixture is the bridge")
def test_bridge_gives_the_atlas_of_the_hooked_transformer(setup):
    """TransformerLens 3.x: the same folder as a TransformerBridge (compatibility mode) gives the same atlas."""
    from bilinear_lens.bridge import BilinearMLPBridge, load_bridge

    root, model, tokenizer, data, atlas = setup
    bridge = load_bridge(root / "model", device="cpu")
    assert isinstance(bridge.blocks[1].mlp, BilinearMLPBridge) and type(model).__name__ == "HookedTransformer"
    other = build_atlas(bridge, 1, str(root / "atlas_bridge"), k=4, data=str(data), batch=16, rows=12, ctx=32,
                        tokenizer=bridge.tokenizer, progress=False, source="tiny")
    assert other.labels == atlas.labels
    for i in (0, 40, 96):
        a, b = atlas.entry(i), other.entry(i)
        assert torch.allclose(a["directions"], b["directions"], rtol=1e-4, atol=1e-6)
        assert torch.allclose(a["values"], b["values"], rtol=1e-4, atol=0)
        assert (a["vectors"] * b["vectors"]).sum(-1).abs().min() > 0.999
        assert torch.equal(a["output.ids"], b["output.ids"]) and torch.equal(a["contexts.row"], b["contexts.row"])
        assert torch.allclose(a["contexts.act"], b["contexts.act"], rtol=1e-4, atol=0)


def test_ov_token_inputs_match_the_forward_pass_with_grouped_heads(tmp_path):
    """``--ov`` inputs of a GQA model (4 query heads, 2 value heads): head h's OV path of token t equals what a
    one-token forward pass writes through head h (``hook_z`` times ``W_O[h]``), through layer 1's ``ln2``."""
    from tests.conftest import make_llama_dir

    from bilinear_lens.atlas.cli import load_source
    from bilinear_lens.atlas.readings import token_inputs

    make_llama_dir(tmp_path / "gqa", vocab=97, n_kv=2, initializer_range=0.8 / 32 ** 0.5)
    model, _ = load_source(str(tmp_path / "gqa"), "cpu")
    inputs = token_inputs(model, 1, bilinear_weights(model, 1), ov=True)
    _, cache = model.run_with_cache(torch.arange(97)[:, None], names_filter="blocks.0.attn.hook_z")
    z = cache["blocks.0.attn.hook_z"][:, 0]  # [97, n_heads, d_head]
    assert z.shape[1] == 4
    for h in range(4):
        expected = model.blocks[1].ln2((z[:, h] @ model.blocks[0].attn.W_O[h])[None])[0]
        torch.testing.assert_close(inputs[f"ov.0.{h}"], expected.detach(), rtol=1e-4, atol=1e-5)


def test_atlas_of_a_model_in_the_authors_published_format(tmp_path, monkeypatch):
    """``--model`` in the authors' format (tdooms/*): HookedTransformer on 3.x, TransformerBridge on 4.x."""
    from tests.authors_format import wordpiece_tokenizer, write_authors_model

    from bilinear_lens import eigendecompose
    from bilinear_lens.atlas.cli import load_source

    monkeypatch.setenv("BILINEAR_LENS_CACHE", str(tmp_path / "cache"))
    tok = wordpiece_tokenizer(tmp_path / "authors")
    folder = write_authors_model(tmp_path / "authors", n_layer=2, n_head=2, d_model=16, d_hidden=24,
                                 vocab=tok.get_vocab_size())
    assert main(["atlas", "--model", str(folder), "--layer", "1", "--out", str(tmp_path / "atlas"), "--k", "3",
                 "--directions", "diff:lily,balloons", "--warm", "0", "--no-progress"]) == 0
    atlas = Atlas.load(tmp_path / "atlas")
    model, _ = load_source(str(folder), "cpu")
    assert atlas.labels == ["lily - balloons"]
    eig = eigendecompose(model, 1, atlas.direction(0)[None], k=3, dtype=torch.float64)
    assert torch.allclose(atlas.eigen(0).values.double(), eig.values, rtol=1e-4, atol=0)


def test_sae_options_without_sae_lens_are_one_line_errors(setup, monkeypatch, capsys):
    """TransformerLens 4.x installs have no SAELens: `sae:DIR` and `--sae-in` say so before loading the model."""
    root = setup[0]
    monkeypatch.setitem(sys.modules, "sae_lens", None)  # `import sae_lens` raises ImportError
    for extra in (["--directions", f"sae:{root}"], ["--sae-in", str(root)]):
        assert main(["atlas", "--model", str(root / "no-such-model"), "--layer", "1", "--out", str(root / "nosae"),
                     *extra, "--no-progress"]) == 1
        err = capsys.readouterr().err.strip()
        assert "SAELens is not installed" in err and extra[0] in err and "\n" not in err
    assert not (root / "nosae").exists()
