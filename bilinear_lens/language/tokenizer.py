"""Byte-level BPE tokenizers for the language models (Hugging Face ``tokenizers``).

``train_tokenizer`` learns a GPT-2 style byte-level BPE vocabulary (every byte is a base token,
so any UTF-8 text round-trips exactly) with two special tokens:

* ``<|endoftext|>`` (id 0): BOS *and* EOS. Training data is ``<|endoftext|> story <|endoftext|>
  story ...``, so the token that ends one story starts the next, and TransformerLens' default
  ``prepend_bos=True`` matches the training distribution.
* ``<|pad|>`` (id 1): padding (never trained on).

It is returned as a :class:`transformers.PreTrainedTokenizerFast` and, with ``out_dir``, saved as a
normal Hugging Face tokenizer folder (``tokenizer.json`` + ``tokenizer_config.json``) that
``AutoTokenizer.from_pretrained`` loads with no plugin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

from bilinear_lens.runs import RunError, atomic_dir

EOT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOT, PAD)
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)

PathLike = Union[str, Path]


def _wrap(tok) -> "PreTrainedTokenizerFast":  # noqa: F821
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=PAD,
        add_bos_token=False, add_eos_token=False, clean_up_tokenization_spaces=False,
    )


def train_tokenizer_from_texts(
    texts: Iterable[str], vocab_size: int = 4096, out_dir: Optional[PathLike] = None,
    show_progress: bool = False,
) -> "PreTrainedTokenizerFast":  # noqa: F821
    """Train a byte-level BPE tokenizer with ``vocab_size`` tokens (256 bytes + 2 specials + merges)
    on an iterable of documents; see :func:`train_tokenizer`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < MIN_VOCAB:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE vocabulary needs at least "
            f"{MIN_VOCAB} tokens (256 bytes + {len(SPECIAL_TOKENS)} special tokens)."
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress,
    )
    n_docs = 0

    def counted() -> Iterable[str]:
        nonlocal n_docs
        for text in texts:
            if text:
                n_docs += 1
                yield text

    tok.train_from_iterator(counted(), trainer=trainer)
    if n_docs == 0:
        raise ValueError("cannot train a tokenizer on no text: every document given was empty.")
    hf = _wrap(tok)
    if out_dir is not None:
        save_tokenizer(hf, out_dir)
    return hf


def train_tokenizer(
    files: Sequence[PathLike], vocab_size: int = 4096, out_dir: Optional[PathLike] = None,
    show_progress: bool = False,
) -> "PreTrainedTokenizerFast":  # noqa: F821
    """Train a byte-level BPE tokenizer on the stories in ``files`` (:func:`bilinear_lens.text.read_texts`).

    ``vocab_size`` counts everything: 256 byte tokens, ``<|endoftext|>`` (bos = eos, id 0),
    ``<|pad|>`` (id 1) and ``vocab_size - 258`` learned merges (fewer if the text runs out of
    pairs seen at least twice). Stories are trained on separately, so no merge crosses a story
    boundary. With ``out_dir`` the tokenizer is also saved there (atomically) as a Hugging Face
    tokenizer folder.
    """
    from bilinear_lens.text.sources import read_texts

    if isinstance(files, (str, Path)):
        files = [files]
    if not files:
        raise ValueError("train_tokenizer needs at least one text file (got an empty list).")
    stories: List[str] = []
    for f in files:
        stories.extend(read_texts(f))
    return train_tokenizer_from_texts(stories, vocab_size, out_dir, show_progress)


def save_tokenizer(tokenizer, out_dir: PathLike) -> Path:
    """Save ``tokenizer`` as a Hugging Face tokenizer folder, atomically (temp folder + rename)."""
    with atomic_dir(out_dir) as tmp:
        tokenizer.save_pretrained(str(tmp))
    return Path(out_dir)


def load_tokenizer(path: PathLike) -> "PreTrainedTokenizerFast":  # noqa: F821
    """Load a tokenizer folder (ours or any Hugging Face tokenizer, e.g. a model folder)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise FileNotFoundError(
            f"{path} holds no Hugging Face tokenizer (no tokenizer.json / tokenizer_config.json). "
            "Pass a folder written by train_tokenizer(out_dir=...) or by train-lm (OUT/tokenizer "
            "or OUT/model), or leave the tokenizer unset to train one."
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # a truncated or hand-edited tokenizer.json / tokenizer_config.json
        first = (str(e).splitlines() or [""])[0][:160]
        raise RunError(f"the tokenizer files in {path} cannot be read ({type(e).__name__}: {first}); they "
                       "are corrupt: copy them again, or (a train-lm run folder) restart with --overwrite."
                       ) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
