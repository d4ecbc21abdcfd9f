"""The contract every registered optimizer must meet; a new optimizer file is tested without a new test.

STYLE.md rule 3: builds on the real model, steps, lowers a toy loss, survives the state_dict round trip
bitwise, works with bf16 parameters and fp32 state, and trains tiny-130k through the real trainer.
"""

from __future__ import annotations

import copy

import pytest
import torch

from workers.data import builtin_corpus, train_batch
from workers.model import SCALES, Transformer, build_model
from workers.optimizers import REGISTRY, get_spec, resolve_hparams
from workers.schedules import KINDS
from workers.trainer import RunConfig, compute_gradients, train

NAMES = sorted(REGISTRY)
CPU = torch.device("cpu")


def _model(seed: int = 0, dtype: torch.dtype = torch.float32) -> Transformer:
    torch.manual_seed(seed)
    return build_model(SCALES["tiny-130k"]).to(dtype)


def _optimizer(name: str, model: Transformer, **overrides: float) -> torch.optim.Optimizer:
    spec = get_spec(name)
    optimizer = spec.build(model, resolve_hparams(spec, "tiny", overrides))
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return optimizer


def _step(name: str, model: Transformer, optimizer: torch.optim.Optimizer, step: int, batch: int = 8) -> float:
    x, y = train_batch(builtin_corpus(), seed=0, step=step, batch_size=batch, seq_len=64)
    loss = compute_gradients(model, optimizer, x, y, batch, CPU)
    if not get_spec(name).clips_itself:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


# The paper's 11 optimizers (PAPER.md, arXiv 2509.02046: AdamW, NAdamW, Mars, Cautious, Lion, Adam-mini, Muon,
# Scion, Kron, Soap, Sophia) and the follow-up's two Hyperball optimizers (AdamH, MuonH).
PAPER_OPTIMIZERS = {
    *("adamw", "nadamw", "mars", "cautious", "lion", "adam_mini"),
    *("muon", "scion", "kron", "soap", "sophia"),
}
HYPERBALL_OPTIMIZERS = {"adamh", "muonh"}


def test_the_registry_holds_the_papers_optimizers() -> None:
    assert set(REGISTRY) == PAPER_OPTIMIZERS | HYPERBALL_OPTIMIZERS
    for name, spec in REGISTRY.items():
        assert spec.name == name == name.lower()
        assert spec.reference, f"{name}: no reference named"


@pytest.mark.parametrize("name", NAMES)
def test_spec_is_well_formed(name: str) -> None:
    spec = get_spec(name)
    assert spec.schedule in KINDS
    assert set(spec.spaces) == {"paper", "tiny"}
    paper, tiny = spec.spaces["paper"], spec.spaces["tiny"]
    # Same hyperparameters and the same number of values per hyperparameter (PAPER.md section 3).
    assert list(paper.grid) == list(tiny.grid)
    assert {k: len(v) for k, v in paper.grid.items()} == {k: len(v) for k, v in tiny.grid.items()}
    names = set(spec.hparam_names())
    for space in (paper, tiny):
        assert set(space.grid) | set(space.fixed) <= names
    for family in ("paper", "tiny"):
        resolved = resolve_hparams(spec, family)
        assert set(resolved) == names


@pytest.mark.parametrize("name", NAMES)
def test_builds_over_every_parameter_once(name: str) -> None:
    model = _model()
    optimizer = _optimizer(name, model)
    seen = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in model.parameters()}
    assert all(g["lr"] > 0 for g in optimizer.param_groups)


@pytest.mark.parametrize("name", NAMES)
def test_lowers_a_toy_loss(name: str) -> None:
    model = _model()
    optimizer = _optimizer(name, model)
    x, y = train_batch(builtin_corpus(), seed=0, step=0, batch_size=8, seq_len=64)
    with torch.no_grad():
        before = float(model(x, y))
    for step in range(30):
        _step(name, model, optimizer, step)
    with torch.no_grad():
        after = float(model(x, y))
    assert after < before - 1.0, f"{name}: {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_is_bitwise(name: str) -> None:
    model = _model()
    optimizer = _optimizer(name, model)
    for step in range(12):
        _step(name, model, optimizer, step)
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    reference = [_step(name, model, optimizer, step) for step in range(12, 24)]

    fresh = _model(seed=123)  # different init: everything must come from the saved state
    fresh.load_state_dict(saved_model)
    resumed = _optimizer(name, fresh)
    resumed.load_state_dict(saved_optimizer)
    continued = [_step(name, fresh, resumed, step) for step in range(12, 24)]
    assert continued == reference
    for (n, a), b in zip(model.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("name", NAMES)
def test_bf16_params_with_fp32_state(name: str) -> None:
    model = _model(dtype=torch.bfloat16)
    optimizer = _optimizer(name, model)
    for step in range(3):
        _step(name, model, optimizer, step, batch=4)
    assert all(p.dtype == torch.bfloat16 and torch.isfinite(p).all() for p in model.parameters())
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() > 1:
                assert value.dtype == torch.float32, f"{name}: state tensor of dtype {value.dtype}"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_trains_tiny_130k_through_the_trainer(name: str) -> None:
    baseline_warmup = int(resolve_hparams(get_spec(name), "tiny")["warmup"])
    result = train(
        RunConfig(scale="tiny-130k", optimizer=name, chinchilla=0.1, hparams={"warmup": min(baseline_warmup, 8)})
    )
    assert result.status == "completed", result.reason
    assert result.final_eval_loss < 0.75 * result.initial_eval_loss, (result.initial_eval_loss, result.curve)
