"""Text to training data: sources, the token stream and blocks, the step-determined order, validation batches."""

from __future__ import annotations

import pytest
import torch

from bilinear_lens.text.batches import TokenBlocks, block_batches, order_indices, padded_batches
from bilinear_lens.text.sources import check_source, is_hub_name, read_texts, split_stories


def test_order_visits_every_block_once_per_epoch_and_depends_only_on_the_position():
    n = 10
    seq = torch.cat([order_indices(s * 4, 4, n, seed=0) for s in range(5)])  # 20 sequences: 2 epochs
    assert sorted(seq[:10].tolist()) == list(range(10)) and sorted(seq[10:].tolist()) == list(range(10))
    assert torch.equal(order_indices(7, 6, n, 0), seq[7:13])  # any slice: the same sequences
    assert not torch.equal(order_indices(0, 10, n, 0), order_indices(0, 10, n, 1))  # the seed matters
    g = torch.Generator().manual_seed(1 * 1_000_003 + 0)  # the documented permutation of epoch 0, seed 1
    assert torch.equal(order_indices(0, n, n, 1), torch.randperm(n, generator=g))


def test_token_blocks_serve_sequences_by_index():
    blocks = torch.arange(40).view(10, 4)
    data = TokenBlocks(blocks, seed=3)
    assert (len(data), data.n_ctx, data.n_tokens) == (10, 4, 40)
    assert torch.equal(data.sequences(5, 3), blocks[order_indices(5, 3, 10, 3)])
    with pytest.raises(ValueError, match="non-empty"):
        TokenBlocks(torch.zeros(0, 4, dtype=torch.long))


def test_validation_batches():
    stories = [[5, 6, 7], [1], [8, 9, 10, 11, 12], [2, 3]]
    batches = padded_batches(stories, max_len=4, batch_size=2, pad_id=0)
    toks = torch.cat([torch.nn.functional.pad(t, (0, 4 - t.shape[1])) for t, _ in batches])
    masks = torch.cat([torch.nn.functional.pad(m, (0, 4 - m.shape[1])) for _, m in batches])
    assert toks.tolist() == [[2, 3, 0, 0], [5, 6, 7, 0], [8, 9, 10, 11]]  # sorted by length, cut, 1-token dropped
    assert masks.sum(1).tolist() == [2, 3, 4]
    whole = block_batches(torch.arange(12).view(6, 2), batch_size=4)
    assert [t.shape[0] for t, m in whole] == [4, 2] and all(m is None for _, m in whole)


def test_sources_split_files_and_refuse_in_one_line(tmp_path):
    assert split_stories("a\n<|endoftext|>\nb c\n<|endoftext|>\n") == ["a", "b c"]
    assert split_stories("one\ntwo\n\nthree") == ["one\ntwo", "three"]
    assert split_stories("x\ny\n") == ["x", "y"]
    f = tmp_path / "t.txt"
    f.write_text("s1\n<|endoftext|>\ns2\n<|endoftext|>\ns3")
    assert read_texts(f, limit=2) == ["s1", "s2"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_texts(tmp_path / "data" / "missing.txt")  # a path, not sent to the Hub
    assert not is_hub_name(tmp_path / "x.txt") and is_hub_name("roneneldan/TinyStories:validation")
    with pytest.raises(ValueError, match="is a folder"):
        check_source(tmp_path)
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        check_source(tmp_path / "e.txt")
