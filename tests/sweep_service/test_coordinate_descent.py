"""Coordinate descent (PAPER.md section 4) on hand-built objective tables, and as an Optuna sampler."""

from __future__ import annotations

import itertools
import math
import random
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import pytest

from sweep_service.coordinate_descent import (
    Config,
    CoordinateDescentSampler,
    HParam,
    config_key,
    near_tie,
    propose,
    ranking_loss,
    run_to_convergence,
    suggest_config,
)
from workers.optimizers.base import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A small grid shaped like PAPER.md section 3 (values are illustrative; indices matter, not the numbers).
SPACE = SearchSpace(
    grid={"lr": (1e-3, 2e-3, 4e-3, 8e-3), "wd": (0.0, 0.1, 0.2), "beta1": (0.8, 0.9, 0.95)},
    baseline={"lr": 2e-3, "wd": 0.1, "beta1": 0.9},
    fixed={"min_lr_ratio": 0.0},
)


def cfg(lr: float, wd: float, beta1: float) -> Config:
    return {"lr": lr, "wd": wd, "beta1": beta1, "min_lr_ratio": 0.0}


B = cfg(2e-3, 0.1, 0.9)  # SPACE's baseline


def neighbourhood(space: SearchSpace, center: Mapping[str, HParam]) -> list[Config]:
    """Oracle written from PAPER.md section 4 step 1: the centre plus every one-hyperparameter change."""
    out = [{**{n: center[n] for n in space.grid}, **space.fixed}]
    for name, values in space.grid.items():
        for v in values:
            if v != center[name]:
                out.append({**out[0], name: v})
    return out


def all_configs(space: SearchSpace) -> list[Config]:
    names = list(space.grid)
    return [{**dict(zip(names, vs, strict=True)), **space.fixed} for vs in itertools.product(*space.grid.values())]


def separable(space: SearchSpace, tables: Mapping[str, Sequence[float]]) -> Callable[[Mapping[str, Any]], float]:
    """Loss = 3 + sum over hyperparameters of a per-value table (a separable bowl when the tables are convex)."""

    def loss(config: Mapping[str, Any]) -> float:
        return 3.0 + sum(tables[n][list(space.grid[n]).index(config[n])] for n in space.grid)

    return loss


# --- the first proposal ------------------------------------------------------------------------------------


def test_first_proposal_is_the_whole_baseline_neighbourhood_in_grid_order() -> None:
    p = propose(SPACE, None, [])
    expected = [
        B,
        cfg(1e-3, 0.1, 0.9),
        cfg(4e-3, 0.1, 0.9),
        cfg(8e-3, 0.1, 0.9),
        cfg(2e-3, 0.0, 0.9),
        cfg(2e-3, 0.2, 0.9),
        cfg(2e-3, 0.1, 0.8),
        cfg(2e-3, 0.1, 0.95),
    ]
    assert p.configs == expected == neighbourhood(SPACE, B)
    assert not p.converged and p.remaining == 8
    assert p.best is None and p.best_loss == math.inf and p.near_ties == []
    assert p.center == B and p.pruned == []


def test_baseline_argument_overrides_the_space_baseline() -> None:
    start = cfg(8e-3, 0.0, 0.95)  # e.g. another cell's best
    p = propose(SPACE, start, [])
    assert p.center == start and p.configs == neighbourhood(SPACE, start)


def test_baseline_at_the_grid_edge_has_neighbours_in_one_direction_only() -> None:
    start = cfg(1e-3, 0.2, 0.8)  # first lr, last wd, first beta1
    p = propose(SPACE, start, [])
    assert len(p.configs) == 1 + 3 + 2 + 2
    for c in p.configs[1:]:
        (name,) = [n for n in SPACE.grid if c[n] != start[n]]
        grid = list(SPACE.grid[name])
        # Every change of lr and beta1 goes up the grid, every change of wd goes down.
        if name == "wd":
            assert grid.index(c[name]) < grid.index(start[name])
        else:
            assert grid.index(c[name]) > grid.index(start[name])
    # And descent from that corner reaches an optimum in the opposite corner.
    f = separable(SPACE, {"lr": (0.4, 0.3, 0.2, 0.0), "wd": (0.0, 0.1, 0.2), "beta1": (0.3, 0.2, 0.0)})
    result = run_to_convergence(SPACE, start, f)
    assert result.proposal.converged and result.proposal.best == cfg(8e-3, 0.0, 0.95)


