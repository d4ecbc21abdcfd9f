from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from workers.data import builtin_corpus, load_source, token_files, train_batch, val_batches


def test_builtin_corpus_is_stable_bytes() -> None:
    source = builtin_corpus()
    assert source.vocab_size == 256
    assert len(source.train) > 5_000_000  # the stdlib is ~10 MB of source
    assert 0.04 < len(source.val) / (len(source.train) + len(source.val)) < 0.06
    assert len(source.content_hash) == 64
    assert load_source(None).content_hash == source.content_hash


def test_batches_are_a_function_of_seed_and_step() -> None:
    source = builtin_corpus()
    x1, y1 = train_batch(source, seed=1, step=5, batch_size=4, seq_len=32)
    x2, y2 = train_batch(source, seed=1, step=5, batch_size=4, seq_len=32)
    x3, _ = train_batch(source, seed=2, step=5, batch_size=4, seq_len=32)
    x4, _ = train_batch(source, seed=1, step=6, batch_size=4, seq_len=32)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3) and not torch.equal(x1, x4)
    assert x1.shape == (4, 32) and torch.equal(x1[:, 1:], y1[:, :-1])  # targets are inputs shifted by one


def test_validation_set_is_fixed() -> None:
    source = builtin_corpus()
    a = val_batches(source, 10, 4, 16)
    b = val_batches(source, 10, 4, 16)
    assert [x.shape[0] for x, _ in a] == [4, 4, 2]
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b, strict=True))


def test_token_file_directory(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rng.integers(0, 1000, 5000).astype(np.uint16).tofile(tmp_path / "train.bin")
    rng.integers(0, 1000, 500).astype(np.uint16).tofile(tmp_path / "val.bin")
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 1000}))
    source = token_files(tmp_path)
    assert source.vocab_size == 1000 and len(source.train) == 5000 and len(source.val) == 500
    x, _ = train_batch(source, 0, 0, 2, 8)
    assert int(x.max()) < 1000


def test_single_token_file_uint32_with_vocab_flag(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    np.arange(10_000, dtype=np.uint32).tofile(path)
    source = token_files(path, vocab_size=10_000, dtype="uint32")
    assert len(source.train) == 9500 and int(source.val[0]) == 9500


def test_token_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        token_files(tmp_path / "missing")
    np.arange(300, dtype=np.uint16).tofile(tmp_path / "t.bin")
    with pytest.raises(ValueError, match="vocabulary size"):
        token_files(tmp_path / "t.bin")
    with pytest.raises(ValueError, match="token id 299"):
        token_files(tmp_path / "t.bin", vocab_size=256)
