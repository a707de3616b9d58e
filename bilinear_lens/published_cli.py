"""``bilinear-lens import-model`` and ``bilinear-lens import-sae``: the authors' published
checkpoints converted once into ordinary formats.

    bilinear-lens import-model tdooms/ts-medium --out models/ts-medium [--scale-attn true|false]
    bilinear-lens import-sae tdooms/ts-medium-scope/5-mlp-in-x4-k30 --out saes/ts-medium-5-mlp-in

``import-model`` writes a plain Hugging Face ``LlamaForCausalLM`` folder (``hidden_act: linear``,
``rms_norm_eps: 1e-8``, the attention scale folded into ``o_proj``, the tokenizer with its special
tokens named) that loads in plain transformers with no plugin, and checks the reloaded model's
log-probs against the converted one (``import.json``). ``import-sae`` writes SAELens' folder
format (``cfg.json`` + ``sae_weights.safetensors``, architecture ``bilinear_lens_topk``:
``SAE.load_from_disk`` reads it after ``import bilinear_lens``). Both use the run-folder contract
(``--resume`` verifies a finished folder, ``--overwrite`` replaces one).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from bilinear_lens.config import Config, RunOptions, add_arguments, from_args, nested, option

__all__ = ["ImportModelCommand", "ImportSAECommand", "add_commands", "import_model", "import_sae"]

@dataclass
class ImportModelCommand(Config):
    """``import-model``: an authors'-format model -> a plain Hugging Face Llama folder."""

    source: Optional[str] = option(None, "authors'-format folder or Hub repo id (tdooms/ts-medium)", required=True,
                                   positional=True)
    scale_attn: Optional[bool] = option(None, "override the config's scale_attn (absent = true): fold "
                                        "1/sqrt(2 n_layer) into o_proj")
    tokenizer: Optional[str] = option(None, "tokenizer folder (default: the model's, or its Hub repo)")
    run: RunOptions = nested(RunOptions, identity=False)


@dataclass
class ImportSAECommand(Config):
    """``import-sae``: an authors' SAE -> a SAELens folder."""

    source: Optional[str] = option(None, "authors' SAE folder or repo_id/subfolder", required=True, positional=True)
    model: Optional[str] = option(None, "the model (folder or repo id): attn-out SAEs need its scale")
    attn_scale: Optional[float] = option(None, "attn-out SAEs: the folded scale s", minimum=0, inclusive=(False, True))
    run: RunOptions = nested(RunOptions, identity=False)