# --- reaching the optimum -----------------------------------------------------------------------------------


def test_separable_bowl_reaches_the_global_optimum_from_every_start() -> None:
    f = separable(SPACE, {"lr": (0.20, 0.05, 0.0, 0.10), "wd": (0.08, 0.0, 0.04), "beta1": (0.3, 0.1, 0.0)})
    optimum = min(all_configs(SPACE), key=f)
    assert optimum == cfg(4e-3, 0.1, 0.95)
    for start in all_configs(SPACE):
        result = run_to_convergence(SPACE, start, f)
        p = result.proposal
        assert p.converged and p.configs == [] and p.remaining == 0
        assert p.best == optimum and p.best_loss == pytest.approx(f(optimum))
        ran = [config_key(SPACE, c) for c, _ in result.history]
        assert len(ran) == len(set(ran)), "a config ran twice"
        assert all(config_key(SPACE, c) in set(ran) for c in neighbourhood(SPACE, optimum))


def test_random_separable_tables_reach_the_global_optimum() -> None:
    """With per-value gaps of at least 0.01 > tolerance, a converged centre cannot be beaten by a neighbour."""
    space = SearchSpace(
        grid={"a": (1, 2, 3, 4), "b": (0.1, 0.2, 0.3), "c": ("x", "y", "z", "w"), "d": (True, False)},
        baseline={"a": 2, "b": 0.2, "c": "y", "d": True},
    )
    rng = random.Random(0)
    for _ in range(40):
        tables = {n: [k * 0.01 for k in rng.sample(range(100), len(v))] for n, v in space.grid.items()}
        f = separable(space, tables)
        start = rng.choice(all_configs(space))
        result = run_to_convergence(space, start, f)
        assert result.proposal.converged
        assert result.proposal.best == min(all_configs(space), key=f)
        assert len(result.history) < len(all_configs(space))  # it is a descent, not the full grid


def test_each_round_proposes_the_new_centres_whole_neighbourhood_at_once() -> None:
    f = separable(SPACE, {"lr": (0.3, 0.2, 0.1, 0.0), "wd": (0.0, 0.1, 0.2), "beta1": (0.0, 0.1, 0.2)})
    history: list[tuple[Config, float]] = [(c, f(c)) for c in propose(SPACE, None, []).configs]
    p = propose(SPACE, None, history)
    # Best of round one: lr 8e-3 (gain 0.2); its unfinished neighbours all come at once.
    assert p.center == p.best == cfg(8e-3, 0.1, 0.9)
    finished = {config_key(SPACE, c) for c, _ in history}
    expected = [c for c in neighbourhood(SPACE, cfg(8e-3, 0.1, 0.9)) if config_key(SPACE, c) not in finished]
    assert p.configs == expected and len(expected) == 4 and p.remaining == 4


# --- diverged runs ----------------------------------------------------------------------------------------


def round_one(losses: Mapping[int, float], default: float = 3.7) -> list[tuple[Config, float]]:
    """The baseline's neighbourhood with the given losses by position (others get `default`)."""
    return [(c, losses.get(i, default)) for i, c in enumerate(neighbourhood(SPACE, B))]


def test_diverged_runs_are_finished_and_never_best() -> None:
    # Positions: 0 baseline, 1-3 lr changes, 4-5 wd changes, 6-7 beta1 changes.
    history = round_one({0: 3.6, 1: math.nan, 2: math.inf, 3: 2e4, 4: -math.inf, 5: 3.65})
    p = propose(SPACE, None, history)
    assert p.best == B and p.best_loss == 3.6 and p.near_ties == [B]
    assert p.converged and p.configs == []  # nothing diverged is proposed again


