"""The commands that write run folders, as table rows for tests/integration/test_run_contract.py and
tests/integration/test_cli_options.py: tiny, fast settings on tiny inputs (built once per test module).

A row is a :class:`Command`: its name, the ``kind`` recorded in ``run.json``, ``argv(inputs, out)``
(the arguments of a tiny run writing into ``out``) and ``other`` (extra arguments that make a run of
other settings). To cover another command (``mnist``, ``atlas``, ``import-model``, ...), add ONE row
to ``COMMANDS`` below, and, if it needs inputs that ``build_inputs`` does not make yet, add them there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import torch

from bilinear_lens.cli import main

WORDS = ("the cat dog sun ran saw big red ball park mom said happy sad play tree bird sky went "
         "little girl boy named lily tom".split())


@dataclass(frozen=True)
class Command:
    name: str
    kind: str
    argv: Callable[[Dict[str, Path], Path], List[str]]
    other: List[str]  # arguments that change the run's identity
    data: str = "text"  # the key of ``build_inputs`` naming a data file the command reads

    def __str__(self) -> str:
        return self.name


def build_inputs(root: Path) -> Dict[str, Path]:
    """Text, a tiny bilinear model with tokenizer, the shared stories260k SwiGLU model, and two SAEs."""
    from transformer_lens import HookedTransformer

    from bilinear_lens import save_pretrained
    from bilinear_lens.language.tokenizer import train_tokenizer_from_texts
    from tests.conftest import shared_path, tiny_cfg

    rng = random.Random(0)
    stories = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 50))) + "." for _ in range(80)]
    text = root / "stories.txt"
    text.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    val = root / "val.txt"
    val.write_text("".join(s + "\n<|endoftext|>\n" for s in stories[:6]), encoding="utf-8")
    tok = train_tokenizer_from_texts(stories, vocab_size=300)
    torch.manual_seed(0)
    save_pretrained(HookedTransformer(tiny_cfg(d_vocab=len(tok))).eval(), root / "bilinear", tokenizer=tok)
    inputs = {"text": text, "val": val, "bilinear": root / "bilinear",
              "swiglu": shared_path("models", "stories260k"), "mnist": shared_path("data", "mnist", "mnist10k.npz")}
    for side in ("in", "out"):
        sae = root / f"sae_{side}"
        assert main(COMMANDS_BY_NAME["train-sae"].argv(inputs, sae)[:-2] + ["--hook", side, "--out", str(sae)]) == 0
        inputs[f"sae_{side}"] = sae
    return inputs


def _train_lm(i: Dict[str, Path], out: Path) -> List[str]:
    return ["train-lm", "--data", str(i["text"]), "--val-data", str(i["val"]), "--d-model", "16", "--n-layers", "1",
            "--n-heads", "2", "--n-ctx", "32", "--vocab-size", "280", "--batch-size", "4", "--tokens", "384",
            "--checkpoint-every", "1", "--threads", "1", "--no-progress", "--out", str(out)]


def _convert(i: Dict[str, Path], out: Path) -> List[str]:
    return ["convert", "--model", str(i["swiglu"]), "--data", str(i["text"]), "--val-data", str(i["val"]),
            "--val-stories", "4", "--tokens", "192", "--seq-len", "16", "--batch-size", "4", "--warmup", "1",
            "--first-n-layers", "2", "--checkpoint-every", "1", "--threads", "1", "--no-progress", "--out", str(out)]


def _train_sae(i: Dict[str, Path], out: Path) -> List[str]:
    return ["train-sae", "--model", str(i["bilinear"]), "--layer", "1", "--data", str(i["text"]),
            "--training-tokens", "768", "--batch-size-tokens", "128", "--context-size", "16", "--eval-rows", "4",
            "--k", "4",
            "--expansion", "2", "--threads", "1", "--no-progress", "--hook", "out", "--out", str(out)]


def _mnist(i: Dict[str, Path], out: Path) -> List[str]:
    return ["mnist", "--data", str(i["mnist"]), "--n-train", "200", "--n-test", "100", "--d-hidden", "16",
            "--epochs", "1", "--batch-size", "50", "--no-progress", "--out", str(out)]


def _compare(i: Dict[str, Path], out: Path) -> List[str]:
    return ["compare", "--model", str(i["bilinear"]), "--layer", "1", "--sae-in", str(i["sae_in"]),
            "--sae-out", str(i["sae_out"]), "--data", str(i["text"]), "--rows", "24", "--context", "32",
            "--ks", "1,2,32", "--n-show", "1", "--threads", "1", "--out", str(out)]


COMMANDS: List[Command] = [
    Command("train-lm", "train-lm", _train_lm, ["--seed", "5"]),
    Command("convert", "conversion", _convert, ["--seed", "5"]),
    Command("train-sae", "train-sae", _train_sae, ["--seed", "5"]),
    Command("compare", "compare", _compare, ["--ks", "1,4"]),
    Command("mnist", "mnist", _mnist, ["--seed", "5"], data="mnist"),
    # ---- add further commands here, one row each, e.g. ----
    # Command("atlas", "atlas", _atlas, [...]), Command("import-model", "import-model", _import_model, [...]),
]
COMMANDS_BY_NAME = {c.name: c for c in COMMANDS}


def snapshot(folder: Path) -> Dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes): to show a folder is byte-for-byte intact."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".bl-lock"}


def error_lines(err: str) -> List[str]:
    """The ``bilinear-lens CMD: error: ...`` lines of stderr (progress bars and warnings left out)."""
    assert "Traceback" not in err, err[-2000:]
    return [line for line in err.splitlines() if ": error: " in line]
