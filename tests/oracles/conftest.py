"""Oracle tests run torch on one thread: their tensors are tiny, and on a loaded 2-core machine two threads per
op cost far more in contention than they gain (measured: 20 AdamW steps of the harness model 0.45 s on 2 threads,
0.06 s on 1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