def test_divergence_threshold_is_a_setting() -> None:
    history = round_one({3: 2e4}, default=math.inf)
    assert propose(SPACE, None, history).best is None
    p = propose(SPACE, None, history, divergence_threshold=1e5)
    assert p.best == cfg(8e-3, 0.1, 0.9) and p.best_loss == 2e4
    assert ranking_loss(None) == ranking_loss(math.nan) == ranking_loss(1e4 + 1) == math.inf
    assert ranking_loss(1e4) == 1e4  # "above" the threshold, not at it (Marin: loss > 10000)


def test_all_diverged_converges_with_no_best() -> None:
    p = propose(SPACE, None, round_one({}, default=math.inf))
    assert p.converged and p.best is None and p.best_loss == math.inf and p.near_ties == [] and p.configs == []


def test_diverged_baseline_moves_to_the_best_finite_neighbour() -> None:
    p = propose(SPACE, None, round_one({0: math.inf, 6: 3.5}))
    assert p.best == p.center == cfg(2e-3, 0.1, 0.8) and not p.converged
    assert B not in p.configs


# --- ties and near-ties -------------------------------------------------------------------------------------

X = cfg(4e-3, 0.1, 0.9)  # round-one position 2
Y = cfg(2e-3, 0.0, 0.9)  # round-one position 4


def tie_history(x: float, y: float, extra: Sequence[Config] = ()) -> list[tuple[Config, float]]:
    return [*round_one({0: 3.6, 2: x, 4: y}), *[(c, 3.8) for c in extra]]


def test_near_tie_with_fewest_new_runs_is_the_centre() -> None:
    # After round one X needs 4 new runs and Y needs 5; three more finished neighbours of Y leave it 2.
    Y_done = [cfg(1e-3, 0.0, 0.9), cfg(8e-3, 0.0, 0.9), cfg(2e-3, 0.0, 0.8)]
    p = propose(SPACE, None, tie_history(3.529, 3.531, Y_done))
    assert p.best == X and p.best_loss == 3.529 and p.near_ties == [X, Y]
    assert p.center == Y and p.center_loss == 3.531
    assert p.configs == [cfg(4e-3, 0.0, 0.9), cfg(2e-3, 0.0, 0.95)] and p.remaining == 2


def test_fewest_new_runs_without_extra_history_picks_the_best() -> None:
    p = propose(SPACE, None, tie_history(3.529, 3.531))
    assert p.center == X and p.remaining == 4
    assert p.configs == [cfg(4e-3, 0.0, 0.9), cfg(4e-3, 0.2, 0.9), cfg(4e-3, 0.1, 0.8), cfg(4e-3, 0.1, 0.95)]


def test_tolerance_boundary() -> None:
    Y_done = [cfg(1e-3, 0.0, 0.9), cfg(8e-3, 0.0, 0.9), cfg(2e-3, 0.0, 0.8)]
    # 3.532 - 3.529 is 3e-3 in decimal (3.0000000000000001e-3 in floats): inclusive, a near-tie.
    assert propose(SPACE, None, tie_history(3.529, 3.532, Y_done)).center == Y
    # 4e-3 apart: not a near-tie, so the best is the centre although Y needs fewer runs.
    p = propose(SPACE, None, tie_history(3.529, 3.533, Y_done))
    assert p.center == X and p.near_ties == [X]
    # Tolerance 0 keeps exact ties only; a larger tolerance is honoured.
    assert propose(SPACE, None, tie_history(3.529, 3.531, Y_done), 0.0).center == X
    assert propose(SPACE, None, tie_history(3.529, 3.539, Y_done), 0.02).center == Y


def test_equal_new_runs_break_ties_by_loss_then_grid_order() -> None:
    Y_one = [cfg(1e-3, 0.0, 0.9)]  # now X and Y both need 4 new runs
    assert propose(SPACE, None, tie_history(3.529, 3.530, Y_one)).center == X  # lower loss
    exact = propose(SPACE, None, tie_history(3.529, 3.529, Y_one))
    assert exact.center == Y  # exact tie: Y (lr index 1) precedes X (lr index 2) in grid order
    assert exact.best == Y and exact.near_ties == [Y, X]  # the best of an exact tie is also by grid order


