"""The proposer registry (sweep_service/proposers/): its names, its error, the contract every entry keeps, and the
engine's behaviour through it, configs and order, unchanged from before the registry (proposer_cases.py)."""

from __future__ import annotations

import json
import math
from typing import Any

import optuna
import pytest

from db.repository import config_key
from sweep_service import proposers
from sweep_service.proposers import REGISTRY, CellHistory, Limits, Step, get_proposer
from sweep_service.spec import STRATEGIES, Space
from tests.sweep_service.fake_sweep import LR, WD, objective
from tests.sweep_service.proposer_cases import CASES, GOLDEN, run_case

SPACE = Space({"lr": tuple(LR), "wd": tuple(WD)}, {"lr": 3e-3, "wd": 0.0}, {"beta2": 0.98})


def _cmaes_available(strategy: str) -> None:
    if strategy == "cmaes":
        pytest.importorskip("cmaes", reason="Optuna's CmaEsSampler needs the cmaes package")


# ---- the registry ------------------------------------------------------------------------------------------


def test_the_registry_holds_every_strategy_a_spec_accepts() -> None:
    assert sorted(REGISTRY) == sorted(STRATEGIES)
    assert all(proposer.name == name for name, proposer in REGISTRY.items())


def test_an_unknown_strategy_is_an_error_that_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'bayes'") as info:
        get_proposer("bayes")
    assert all(name in str(info.value) for name in STRATEGIES)


def test_a_name_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="registered already"):
        proposers.base.register(REGISTRY["tpe"])