def add_commands(subparsers: Any) -> None:
    for name, cls, text, handler in (
            ("import-model", ImportModelCommand, "the authors' published model as a plain HF Llama folder",
             handle_import_model),
            ("import-sae", ImportSAECommand, "an authors' published SAE as a SAELens folder", handle_import_sae)):
        p = subparsers.add_parser(name, help=text, description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(p, cls)
        p.set_defaults(func=handler)


def _sha256(path: Path) -> str:
    from bilinear_lens.runs.folder import file_digest

    return file_digest(path)


def _tokenizer(src: Path, key: Optional[str], override: Optional[str]) -> Any:
    from bilinear_lens.checkpoints.authors_tokenizer import (load_tokenizer, prepare_tokenizer_folder,
                                                             resolve_tokenizer_folder)

    folder = prepare_tokenizer_folder(override) if override else resolve_tokenizer_folder(src, key)
    return load_tokenizer(folder, key) if folder is not None else None


def _self_check(folder: Path, reference: Any, vocab: int) -> float:
    """max |log-prob difference| of plain ``AutoModelForCausalLM.from_pretrained(folder)`` vs ``reference``."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, vocab, (1, min(16, reference.config.max_position_embeddings)),
                        generator=torch.Generator().manual_seed(0))
    reloaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        a = reference(ids).logits.log_softmax(-1)
        b = reloaded(ids).logits.log_softmax(-1)
    return float((a - b).abs().max())


def import_model(source: str, out: str, scale_attn: Optional[bool] = None, tokenizer: Optional[str] = None,
                 resume: bool = False, overwrite: bool = False) -> Dict[str, Any]:
    """Convert an authors'-format model into a plain HF Llama folder ``out``; returns ``import.json``."""
    from bilinear_lens.checkpoints.authors import authors_hf_model, read_authors_config
    from bilinear_lens.checkpoints.published import resolve_model_source
    from bilinear_lens.runs import RunError, open_run
    from bilinear_lens.runs.atomic import temp_sibling

    src = resolve_model_source(source)
    acfg = read_authors_config(src, json.loads((src / "config.json").read_text()))  # refusals first
    identity = {"source": str(source), "weights_sha256": _sha256(src / "model.safetensors"),
                "scale_attn": scale_attn, "tokenizer": tokenizer}
    with open_run(out, kind="import-model", identity=identity, resume=resume, overwrite=overwrite,
                  owned=None, inputs=[src, tokenizer]) as run:
        if run.finished:
            return json.loads(run.file("import.json").read_text())
        tok = _tokenizer(src, acfg.tokenizer, tokenizer)
        ids = {k: getattr(tok, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")} if tok else None
        model = authors_hf_model(src, scale_attn=scale_attn, special_ids=ids)
        tmp = temp_sibling(run.file("model"))
        model.save_pretrained(str(tmp), safe_serialization=True)
        if tok is not None:
            tok.save_pretrained(str(tmp))
        err = _self_check(tmp, model, acfg.vocab)
        if not err <= 1e-4:
            raise RunError(f"the written Llama folder reloads with log-probs {err:.2e} away from the conversion; "
                           "this is a bug, please report it.")
        summary = {"source": str(source), **model.published.to_dict(), "tokenizer_saved": tok is not None,
                   "max_abs_logprob_diff_reload": err, "layers": acfg.n_layer, "d_model": acfg.d_model}
        (tmp / "import.json").write_text(json.dumps(summary, indent=1))
        run.move_in(tmp)
        run.finish()
    return summary


def import_sae(source: str, out: str, model: Optional[str] = None, attn_scale: Optional[float] = None,
               resume: bool = False, overwrite: bool = False) -> Dict[str, Any]:
    """Convert an authors' SAE into a SAELens folder ``out``; returns ``import.json``."""
    from bilinear_lens.runs import open_run
    from bilinear_lens.runs.atomic import temp_sibling
    from bilinear_lens.sae.published import load_sae, read_authors_sae, resolve_sae_source

    folder = resolve_sae_source(source)
    cfg, _ = read_authors_sae(folder)  # refusals before anything is written
    if model is not None and attn_scale is None and str(cfg["point"][0]).replace("_", "-") == "attn-out":
        from bilinear_lens.checkpoints.authors import attention_scale, read_authors_config
        from bilinear_lens.checkpoints.published import resolve_model_source

        msrc = resolve_model_source(model)
        attn_scale = attention_scale(read_authors_config(msrc, json.loads((msrc / "config.json").read_text())))
    identity = {"source": str(source), "weights_sha256": _sha256(folder / "model.safetensors"),
                "attn_scale": attn_scale}
    with open_run(out, kind="import-sae", identity=identity, resume=resume, overwrite=overwrite,
                  owned=None, inputs=[folder]) as run:
        if run.finished:
            return json.loads(run.file("import.json").read_text())
        sae = load_sae(folder, attn_scale=attn_scale, model_name=cfg.get("model") or str(source))
        tmp = temp_sibling(run.file("sae"))
        sae.save_model(tmp)
        summary = {"source": str(source), "hook_name": sae.cfg.metadata.hook_name, "d_in": sae.cfg.d_in,
                   "d_sae": sae.cfg.d_sae, "k": sae.cfg.k, "architecture": sae.cfg.architecture(),
                   "attn_scale": sae.cfg.metadata.attn_scale}
        (tmp / "import.json").write_text(json.dumps(summary, indent=1))
        run.move_in(tmp)
        run.finish()
    return summary


def handle_import_model(args: argparse.Namespace) -> int:
    cfg = from_args(ImportModelCommand, args).check()
    with cfg.run.torch_threads():
        summary = import_model(cfg.source, cfg.run.out, cfg.scale_attn, cfg.tokenizer, cfg.run.resume,
                               cfg.run.overwrite)
    print(json.dumps(summary, indent=1))
    return 0


def handle_import_sae(args: argparse.Namespace) -> int:
    cfg = from_args(ImportSAECommand, args).check()
    with cfg.run.torch_threads():
        summary = import_sae(cfg.source, cfg.run.out, cfg.model, cfg.attn_scale, cfg.run.resume, cfg.run.overwrite)
    print(json.dumps(summary, indent=1))
    return 0