def test_converges_at_a_near_tie_whose_neighbourhood_is_finished() -> None:
    # Y's whole neighbourhood has run; the best X's has not. The paper stops (section 4 step 4).
    # (Runs already in round one appear twice; a config counts once, with its lower loss.)
    p = propose(SPACE, None, tie_history(3.529, 3.531, neighbourhood(SPACE, Y)))
    assert p.converged and p.configs == [] and p.center == Y
    assert p.best == X and p.best_loss == 3.529  # the cell's record is still the minimum


# --- warmup pruning -----------------------------------------------------------------------------------------

# PAPER.md section 3 AdamW warmup and batch grids; 130m at 1x is 20 x 134,217,728 tokens (PAPER.md section 2).
PAPER_WARMUP_SPACE = SearchSpace(
    grid={"lr": (4e-3, 8e-3), "warmup": (500, 1000, 2000, 4000), "batch_size": (128, 256, 512, 1024)},
    baseline={"lr": 8e-3, "warmup": 2000, "batch_size": 128},
)
TOKENS_130M_1X = 20 * 134_217_728


def steps_130m_1x(config: Config) -> int:
    # Steps = tokens / (4096 x batch) (PAPER.md section 2): 5120, 2560, 1280, 640.
    return TOKENS_130M_1X // (4096 * int(config["batch_size"]))


def test_warmup_not_less_than_steps_is_pruned() -> None:
    p = propose(PAPER_WARMUP_SPACE, None, [], steps_for=steps_130m_1x)
    base = dict(PAPER_WARMUP_SPACE.baseline)
    pruned = [{**base, "batch_size": 512}, {**base, "batch_size": 1024}]  # 1280 and 640 steps <= warmup 2000
    assert p.pruned == pruned
    assert p.configs == [c for c in neighbourhood(PAPER_WARMUP_SPACE, base) if c not in pruned]
    assert len(p.configs) == 6 and p.remaining == 6
    # Pruned configs need no run: the cell converges without them.
    p = propose(PAPER_WARMUP_SPACE, None, [(c, 3.6 if c == base else 3.7) for c in p.configs], steps_for=steps_130m_1x)
    assert p.converged and p.best == base and p.pruned == pruned


def test_warmup_equal_to_steps_is_pruned_and_a_pruned_baseline_is_never_run() -> None:
    base = dict(PAPER_WARMUP_SPACE.baseline)  # warmup 2000
    p = propose(PAPER_WARMUP_SPACE, None, [], max_steps=2000)
    assert p.configs == [{**base, "warmup": 500}, {**base, "warmup": 1000}]
    assert base in p.pruned
    history = [({**base, "warmup": 500}, 3.6), ({**base, "warmup": 1000}, 3.5)]
    p = propose(PAPER_WARMUP_SPACE, None, history, max_steps=2000)
    assert p.center == p.best == {**base, "warmup": 1000}
    assert all(int(c["warmup"]) < 2000 for c in p.configs) and base not in p.configs
    with pytest.raises(ValueError, match="not both"):
        propose(PAPER_WARMUP_SPACE, None, [], max_steps=10, steps_for=steps_130m_1x)


def test_fixed_warmup_is_pruned_too() -> None:
    space = SearchSpace(grid={"lr": (1.0, 2.0)}, baseline={"lr": 1.0}, fixed={"warmup": 100})
    assert propose(space, None, [], max_steps=100).configs == []
    assert propose(space, None, [], max_steps=100).converged
    assert len(propose(space, None, [], max_steps=101).configs) == 2


# --- bookkeeping invariants ---------------------------------------------------------------------------------