@pytest.mark.parametrize(
    ("strategy", "sampler"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("grid", optuna.samplers.GridSampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
    ],
)
def test_each_optuna_strategy_asks_its_own_sampler(strategy: str, sampler: type) -> None:
    _cmaes_available(strategy)
    study = optuna.create_study(direction="minimize")
    step = get_proposer(strategy).propose(CellHistory(SPACE, [], [], 0), _limits(study))
    assert type(study.sampler) is sampler or (strategy == "grid" and isinstance(study.sampler, sampler))
    assert len(step.suggestions) == 1 and step.suggestions[0].optuna_trial == 0 and step.round == 1


def test_cmaes_searches_grid_indices_and_mirrors_them() -> None:
    cmaes = get_proposer("cmaes")
    assert isinstance(cmaes, proposers.cmaes.CmaEs)
    dists = cmaes.distributions(SPACE)
    assert dists == {
        "lr": optuna.distributions.IntDistribution(0, 3),
        "wd": optuna.distributions.IntDistribution(0, 2),
    }
    assert cmaes.decode(SPACE, {"lr": 2, "wd": 1}) == {"lr": 1.2e-2, "wd": 0.1}
    assert cmaes.encode(SPACE, {"lr": 1.2e-2, "wd": 0.1}) == {"lr": 2, "wd": 1}
    study = optuna.create_study(direction="minimize")
    cmaes.record(study, SPACE, {"lr": 1.2e-2, "wd": 0.1}, 3.0, None, {"seed": 0})
    (trial,) = study.trials
    assert trial.params == {"lr": 2, "wd": 1} and trial.value == 3.0 and trial.user_attrs == {"seed": 0}


# ---- the contract, for every registered proposer (STYLE.md rule 3) ----------------------------------------


def _limits(study: optuna.Study, seed: int = 7, budget: int = 8) -> Limits:
    return Limits(
        tolerance=3e-3,
        budget=budget,
        max_concurrent=2,
        max_rounds=None,
        seed=seed,
        steps_for=lambda config: 1000,
        study=lambda: study,
    )


def _run(strategy: str, seed: int = 7, budget: int = 8) -> tuple[list[dict[str, Any]], Step]:
    """Run a proposer on the fake objective like the engine does, finishing the oldest config first; returns the
    configs in the order proposed and the last step."""
    proposer = get_proposer(strategy)
    study = optuna.create_study(direction="minimize")
    finished: list[tuple[dict[str, Any], float]] = []
    pending: list[tuple[dict[str, Any], int | None]] = []
    proposed: list[dict[str, Any]] = []
    round_ = 0
    for _ in range(200):
        history = CellHistory(SPACE, list(finished), [c for c, _ in pending], round_)
        step = proposer.propose(history, _limits(study, seed, budget))
        known = {config_key(c) for c in proposed}
        for suggestion in step.suggestions:
            config = suggestion.config
            assert set(config) == set(SPACE.grid), "a suggestion holds exactly the searched names"
            assert all(config[k] in SPACE.grid[k] for k in config), "a suggestion stays on the grid"
            assert config_key(config) not in known, "never re-proposes a finished or pending config"
            known.add(config_key(config))
            proposed.append(config)
            pending.append((config, suggestion.optuna_trial))
        assert (step.round is None) == (not step.suggestions)
        round_ = step.round if step.round is not None else round_
        if step.done is not None:
            assert not step.suggestions and not pending
            return proposed, step
        if pending:
            config, number = pending.pop(0)
            loss = objective(config)
            finished.append((config, loss))
            proposer.record(study, SPACE, config, loss, number, {})
    raise AssertionError(f"{strategy} did not finish")


@pytest.mark.parametrize("strategy", sorted(REGISTRY))
def test_every_proposer_keeps_the_contract_and_is_seed_deterministic(strategy: str) -> None:
    _cmaes_available(strategy)
    proposed, last = _run(strategy)
    assert proposed == _run(strategy)[0]
    assert len(proposed) <= 8  # the budget
    assert last.best is not None and last.best_loss == min(objective(c) for c in proposed)
    assert last.best in last.near_ties


def test_coordinate_descent_runs_the_paper_rounds_to_the_optimum() -> None:
    proposed, last = _run("coordinate_descent", budget=100)
    assert last.done == "converged" and last.best == {"lr": 1.2e-2, "wd": 0.1}
    # The baseline's whole neighbourhood first, in grid order (PAPER.md section 4).
    assert proposed[:6] == [
        {"lr": 3e-3, "wd": 0.0},
        {"lr": 6e-3, "wd": 0.0},
        {"lr": 1.2e-2, "wd": 0.0},
        {"lr": 2.4e-2, "wd": 0.0},
        {"lr": 3e-3, "wd": 0.1},
        {"lr": 3e-3, "wd": 0.2},
    ]


def test_optuna_proposers_end_the_cell_when_the_grid_is_used_up() -> None:
    proposed, last = _run("grid", budget=100)
    assert last.done == "exhausted"
    assert len(proposed) == len(LR) * len(WD)


# ---- the engine through the registry: what it ran before the registry ----------------------------------------

BEFORE = json.loads(GOLDEN.read_text())


def _check_optuna_version(case: str) -> None:
    sampled = CASES[case].get("strategy", "coordinate_descent") != "coordinate_descent"
    if sampled and optuna.__version__ != BEFORE["optuna"]:
        pytest.skip(f"recorded with Optuna {BEFORE['optuna']}; its samplers' draws differ by version")


def _same(a: Any, b: Any) -> bool:
    """JSON-equal: floats written by json.dumps read back exactly, +inf as the string "inf"."""
    return bool(json.loads(json.dumps(a, default=str)) == b)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_engine_runs_the_same_configs_in_the_same_order_as_before(case: str) -> None:
    _check_optuna_version(case)
    assert _same(run_case(CASES[case]), BEFORE["cases"][case])


def test_the_recorded_strategies_differ_so_a_swapped_registry_entry_is_caught() -> None:
    sequences = {case: [t[:2] for t in BEFORE["cases"][case]["trials"]] for case in ("tpe", "random", "grid")}
    assert sequences["grid"][:7] != sequences["random"] and sequences["grid"][:11] != sequences["tpe"]
    # TPE's 10 start-up trials are random draws under the same seed, so its first 7 configs are random's: the tpe
    # case runs 11, and the next test shows that a random proposer under the name "tpe" is caught.
    assert sequences["tpe"][:7] == sequences["random"]


@pytest.mark.slow
def test_the_golden_check_fails_when_the_registry_hands_out_another_proposer(monkeypatch: pytest.MonkeyPatch) -> None:
    _check_optuna_version("tpe")
    monkeypatch.setitem(REGISTRY, "tpe", REGISTRY["random"])  # TPE's start-up trials are random draws too
    assert not _same(run_case(CASES["tpe"]), BEFORE["cases"]["tpe"])


def test_a_finished_config_of_infinite_loss_is_never_best() -> None:
    proposed, last = _run("random", budget=12)
    assert any(not math.isfinite(objective(c)) for c in proposed)
    assert last.best is not None and math.isfinite(last.best_loss)
