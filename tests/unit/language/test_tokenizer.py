"""Tokenizer and data pipeline of bilinear_lens.language (tiny text, seconds)."""

from __future__ import annotations

import pytest
import torch

from bilinear_lens.text.sources import read_texts as read_stories
from bilinear_lens.text.tokens import blocks_of as token_blocks
from bilinear_lens.text.tokens import tokenize_stories
from bilinear_lens.language.tokenizer import EOT, PAD, load_tokenizer, train_tokenizer

STORIES = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    "Tom had a red ball. He threw the ball to his dog, Max. Max ran and ran!",
    "The sun was hot. Lily and Tom went to the park to swim in the big blue pool.",
    "\u201cHello,\u201d said the caf\u00e9 owner. The bird sang a happy song \u2014 la la la.",
] * 20


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "stories.txt"
    path.write_text("".join(f"{s}\n{EOT}\n" for s in STORIES), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer([corpus], vocab_size=300, out_dir=out)
    return out


def test_read_stories_formats(tmp_path, corpus):
    assert read_stories(corpus) == STORIES
    blank = tmp_path / "blank.txt"
    blank.write_text("first story\nline two\n\nsecond story\n\n\nthird\n")
    assert read_stories(blank) == ["first story\nline two", "second story", "third"]
    lines = tmp_path / "lines.txt"
    lines.write_text("a b\nc d\n")
    assert read_stories(lines) == ["a b", "c d"]


def test_read_stories_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_stories(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text(f"\n{EOT}\n  \n")
    with pytest.raises(ValueError, match="no text"):
        read_stories(empty)
    with pytest.raises(ValueError, match="is a folder"):
        read_stories(tmp_path)


def test_round_trip_and_special_tokens(tok_dir):
    tok = load_tokenizer(tok_dir)
    assert len(tok) == 300
    assert tok.bos_token == tok.eos_token == EOT and tok.pad_token == PAD
    assert (tok.bos_token_id, tok.pad_token_id) == (0, 1)
    for text in STORIES[:4] + ["unseen: Zebra \u00fcber \u4e2d\u6587 \U0001F600 \t tabs\nnew line"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text  # byte-level: every string round-trips
    # merges were learned: frequent text is much shorter than its bytes
    assert len(tok(STORIES[0], add_special_tokens=False)["input_ids"]) < 0.8 * len(STORIES[0].encode())


def test_saved_as_plain_hf_tokenizer(tok_dir, corpus):
    from transformers import AutoTokenizer

    assert (tok_dir / "tokenizer.json").is_file() and (tok_dir / "tokenizer_config.json").is_file()
    hf = AutoTokenizer.from_pretrained(str(tok_dir))
    fresh = train_tokenizer([corpus], vocab_size=300)  # deterministic training
    text = STORIES[1]
    assert hf(text)["input_ids"] == fresh(text)["input_ids"]
    assert hf.get_vocab() == fresh.get_vocab()


def test_vocab_too_small(corpus):
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        train_tokenizer([corpus], vocab_size=100)


def test_tokenize_and_blocks(tok_dir):
    tok = load_tokenizer(tok_dir)
    stream = tokenize_stories(STORIES[:3], tok)
    bos = tok.bos_token_id
    starts = (stream == bos).nonzero().flatten().tolist()
    assert starts[0] == 0 and len(starts) == 3
    pieces = torch.tensor_split(stream, starts[1:])
    assert [tok.decode(p[1:]) for p in pieces] == STORIES[:3]
    blocks = token_blocks(stream, 8)
    assert blocks.shape == (len(stream) // 8, 8)
    assert torch.equal(blocks.flatten(), stream[: blocks.numel()])
    with pytest.raises(ValueError, match="fewer than one block"):
        token_blocks(stream[:5], 8)