def test_values_that_went_through_float32_or_json_match_the_grid() -> None:
    def f32(x: HParam) -> float:
        return float(struct.unpack("f", struct.pack("f", float(x)))[0])

    history = [({"lr": f32(c["lr"]), "wd": f32(c["wd"]), "beta1": str(c["beta1"])}, loss) for c, loss in round_one({})]
    assert not propose(SPACE, None, history).converged  # a string "0.9" is not the number 0.9: off-grid
    history = [({**c, "lr": f32(c["lr"]), "wd": f32(c["wd"]), "extra": "ignored"}, loss) for c, loss in round_one({})]
    p = propose(SPACE, None, history)
    assert p.converged and p.configs == []
    space = SearchSpace(
        grid={"batch_size": (128, 256), "norm": (False, True)}, baseline={"batch_size": 128, "norm": True}
    )
    assert config_key(space, {"batch_size": 128.0, "norm": True}) == config_key(
        space, {"batch_size": 128, "norm": True}
    )
    assert config_key(space, {"batch_size": 128, "norm": 1}) != config_key(space, {"batch_size": 128, "norm": True})


def test_off_grid_history_values_count_as_runs() -> None:
    off = cfg(5e-3, 0.1, 0.9)  # lr 5e-3 is not in the grid
    p = propose(SPACE, None, [*round_one({0: 3.6}), (off, 3.4)])
    assert p.best == p.center == off
    assert p.configs == [cfg(5e-3, 0.0, 0.9), cfg(5e-3, 0.2, 0.9), cfg(5e-3, 0.1, 0.8), cfg(5e-3, 0.1, 0.95)]


def test_duplicate_runs_count_once_with_the_lower_loss() -> None:
    p = propose(SPACE, None, [*round_one({0: 3.6, 7: 3.9}), (cfg(2e-3, 0.1, 0.95), 3.5)])
    assert p.best == cfg(2e-3, 0.1, 0.95) and p.best_loss == 3.5


def test_missing_hyperparameters_are_errors() -> None:
    with pytest.raises(ValueError, match="baseline lacks"):
        propose(SPACE, {"lr": 1e-3}, [])
    with pytest.raises(ValueError, match="history config"):
        propose(SPACE, None, [({"lr": 1e-3, "wd": 0.0}, 3.0)])


def test_pending_runs_are_not_proposed_and_block_convergence() -> None:
    history = round_one({0: 3.6})[:-2]  # the two beta1 changes are still running
    pending = neighbourhood(SPACE, B)[-2:]
    p = propose(SPACE, None, history, pending=pending)
    assert p.configs == [] and not p.converged and p.remaining == 2
    p = propose(SPACE, None, history, pending=pending[:1])
    assert p.configs == pending[1:] and p.remaining == 2


def test_history_order_does_not_matter() -> None:
    history = [*tie_history(3.529, 3.531, [cfg(1e-3, 0.0, 0.9)]), (cfg(8e-3, 0.2, 0.95), math.nan)]
    reference = propose(SPACE, None, history)
    rng = random.Random(1)
    for _ in range(20):
        shuffled = history[:]
        rng.shuffle(shuffled)
        assert propose(SPACE, None, shuffled) == reference


def test_random_histories_respect_the_invariants() -> None:
    """Never re-propose a finished or running config; stay in the centre's neighbourhood; best is the minimum."""
    grid = all_configs(SPACE)
    rng = random.Random(2)
    for _ in range(300):
        finished = rng.sample(grid, rng.randrange(len(grid)))
        history = [(c, rng.choice([math.inf, math.nan, 3.5 + rng.randrange(20) * 1e-3])) for c in finished]
        free = [c for c in grid if c not in finished]
        running = rng.sample(free, min(len(free), rng.randrange(3)))
        p = propose(SPACE, rng.choice(grid), history, pending=running)
        taken = {config_key(SPACE, c) for c in [*finished, *running]}
        keys = [config_key(SPACE, c) for c in p.configs]
        assert not taken & set(keys) and len(keys) == len(set(keys))
        assert all(sum(c[n] != p.center[n] for n in SPACE.grid) <= 1 for c in p.configs)
        assert p.converged == (p.remaining == 0) and p.remaining >= len(p.configs)
        finite = [loss for _, loss in history if math.isfinite(loss)]
        assert p.best_loss == (min(finite) if finite else math.inf)
        assert all(loss - p.best_loss <= 3e-3 + 1e-12 for c, loss in history if c in p.near_ties)


