"""Shared fixtures. Tests mirror the package tree (tests/workers, tests/sweep_service, ...)."""

from __future__ import annotations

import pytest
import torch

from workers.model import SCALES, Transformer, build_model


@pytest.fixture
def tiny_model() -> Transformer:
    torch.manual_seed(0)
    return build_model(SCALES["tiny-130k"])
