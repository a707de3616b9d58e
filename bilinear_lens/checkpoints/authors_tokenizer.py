"""The tokenizers of the authors' published models, made to behave in TransformerLens.

The authors' ``config.json`` names its tokenizer by a short key (``tokenizer``):

* ``ts-4096`` -> Hub ``tdooms/ts-tokenizer-4096``: a ``tokenizers`` WordPiece model (``##``
  continuation pieces), post-processor ``[BOS] $A``, ``[UNK]``=0, ``[BOS]``=1, ``[EOS]``=2, no
  decoder, and (probably) no named special tokens. As stored it confuses TransformerLens: BOS is not
  named (TransformerLens then falls back to ``<|endoftext|>``) and ``to_string`` would print
  ``"the ##m"``. :func:`wordpiece_for_transformer_lens` names ``[BOS]``/``[EOS]``/``[UNK]`` and pad
  (= ``[EOS]``, as the authors pad), adds a WordPiece decoder (``##`` pieces are joined into words)
  and records ``add_bos_token`` so TransformerLens neither reloads nor doubles BOS.
* ``mistral`` -> ``mistral-community/Mixtral-8x22B-v0.1`` (SentencePiece BPE, ``<s>`` prepended);
  it needs no change beyond pad = ``</s>``.

A prepared tokenizer is saved in a folder (TransformerLens re-loads tokenizers by name), under
``$BILINEAR_LENS_CACHE`` (default ``~/.cache/bilinear_lens``)/``tokenizers/<sha256 of the source>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

TOKENIZER_REPOS: Dict[str, str] = {
    "ts-4096": "tdooms/ts-tokenizer-4096",
    "mistral": "mistral-community/Mixtral-8x22B-v0.1",
    "gpt2": "openai-community/gpt2",
}
"""The authors' ``tokenizer`` key -> Hub repo (their ``Transformer.get_tokenizer``)."""

PAD_TOKENS = {"ts-4096": "[EOS]", "mistral": "</s>", "gpt2": "<|endoftext|>"}
WORDPIECE_SPECIALS = {"bos_token": "[BOS]", "eos_token": "[EOS]", "unk_token": "[UNK]", "pad_token": "[EOS]"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")

PathLike = Union[str, Path]


def cache_root() -> Path:
    return Path(os.environ.get("BILINEAR_LENS_CACHE", Path.home() / ".cache" / "bilinear_lens")).expanduser()


def has_tokenizer_files(path: PathLike) -> bool:
    return any((Path(path) / f).is_file() for f in TOKENIZER_FILES)


def _is_wordpiece(tokenizer_json: Path) -> bool:
    try:
        return json.loads(tokenizer_json.read_text()).get("model", {}).get("type") == "WordPiece"
    except (OSError, json.JSONDecodeError):
        return False


def wordpiece_for_transformer_lens(tokenizer_json: PathLike) -> Any:
    """A ``PreTrainedTokenizerFast`` of a WordPiece ``tokenizer.json`` with named specials and a decoder.

    The normaliser, pre-tokeniser and post-processor are kept as they are (so ids are the
    authors' ids); only a ``WordPiece(prefix="##")`` decoder is added when there is none.
    """
    from tokenizers import Tokenizer, decoders
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_file(str(tokenizer_json))
    if tok.decoder is None:
        tok.decoder = decoders.WordPiece(prefix="##")
    vocab = tok.get_vocab()
    missing = [t for t in set(WORDPIECE_SPECIALS.values()) if t not in vocab]
    if missing:
        raise ValueError(f"{tokenizer_json}: a ts-4096-style WordPiece tokenizer needs the tokens "
                         f"{sorted(WORDPIECE_SPECIALS.values())}; {sorted(missing)} are missing.")
    return PreTrainedTokenizerFast(tokenizer_object=tok, add_bos_token=True, add_eos_token=False,
                                   clean_up_tokenization_spaces=False, **WORDPIECE_SPECIALS)


def prepared_wordpiece_folder(tokenizer_json: PathLike) -> Path:
    """A folder holding the prepared tokenizer (written once per source file, atomically)."""
    from bilinear_lens.checkpoints.save import atomic_dir

    digest = hashlib.sha256(Path(tokenizer_json).read_bytes()).hexdigest()[:20]
    out = cache_root() / "tokenizers" / f"wordpiece-{digest}"
    if not (out / "tokenizer_config.json").is_file():
        tok = wordpiece_for_transformer_lens(tokenizer_json)
        with atomic_dir(out) as tmp:
            tok.save_pretrained(str(tmp))
    return out


def prepare_tokenizer_folder(folder: PathLike) -> Path:
    """The folder TransformerLens should load the tokenizer from: ``folder`` itself, or a prepared
    copy when it holds a WordPiece tokenizer whose BOS is not named."""
    folder = Path(folder)
    tj = folder / "tokenizer.json"
    if tj.is_file() and _is_wordpiece(tj):
        cfg_file = folder / "tokenizer_config.json"
        try:
            cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        except json.JSONDecodeError:
            cfg = {}
        named = cfg.get("bos_token") == "[BOS]" and cfg.get("add_bos_token") is True
        has_decoder = json.loads(tj.read_text()).get("decoder") is not None
        if not (named and has_decoder):
            return prepared_wordpiece_folder(tj)
    return folder


def _hub_folder(repo: str) -> Optional[Path]:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, allow_patterns=["*.json", "*.model", "*.txt"]))
    except Exception:  # offline and not cached, no network, gated, ...
        return None


def locate_tokenizer_folder(model_folder: PathLike, key: Optional[str]) -> Tuple[Optional[Path], str]:
    """``(folder, "")`` for the tokenizer of an authors'-format model, prepared for TransformerLens, or
    ``(None, why)``: the model folder when it has tokenizer files; else the Hub repo its ``tokenizer``
    key names (from the Hugging Face cache when offline)."""
    if has_tokenizer_files(model_folder):
        return prepare_tokenizer_folder(model_folder), ""
    repo = TOKENIZER_REPOS.get(key) if key else None
    folder = _hub_folder(repo) if repo else None
    if folder is not None and has_tokenizer_files(folder):
        if key == "mistral" or not (folder / "tokenizer.json").is_file():
            return folder, ""
        return prepare_tokenizer_folder(folder), ""
    return None, (f"the folder has none and the Hub repo {repo} (for tokenizer={key!r}) is not reachable and not "
                  f"in the Hugging Face cache" if repo else f"the folder has none and tokenizer={key!r} names no "
                  "known Hub repo")


def resolve_tokenizer_folder(model_folder: PathLike, key: Optional[str]) -> Optional[Path]:
    """Where the tokenizer of an authors'-format model comes from (:func:`locate_tokenizer_folder`);
    None, with a warning saying how to give one, when there is none."""
    folder, why = locate_tokenizer_folder(model_folder, key)
    if folder is None:
        warnings.warn(f"{model_folder}: loaded without a tokenizer: {why}. Pass "
                      f"tokenizer=AutoTokenizer.from_pretrained(...) or put the tokenizer files in the folder.",
                      stacklevel=3)
    return folder


def load_tokenizer(folder: PathLike, key: Optional[str] = None) -> Any:
    """``AutoTokenizer.from_pretrained(folder)`` with the authors' pad token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token is None:
        pad = PAD_TOKENS.get(key or "", tok.eos_token)
        if pad is not None:
            tok.pad_token = pad
    return tok