@dataclass(frozen=True)
class PlainSpace:
    """Any object with grid, baseline and fixed works (no torch needed)."""

    grid: Mapping[str, Sequence[HParam]]
    baseline: Mapping[str, HParam]
    fixed: Mapping[str, HParam] = field(default_factory=dict)


def test_plain_space_and_no_torch_or_ray_import() -> None:
    space = PlainSpace(grid={"lr": [1.0, 2.0, 3.0]}, baseline={"lr": 2.0})
    result = run_to_convergence(space, None, lambda c: (float(c["lr"]) - 3.0) ** 2)
    assert result.proposal.best == {"lr": 3.0}
    code = "import sys, sweep_service.coordinate_descent; print([m for m in ('torch', 'ray') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- as an Optuna sampler -----------------------------------------------------------------------------------

BOWL_SPACE = SearchSpace(
    grid={"lr": (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2), "wd": (0.0, 0.1, 0.2), "beta1": (0.8, 0.9, 0.95, 0.98)},
    baseline={"lr": 1e-3, "wd": 0.2, "beta1": 0.8},
    fixed={"min_lr_ratio": 0.0},
)
BOWL = separable(BOWL_SPACE, {"lr": (0.5, 0.2, 0.05, 0.0, 0.3), "wd": (0.1, 0.0, 0.05), "beta1": (0.3, 0.1, 0.0, 0.2)})
BOWL_OPTIMUM = {"lr": 8e-3, "wd": 0.1, "beta1": 0.95}


def bowl_objective(trial: optuna.Trial) -> float:
    return BOWL(suggest_config(trial, BOWL_SPACE))


def test_sampler_reaches_the_optimum_and_stops_like_run_to_convergence() -> None:
    sampler = CoordinateDescentSampler(BOWL_SPACE)
    study = optuna.create_study(sampler=sampler, storage=optuna.storages.InMemoryStorage())
    study.optimize(bowl_objective, n_trials=500)
    assert sampler.converged and study.best_params == BOWL_OPTIMUM
    reference = run_to_convergence(BOWL_SPACE, None, BOWL)
    assert [t.params for t in study.trials] == [{n: c[n] for n in BOWL_SPACE.grid} for c, _ in reference.history]
    assert sampler.proposal is not None and sampler.proposal.best == {**BOWL_OPTIMUM, "min_lr_ratio": 0.0}
    # Asked again after convergence, it stops after one fallback trial.
    study.optimize(bowl_objective, n_trials=5)
    assert len(study.trials) == len(reference.history) + 1


def test_sampler_counts_nan_and_raised_trials_as_diverged() -> None:
    def objective(trial: optuna.Trial) -> float:
        config = suggest_config(trial, BOWL_SPACE)
        if config["lr"] == 1.6e-2:
            return math.nan  # Optuna records a FAIL trial
        if config["beta1"] == 0.98:
            raise FloatingPointError("diverged")
        return BOWL(config)

    sampler = CoordinateDescentSampler(BOWL_SPACE)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=500, catch=(FloatingPointError,))
    assert sampler.converged and study.best_params == BOWL_OPTIMUM
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(params) == len(set(params)), "a diverged config was proposed again"
    assert any(t.state == optuna.trial.TrialState.FAIL for t in study.trials)


def test_sampler_with_ask_and_tell() -> None:
    sampler = CoordinateDescentSampler(BOWL_SPACE, baseline={"lr": 1.6e-2, "wd": 0.0, "beta1": 0.98})
    study = optuna.create_study(sampler=sampler)
    for _ in range(500):
        trial = study.ask()
        study.tell(trial, BOWL(suggest_config(trial, BOWL_SPACE)))
        if sampler.converged:
            break
    assert sampler.converged and study.best_params == BOWL_OPTIMUM


