"""Token sources behind one interface: the built-in byte corpus and pre-tokenized token files.

- `builtin`: Python's own standard library source (`Lib/**/*.py`, tests excluded) read as bytes, vocabulary
  256. It needs no download and is the same for every user of the same Python release; its content hash is
  recorded with every trial so that a different corpus is visible (DESIGN.md calibration: it trains a tiny
  Llama well).
- token files: flat little-endian uint16/uint32 arrays as nanoGPT writes them. PATH is a directory holding
  `train.bin` and `val.bin` (and optionally `meta.json` with `vocab_size` and `dtype`), or one `.bin` file
  whose last 5% is held out for validation. The vocabulary size comes from meta.json or the caller.

Validation is a fixed set of sequences (the same tokens for every trial that uses this source); training
batch `step` is a pure function of (seed, step), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

VAL_FRACTION = 0.05  # share of a single-file corpus held out for validation (nanoGPT uses 10%; text is long)
BUILTIN = "builtin"
_EXCLUDED_DIRS = {"test", "tests", "idlelib", "site-packages", "__pycache__", "lib2to3"}


@dataclass(frozen=True)
class TokenSource:
    name: str
    train: np.ndarray  # 1-D array of token ids
    val: np.ndarray
    vocab_size: int
    content_hash: str  # sha256 over train and val, the reproducibility record

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "train_tokens": len(self.train),
            "val_tokens": len(self.val),
            "vocab_size": self.vocab_size,
            "sha256": self.content_hash,
        }


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in _EXCLUDED_DIRS or part.startswith("test") for part in rel.parts):
            continue
        files.append(path)
    return files


_CACHE: dict[str, TokenSource] = {}


def builtin_corpus() -> TokenSource:
    """Python's standard library source as bytes; validation is the last 5% of the sorted file stream."""
    if BUILTIN in _CACHE:
        return _CACHE[BUILTIN]
    data = b"\n".join(p.read_bytes() for p in _stdlib_files())
    tokens = np.frombuffer(data, dtype=np.uint8)
    split = int(len(tokens) * (1 - VAL_FRACTION))
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    source = TokenSource(
        name=f"builtin:python-{version}-stdlib",
        train=tokens[:split],
        val=tokens[split:],
        vocab_size=256,
        content_hash=hashlib.sha256(data).hexdigest(),
    )
    _CACHE[BUILTIN] = source
    return source


def _read_meta(directory: Path) -> dict[str, object]:
    meta_path = directory / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"{meta_path}: expected a JSON object")
        return meta
    return {}


def _hash_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    chunk = 1 << 24  # tokens per read: hashes a multi-GB memmap without loading it whole
    for a in arrays:
        for i in range(0, len(a), chunk):
            h.update(np.ascontiguousarray(a[i : i + chunk]).tobytes())
    return h.hexdigest()


def token_files(path: str | Path, vocab_size: int | None = None, dtype: str | None = None) -> TokenSource:
    """Pre-tokenized tokens from a directory (train.bin, val.bin, meta.json) or a single .bin file."""
    key = f"{Path(path).resolve()}|{vocab_size}|{dtype}"
    if key not in _CACHE:
        _CACHE[key] = _read_token_files(Path(path), vocab_size, dtype)
    return _CACHE[key]


def _read_token_files(p: Path, vocab_size: int | None, dtype: str | None) -> TokenSource:
    if not p.exists():
        raise ValueError(f"data path {str(p)!r} does not exist")
    meta = _read_meta(p if p.is_dir() else p.parent)
    np_dtype = np.dtype(dtype or str(meta.get("dtype", "uint16")))
    if np_dtype not in (np.dtype("uint16"), np.dtype("uint32")):
        raise ValueError(f"token dtype must be uint16 or uint32, not {np_dtype}")
    if p.is_dir():
        train_path, val_path = p / "train.bin", p / "val.bin"
        missing = [str(x) for x in (train_path, val_path) if not x.exists()]
        if missing:
            raise ValueError(f"data directory {str(p)!r} lacks {', '.join(missing)}")
        train: np.ndarray = np.memmap(train_path, dtype=np_dtype, mode="r")
        val: np.ndarray = np.memmap(val_path, dtype=np_dtype, mode="r")
    else:
        tokens = np.memmap(p, dtype=np_dtype, mode="r")
        split = int(len(tokens) * (1 - VAL_FRACTION))
        train, val = tokens[:split], tokens[split:]
    vocab = vocab_size if vocab_size is not None else meta.get("vocab_size")
    if vocab is None:
        raise ValueError(f"vocabulary size of {str(p)!r} unknown: add meta.json with vocab_size, or pass it")
    vocab = int(str(vocab))
    # Checking every token is cheap next to training and turns an index error deep in the model into a message.
    top = max(int(train.max(initial=0)), int(val.max(initial=0)))
    if top >= vocab:
        raise ValueError(f"{str(p)!r} holds token id {top}, but the vocabulary size is {vocab}")
    return TokenSource(str(p), np.asarray(train), np.asarray(val), vocab, _hash_arrays(train, val))


def load_source(data: str | None, vocab_size: int | None = None) -> TokenSource:
    """The source a run names: None or "builtin" for the built-in corpus, else a path to token files."""
    if data in (None, "", BUILTIN):
        return builtin_corpus()
    assert data is not None
    return token_files(data, vocab_size)


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]  # (B, T+1)
    chunk = torch.from_numpy(tokens[idx].astype(np.int64))  # (B, T+1)
    return chunk[:, :-1], chunk[:, 1:]  # inputs (B, T), targets (B, T)


def train_batch(
    source: TokenSource, seed: int, step: int, batch_size: int, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training batch number `step` for `seed`: random windows, a pure function of (seed, step)."""
    if len(source.train) <= seq_len + 1:
        raise ValueError(f"training split of {source.name} has {len(source.train)} tokens, fewer than a sequence")
    rng = np.random.Generator(np.random.PCG64([seed, step]))
    starts = rng.integers(0, len(source.train) - seq_len - 1, size=batch_size)
    return _windows(source.train, starts, seq_len)


def val_batches(
    source: TokenSource, n_sequences: int, batch_size: int, seq_len: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed validation set: `n_sequences` evenly spaced windows of the validation split, batched."""
    span = len(source.val) - seq_len - 1
    if span <= 0:
        raise ValueError(f"validation split of {source.name} is shorter than one sequence")
    n = max(1, min(n_sequences, span))
    starts = np.linspace(0, span, num=n, dtype=np.int64)
    return [_windows(source.val, starts[i : i + batch_size], seq_len) for i in range(0, n, batch_size)]