def test_sampler_with_parallel_workers() -> None:
    sampler = CoordinateDescentSampler(BOWL_SPACE)
    study = optuna.create_study(sampler=sampler)
    study.optimize(bowl_objective, n_trials=300, n_jobs=2)
    assert sampler.converged and study.best_params == BOWL_OPTIMUM


def test_sampler_prunes_warmup_and_rejects_maximisation() -> None:
    # Large batches and long warmups look best, so the descent pushes against the warmup rule.
    f = separable(PAPER_WARMUP_SPACE, {"lr": (0.1, 0.0), "warmup": (0.3, 0.2, 0.1, 0.0), "batch_size": (3, 2, 1, 0)})
    sampler = CoordinateDescentSampler(PAPER_WARMUP_SPACE, steps_for=steps_130m_1x)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: f(suggest_config(t, PAPER_WARMUP_SPACE)), n_trials=100)
    assert sampler.converged and len(study.trials) < 100
    assert all(int(t.params["warmup"]) < steps_130m_1x(t.params) for t in study.trials)
    # Coordinate descent is local: from (warmup 2000, batch 128) batches 512 and 1024 are pruned and warmup
    # 500 alone is worse, so it stops at batch 256 although (warmup 500, batch 1024) is feasible and better.
    assert study.best_params == {"lr": 8e-3, "warmup": 2000, "batch_size": 256}
    reference = run_to_convergence(PAPER_WARMUP_SPACE, None, f, steps_for=steps_130m_1x)
    assert [t.params for t in study.trials] == [c for c, _ in reference.history]
    feasible = [c for c in all_configs(PAPER_WARMUP_SPACE) if int(c["warmup"]) < steps_130m_1x(c)]
    assert min(feasible, key=f) == {"lr": 8e-3, "warmup": 500, "batch_size": 1024}
    maximise = optuna.create_study(sampler=CoordinateDescentSampler(BOWL_SPACE), direction="maximize")
    with pytest.raises(ValueError, match="minimises"):
        maximise.optimize(bowl_objective, n_trials=1)


def test_sampler_finishes_the_round_before_declaring_convergence() -> None:
    """Mid-round, a new best whose neighbourhood has already run must not stop the round (synchronous rounds)."""
    space = SearchSpace(grid={"a": (0, 1, 2), "b": (0, 1, 2)}, baseline={"a": 0, "b": 0})
    table = {(0, 0): 1.0, (2, 0): 2.0, (1, 1): 2.0, (1, 2): 2.0, (1, 0): 0.5, (0, 1): 2.0, (0, 2): 0.1, (2, 2): 3.0}
    study = optuna.create_study(sampler=CoordinateDescentSampler(space))
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        n: optuna.distributions.CategoricalDistribution(v) for n, v in space.grid.items()
    }
    for a, b in [(0, 0), (2, 0), (1, 1), (1, 2)]:  # (1, 0)'s whole neighbourhood except itself has run
        params: dict[str, Any] = {"a": a, "b": b}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=table[a, b]))

    def objective(trial: optuna.Trial) -> float:
        config = suggest_config(trial, space)
        return table[int(config["a"]), int(config["b"])]

    study.optimize(objective, n_trials=20)
    # Round around (0, 0): (1, 0) = 0.5 would already be converged, but (0, 1) and (0, 2) run too; then (0, 2)'s round.
    assert [(t.params["a"], t.params["b"]) for t in study.trials[4:]] == [(1, 0), (0, 1), (0, 2), (2, 2)]
    assert study.best_params == {"a": 0, "b": 2}


def test_near_tie_is_inclusive_with_float_slack_and_never_infinite() -> None:
    assert 3.532 - 3.529 > 3e-3  # float: the gap written with the tolerance's digits rounds above it
    assert near_tie(3.532, 3.529, 3e-3) and near_tie(3.529, 3.529, 0.0)
    assert not near_tie(3.5321, 3.529, 3e-3)
    assert not near_tie(math.inf, 3.529, 3e-3) and not near_tie(3.6, math.inf, 3e-3)
    assert not near_tie(math.nan, 3.529, 3e-3)
