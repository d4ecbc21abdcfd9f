"""The tuning engine: plans each cell's trials from the database and runs them on Ray Tune.

Ray Tune executes (resources per trial, concurrency, retries of a crashed worker, a cluster when
RAY_ADDRESS is set); the decisions are ours, plugged in at Tune's Searcher seam (DESIGN.md). The database is
the source of truth: `SweepDriver` reads a cell's finished trials, asks its proposer for the next configs,
and writes them as pending trials; Tune's `suggest` hands them out one by one, and results are written back
as they stream in. A driver killed at any point restarts from the rows: finished trials are kept, trials
that were running go back to pending and re-run, and nothing runs twice (a unique (cell, config, seed)).

Coordinate descent runs in synchronous rounds: a cell proposes its next neighbourhood only when every trial
of the previous one has finished (PAPER.md section 4), so a resumed sweep makes the same decisions as an
uninterrupted one. Optuna strategies (tpe, random, cmaes, grid) ask their sampler for one config at a time.
The strategy is a proposer from the registry (sweep_service/proposers/); the engine does not branch on it.
Every finished trial of every strategy is also recorded in the cell's Optuna study in the same database.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy.orm import Session

from db import repository as repo
from db import results, transitions
from db.models import TRIAL_ENDED
from db.records import CellRecord, TrialRecord
from db.retry import retry, retrying, transient
from db.session import Database
from sweep_service import catalog as scale_catalog
from sweep_service import noise, phases, ray_watchdog, resource_wait, signals
from sweep_service.lease import Lease, LeaseLost
from sweep_service.proposers import CellHistory, Limits, get_proposer
from sweep_service.signals import Interrupted
from sweep_service.spec import Space, SweepPlan, plan_document

Progress = Callable[[str], None]
optuna.logging.set_verbosity(optuna.logging.WARNING)
FINISHED_STATES = TRIAL_ENDED  # what proposers learn from: failed ranks +inf (db.models, the one definition)
OPEN_CELL = ("pending", "running")


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}  # wait for the other writer (our repository) instead of failing
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def study_name(sweep_id: int, key: str) -> str:
    return f"sweep-{sweep_id}/{key}"


def read_cell(s: Session, cell_id: int) -> CellRecord:
    """The cell as this transaction sees it now: after a write through db.transitions or repo.update_cell, which
    leave records read before as they were. Cells are deleted only with their sweep, so this one exists."""
    cell = repo.get_cell(s, cell_id)
    assert cell is not None, f"no cell {cell_id}"
    return cell


@dataclass
class CellView:
    """What the progress view shows for one cell."""

    key: str
    status: str
    finished: int
    running: int
    pending: int
    best_loss: float | None
    round: int


@dataclass
class SweepDriver:
    """Plans and records one sweep in the database; Ray-free, so it is tested directly."""

    db: Database
    sweep_id: int
    progress: Progress | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Set on SIGINT/SIGTERM (sweep_service/signals.py) or by a stopping dispatcher: hand out nothing more, and
    # record no trial that Tune stops on the way out (it goes back to pending and re-runs on resume).
    stop: threading.Event = field(default_factory=threading.Event)
    # The lease this run holds (sweep_service/lease.py): every write is fenced on its epoch. None: unfenced
    # (tests of the planning logic, which hold no lease).
    lease: Lease | None = None

    def __post_init__(self) -> None:
        with self.db.session() as s:
            sweep = repo.get_sweep(s, self.sweep_id)
            if sweep is None:
                raise ValueError(f"no sweep {self.sweep_id}")
            self.plan: SweepPlan = plan_document(sweep.spec)
        self.storage = optuna_storage(self.db.url)
        self._dispatched: set[int] = set()
        self._cancelled = False
        self._checked_at = -math.inf

    # ---- set-up ---------------------------------------------------------------------------------------

    def prepare(self) -> int:
        """Create the cells (first start) or requeue trials a dead driver left running (restart)."""
        with self.lock, self._write() as s:
            existing = {c.key for c in repo.cells_of(s, self.sweep_id)}
            for cell in self.plan.cells:
                if cell.key in existing:
                    continue
                repo.add_cell(
                    s,
                    self.sweep_id,
                    key=cell.key,
                    optimizer=cell.optimizer,
                    scale=cell.scale,
                    chinchilla=cell.chinchilla,
                    strategy=self.plan.strategy,
                    space=cell.space.to_dict(),
                    settings={
                        "baseline_from": cell.baseline_from,
                        **noise.initial_settings(self.plan),
                        "phase": cell.phase,
                        "from_cells": list(cell.from_cells),
                        "ablation": cell.ablation,
                        "method": cell.method,
                        # A custom scale's N (executor: external), read by db.results.cell_params.
                        **(
                            {"non_embedding_params": self.plan.scale_params[cell.scale]}
                            if cell.scale in self.plan.scale_params
                            else {}
                        ),
                    },
                    status="pending",
                )
            requeued = repo.requeue_running(s, self.sweep_id)
        for cell in self.plan.cells:
            optuna.create_study(
                study_name=study_name(self.sweep_id, cell.key),
                storage=self.storage,
                direction="minimize",
                load_if_exists=True,
            )
        return requeued

    # ---- planning -------------------------------------------------------------------------------------

    def _steps_for(self, cell: CellRecord) -> Callable[[dict[str, Any]], int]:
        from workers.model import get_scale
        from workers.trainer import plan_steps

        cfg = get_scale(cell.scale)
        space = Space.from_dict(cell.space)

        def steps(config: dict[str, Any]) -> int:
            batch = config.get("batch_size", space.fixed.get("batch_size", space.baseline.get("batch_size")))
            if batch is None:
                from workers.optimizers import get_spec, resolve_hparams

                batch = resolve_hparams(get_spec(cell.optimizer), cfg.family)["batch_size"]
            return plan_steps(cfg, cell.chinchilla, int(batch))

        return steps

    def _activate(self, s: Session, cell: CellRecord) -> CellRecord | None:
        """A cell that learns from other cells (`baseline_from`, Phase II/III `from_cells`) waits for them to
        close, then fixes its search space from their results (sweep_service/phases.py). Returns the cell as it
        is now when it runs (`cell` itself if it was running already), None while it waits or when it cannot
        start."""
        if cell.status != "pending":
            return cell
        settings = dict(cell.settings)
        source_key = settings.get("baseline_from")
        sources = list(settings.get("from_cells") or [])
        wanted = [k for k in [source_key, *sources] if k]
        if wanted:
            by_key = {c.key: c for c in repo.cells_of(s, self.sweep_id)}
            if any(k not in by_key or by_key[k].status in OPEN_CELL for k in wanted):
                return None
        space = Space.from_dict(cell.space)
        phase = int(settings.get("phase", 1))
        try:
            if phase == 1 and source_key:
                best = by_key[source_key].best_config
                if not best:
                    raise ValueError(f"cell {source_key} has no best config to start from")
                grid = space.grid
                baseline = {k: (best[k] if k in best and best[k] in v else space.baseline[k]) for k, v in grid.items()}
                fixed = {**space.fixed, **{k: v for k, v in best.items() if k not in space.grid}}
                space = Space(space.grid, baseline, fixed)
            elif phase in (2, 3):
                decision = self._phase_decision(s, cell, space, phase, [by_key[k] for k in sources], by_key)
                space = decision.space
                settings.update(decision.record, max_rounds=decision.max_rounds)
        except ValueError as exc:
            # Later cells of this pass see it closed: repo.cells_of reads the cells afresh.
            if transitions.set_cell_status(s, cell.id, "pending", "failed", settings={**settings, "error": str(exc)}):
                self._say(f"{cell.key}: cannot start: {exc}")
            return None
        started = transitions.set_cell_status(
            s, cell.id, "pending", "running", space=space.to_dict(), settings=settings
        )
        return read_cell(s, cell.id) if started else None

    def _say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def _phase_decision(
        self,
        s: Session,
        cell: CellRecord,
        space: Space,
        phase: int,
        sources: list[CellRecord],
        by_key: dict[str, CellRecord],
    ) -> phases.PhaseDecision:
        catalog = scale_catalog.scale_params()
        frame = results.cells_trials(s, [c.id for c in sources], catalog)
        if frame.empty:
            raise ValueError(f"its source cells {[c.key for c in sources]} have no finished trials")
        if phase == 2:
            source_key = cell.settings.get("baseline_from")
            if source_key:
                best = by_key[source_key].best_config
            else:
                candidates = [
                    phases.SourceCell(c.key, int(results.cell_params(c, catalog)), c.chinchilla, c.best_config)
                    for c in sources
                ]
                best = phases.default_source(candidates, cell.chinchilla).best_config
            if not best:
                raise ValueError(f"cell {source_key} has no best config to start from")
            return phases.phase_two(space, frame, cell.optimizer, dict(best), self._tolerance(cell))
        target = int(results.cell_params(cell, catalog))
        ablation = bool(cell.settings.get("ablation"))
        method = str(cell.settings.get("method", "robust"))
        tolerance = self._tolerance(cell)
        return phases.phase_three(space, frame, cell.optimizer, target, cell.chinchilla, ablation, tolerance, method)

    def _seed_groups(
        self, trials: list[TrialRecord], space: Space
    ) -> tuple[list[tuple[dict[str, Any], float]], list[dict[str, Any]]]:
        """Per searched config: the mean loss over its seeds once all have finished, else pending."""
        by_key: dict[str, list[TrialRecord]] = {}
        for t in trials:
            by_key.setdefault(t.config_key, []).append(t)
        history, pending = [], []
        for group in by_key.values():
            searched = {k: group[0].config[k] for k in space.grid}
            if all(t.status in FINISHED_STATES for t in group):
                losses = [
                    t.final_loss if t.status == "completed" and t.final_loss is not None else math.inf for t in group
                ]
                history.append((searched, statistics.fmean(losses) if all(map(math.isfinite, losses)) else math.inf))
            else:
                pending.append(searched)
        return history, pending

    def _add(
        self,
        s: Session,
        cell: CellRecord,
        searched: dict[str, Any],
        space: Space,
        round_: int,
        optuna_trial: int | None = None,
    ) -> int:
        config = {**space.fixed, **searched}
        added = 0
        for seed in self.plan.seeds:
            trial = repo.add_trial(s, cell, searched, config, seed, round_)
            if trial is not None:
                if optuna_trial is not None:
                    transitions.set_optuna_trial(s, trial.id, optuna_trial)
                added += 1
        return added

    def _plan_cell(self, s: Session, cell: CellRecord) -> None:
        active = self._activate(s, cell)
        if active is None or active.status not in OPEN_CELL:
            return
        cell = active
        space = Space.from_dict(cell.space)
        if cell.settings.get("confirming") is not None:
            self._finish_confirm(s, cell, space)
            return
        trials = repo.trials_of_cell(s, cell.id, ["pending", "running", *FINISHED_STATES])
        history, pending = self._seed_groups(trials, space)
        tolerance = noise.cell_tolerance(cell.settings, self.plan.tolerance)
        if tolerance is None and history:
            return  # tolerance auto: no decision before the baseline's seed noise is measured (noise.py)
        if not space.grid:
            self._plan_fixed(s, cell, space, history, pending)
        else:
            self._propose(s, cell, space, history, pending)

    def _propose(
        self,
        s: Session,
        cell: CellRecord,
        space: Space,
        history: list[tuple[dict[str, Any], float]],
        pending: list[dict[str, Any]],
    ) -> None:
        """Ask the sweep's proposer (sweep_service/proposers/) for the cell's next step and write it down."""
        opened = False

        def study() -> optuna.Study:
            nonlocal opened
            # Release our write lock: Optuna writes through its own connection (SQLite has one writer).
            transitions.end_transaction(s)
            opened = True
            return optuna.load_study(study_name=study_name(self.sweep_id, cell.key), storage=self.storage)

        steps: Callable[[dict[str, Any]], int] | None = None

        def steps_for(config: dict[str, Any]) -> int:
            nonlocal steps
            if steps is None:  # only coordinate descent's warmup rule needs it, and it reads the scale catalog
                steps = self._steps_for(cell)
            return steps(config)

        limits = Limits(
            tolerance=self._tolerance(cell),
            budget=self.plan.budget,
            max_concurrent=self.plan.max_concurrent,
            max_rounds=cell.settings.get("max_rounds"),
            seed=self.plan.seeds[0] + cell.id,
            steps_for=steps_for,
            study=study,
        )
        step = get_proposer(self.plan.strategy).propose(CellHistory(space, history, pending, cell.round), limits)
        if opened:
            self._fence(s)  # the commit in study() ended the fenced transaction: fence the new one
        self._record_best(s, cell, step.best, step.best_loss, step.near_ties, history)
        if step.done == "converged":
            self._converged(s, cell, space, [step.best, *step.near_ties])
            return
        if step.done == "exhausted":
            transitions.set_cell_status(s, cell.id, OPEN_CELL, "exhausted")
            return
        if step.round is None:
            return  # wait for results
        for suggestion in step.suggestions:
            self._add(s, cell, suggestion.config, space, step.round, optuna_trial=suggestion.optuna_trial)
        repo.update_cell(s, cell.id, round=step.round)

    def _plan_fixed(
        self,
        s: Session,
        cell: CellRecord,
        space: Space,
        history: list[tuple[dict[str, Any], float]],
        pending: list[dict[str, Any]],
    ) -> None:
        """Nothing to search (`tune: []`, or a Phase II cell whose every hyperparameter was stable): the cell
        runs its one config (under every seed) and that is its result."""
        if not history and not pending:
            self._add(s, cell, {}, space, 1)
            repo.update_cell(s, cell.id, round=1)
            return
        if pending:
            return
        self._record_best(s, cell, {}, history[0][1], [{}] if math.isfinite(history[0][1]) else [], history)
        self._converged(s, cell, space, [{}])

    def _record_best(
        self,
        s: Session,
        cell: CellRecord,
        best: dict[str, Any] | None,
        best_loss: float,
        near_ties: list[dict[str, Any]],
        history: list[tuple[dict[str, Any], float]],
    ) -> None:
        if best is None or not math.isfinite(best_loss):
            return
        space = Space.from_dict(cell.space)
        searched = {k: best[k] for k in space.grid}
        key = repo.config_key(searched)
        best_trial = next((t for t in repo.trials_of_cell(s, cell.id, ["completed"]) if t.config_key == key), None)
        repo.update_cell(
            s,
            cell.id,
            best_loss=best_loss,
            best_config={**space.fixed, **searched},
            best_trial_id=best_trial.id if best_trial else None,
            near_ties=[{**space.fixed, **{k: c[k] for k in space.grid}} for c in near_ties],
        )

    def refresh(self) -> None:
        reference = noise.reference_cell(self.plan) if self.plan.tolerance_auto else None
        with self.lock, self._write() as s:
            changed = False  # whether the cells listed after the reference may have changed since listed
            for cell in repo.cells_of(s, self.sweep_id):
                if changed:
                    cell = read_cell(s, cell.id)
                if cell.status in OPEN_CELL:
                    self._plan_cell(s, cell)
                if reference is not None and cell.key == reference.key:
                    changed = self._measure_noise(s, cell)

    # ---- noise: confirm_seeds and tolerance auto (sweep_service/noise.py) -------------------------------

    def _tolerance(self, cell: CellRecord) -> float:
        tolerance = noise.cell_tolerance(cell.settings, self.plan.tolerance)
        return self.plan.tolerance if tolerance is None else tolerance

    def _converged(self, s: Session, cell: CellRecord, space: Space, configs: list[dict[str, Any] | None]) -> None:
        """A converged cell: done, or (confirm_seeds) its best and near-ties run K more seeds first."""
        if self.plan.confirm_seeds == 0:
            transitions.set_cell_status(s, cell.id, OPEN_CELL, "converged")
            return
        searched, seen = [], set()
        for config in configs:
            if config is None:
                continue
            one = {k: config[k] for k in space.grid}
            if repo.config_key(one) not in seen:
                seen.add(repo.config_key(one))
                searched.append(one)
        for one in searched:
            for seed in noise.all_seeds(self.plan):
                repo.add_trial(s, cell, one, {**space.fixed, **one}, seed, cell.round + 1)
        repo.update_cell(s, cell.id, round=cell.round + 1, settings={**cell.settings, "confirming": searched})
        self._finish_confirm(s, read_cell(s, cell.id), space)

    def _finish_confirm(self, s: Session, cell: CellRecord, space: Space) -> None:
        """Once every confirmation seed has finished: the best by seed mean, its seed stats, converged."""
        configs: list[dict[str, Any]] = list(cell.settings.get("confirming") or [])
        by_key: dict[str, list[TrialRecord]] = {}
        for t in repo.trials_of_cell(s, cell.id):
            by_key.setdefault(t.config_key, []).append(t)
        stats = []
        for config in configs:
            group = sorted(by_key.get(repo.config_key(config), []), key=lambda t: t.seed)
            if any(t.status not in FINISHED_STATES for t in group):
                return
            losses = [
                float(t.final_loss) if t.status == "completed" and t.final_loss is not None else math.inf for t in group
            ]
            stats.append(noise.SeedStat(config, [t.seed for t in group], losses))
        result = noise.confirm(stats, self._tolerance(cell))
        history = [(st.config, st.mean) for st in stats]
        self._record_best(s, cell, result.best, result.best_loss, result.near_ties, history)
        settings = {k: v for k, v in cell.settings.items() if k != "confirming"}
        transitions.set_cell_status(s, cell.id, OPEN_CELL, "converged", settings={**settings, **result.settings})

    def _measure_noise(self, s: Session, reference: CellRecord) -> bool:
        """tolerance auto: run the reference cell's baseline under every seed; once all have finished, give every
        cell the tolerance max(3e-3, 2 x std) (noise.auto_tolerance). True when it changed cells' settings."""
        # Its round was just written by _plan_cell: read it again.
        reference = read_cell(s, reference.id)
        if reference.round < 1 or reference.status == "failed":
            return False
        space = Space.from_dict(reference.space)
        baseline = {k: space.baseline[k] for k in space.grid}
        key = repo.config_key(baseline)
        for seed in noise.all_seeds(self.plan):
            repo.add_trial(s, reference, baseline, {**space.fixed, **baseline}, seed, 1)
        group = sorted((t for t in repo.trials_of_cell(s, reference.id) if t.config_key == key), key=lambda t: t.seed)
        if any(t.status not in FINISHED_STATES for t in group):
            return False
        losses = [
            float(t.final_loss) if t.status == "completed" and t.final_loss is not None else math.inf for t in group
        ]
        tolerance = noise.auto_tolerance(losses)
        measured = {
            "cell": reference.key,
            "config": baseline,
            "seeds": [t.seed for t in group],
            "losses": [x if math.isfinite(x) else None for x in losses],
            "std": noise.sample_std(losses),
        }
        updated = 0
        for cell in repo.cells_of(s, self.sweep_id):
            if cell.settings.get("tolerance_auto") == noise.PENDING:
                settings = {**cell.settings, "tolerance": tolerance, "tolerance_auto": noise.MEASURED}
                repo.update_cell(s, cell.id, settings={**settings, "tolerance_noise": measured})
                updated += 1
        if updated:
            std = "unknown (a seed diverged)" if measured["std"] is None else f"{measured['std']:.4g}"
            self._say(f"tolerance auto: {reference.key} baseline seed std {std} -> near-tie tolerance {tolerance:.4g}")
        return updated > 0

    # ---- dispatch -------------------------------------------------------------------------------------

    def cancelled(self) -> bool:
        """Whether the sweep was cancelled; read from the database at most once a second."""
        now = time.monotonic()
        if now - self._checked_at >= 1.0:
            self._checked_at = now
            with self.db.session() as s:
                sweep = repo.get_sweep(s, self.sweep_id)
                self._cancelled = sweep is None or sweep.status == "cancelled"
        return self._cancelled

    def stopping(self) -> bool:
        """Whether this run is on its way out without finishing the sweep (a signal, or its lease lost)."""
        return self.stop.is_set() or self.lease_lost()

    def lease_lost(self) -> bool:
        return self.lease is not None and self.lease.lost.is_set()

    def _write(self) -> contextlib.AbstractContextManager[Session]:
        """A session for the run's writes: fenced on the lease's epoch when a lease is held."""
        return self.lease.fenced(self.db) if self.lease is not None else self.db.session()

    def _fence(self, s: Session) -> None:
        if self.lease is not None:
            self.lease.check(s)

    def next_trial(self) -> dict[str, Any] | str | None:
        """The next trial for Tune: its config, None (wait for results), or "FINISHED"."""
        if self.stopping():
            return "FINISHED"
        with self.lock:
            self.refresh()
            with self._write() as s:
                sweep = repo.get_sweep(s, self.sweep_id)
                if sweep is None or sweep.status == "cancelled":
                    return "FINISHED"
                for trial in repo.trials_of_sweep(s, self.sweep_id, ["pending", "running"]):
                    if trial.id in self._dispatched:
                        continue
                    # A running trial this run never handed out: our transition committed but its answer was
                    # lost with the connection (db/retry.py repeated the call). We hold the lease, so it is ours.
                    if trial.status == "running":
                        if self.lease is None:
                            continue  # unfenced (tests): another driver's
                    elif not repo.transition_trial(s, trial.id, ["pending"], "running"):
                        continue
                    self._dispatched.add(trial.id)
                    cell = read_cell(s, trial.cell_id)
                    return {"trial_id": trial.id, "run": self._run_config(trial, cell)}
                open_cells = [c for c in repo.cells_of(s, self.sweep_id) if c.status in OPEN_CELL]
                running = repo.trials_of_sweep(s, self.sweep_id, ["running"])
                if not open_cells and not running:
                    return "FINISHED"
                return None

    def _run_config(self, trial: TrialRecord, cell: CellRecord) -> dict[str, Any]:
        return {
            "scale": cell.scale,
            "optimizer": cell.optimizer,
            "chinchilla": cell.chinchilla,
            "hparams": dict(trial.config),
            "seed": trial.seed,
            "data": None if self.plan.data == "builtin" else self.plan.data,
            "eval_every": self.plan.eval_every,
            "divergence": {
                "max_loss": self.plan.max_loss,
                "late_loss": self.plan.late_loss,
                "late_step": self.plan.late_step,
            },
            "device": "cuda" if self.plan.gpu > 0 else "cpu",
            # A trial uses exactly the CPUs it was given, so concurrent trials do not oversubscribe a machine.
            "threads": max(1, int(self.plan.cpu)),
        }

    def record_eval(self, trial_id: int, step: int, eval_loss: float, train_loss: float | None) -> None:
        with self._write() as s:
            repo.add_curve_points(s, trial_id, [(step, eval_loss, train_loss)])

    def record_final(self, trial_id: int, result: dict[str, Any] | None, error: str | None = None) -> None:
        if self.stopping() and (result is None or result.get("kind") != "final"):
            return  # stopped (or killed by the same Ctrl+C) on the way out: it stays running, then goes back to pending
        with self.lock, self._write() as s:
            trial = repo.get_trial(s, trial_id)
            if trial is None:
                return
            fields: dict[str, Any]
            if result is None or result.get("kind") != "final":
                status, fields = "failed", {"reason": error or "the worker failed (Ray Tune gave up after retries)"}
            else:
                status = result["status"]
                fields = {
                    "reason": result.get("reason"),
                    "final_loss": result["final_eval_loss"] if status == "completed" else None,
                    "initial_loss": _finite(result.get("initial_eval_loss")),
                    "steps": result.get("steps"),
                    "total_steps": result.get("total_steps"),
                    "tokens": result.get("tokens"),
                    "tokens_per_second": result.get("tokens_per_second"),
                    "device_seconds": result.get("wall_seconds"),
                    "repro": _repro_of(result),
                }
                resolved = _json_dict(result.get("hparams_json"))
                if resolved:  # what the worker ran, defaults merged; the searched and fixed values as stored
                    fields["config"] = {**resolved, **trial.config}
            if result is not None and isinstance(result.get("worker"), str):
                fields["worker"] = result["worker"]
            if not repo.transition_trial(s, trial_id, ["running"], status, **fields):
                return  # cancelled meanwhile, or already recorded
            cell = read_cell(s, trial.cell_id)
            space = Space.from_dict(cell.space)
            self._dispatched.discard(trial_id)
        # After the commit: the trial's row is the record; the Optuna study is a mirror of it, and writing
        # it inside our transaction would wait on our own SQLite write lock.
        if self.lease_lost():
            return
        loss = fields.get("final_loss")
        value = float(loss) if isinstance(loss, int | float) else math.inf
        try:
            self._tell_optuna(cell, space, trial, value)
        except optuna.exceptions.OptunaError as exc:
            if self.progress:
                self.progress(f"warning: trial {trial_id} not mirrored into its Optuna study: {exc}")
        self.refresh()  # the cell's best and status now include this result
        self._show(trial_id)

    def _tell_optuna(self, cell: CellRecord, space: Space, trial: TrialRecord, value: float) -> None:
        study = optuna.load_study(study_name=study_name(self.sweep_id, cell.key), storage=self.storage)
        searched = {k: trial.config[k] for k in space.grid}
        attrs = {"sweep_trial_id": trial.id, "seed": trial.seed}
        get_proposer(self.plan.strategy).record(study, space, searched, value, trial.optuna_trial, attrs)

    # ---- views ----------------------------------------------------------------------------------------

    def cell_views(self) -> list[CellView]:
        with self.db.session() as s:
            views = []
            for cell in repo.cells_of(s, self.sweep_id):
                counts: dict[str, int] = {}
                for t in repo.trials_of_cell(s, cell.id):
                    counts[t.status] = counts.get(t.status, 0) + 1
                views.append(
                    CellView(
                        key=cell.key,
                        status=cell.status,
                        finished=sum(counts.get(k, 0) for k in FINISHED_STATES),
                        running=counts.get("running", 0),
                        pending=counts.get("pending", 0),
                        best_loss=cell.best_loss,
                        round=cell.round,
                    )
                )
            return views

    def _show(self, trial_id: int) -> None:
        if self.progress is None:
            return
        with self.db.session() as s:
            t = repo.get_trial(s, trial_id)
            if t is None:
                return
            cell = read_cell(s, t.cell_id)
            space = Space.from_dict(cell.space)
            changed = {k: t.config[k] for k in space.grid if t.config.get(k) != space.baseline.get(k)}
            loss = f"{t.final_loss:.4f}" if t.final_loss is not None else t.status
            best = f"{cell.best_loss:.4f}" if cell.best_loss is not None else "-"
            counts = repo.count_trials_by_status(s, self.sweep_id)
            in_cell = [x.status for x in repo.trials_of_cell(s, cell.id)]
        done = sum(counts.get(k, 0) for k in FINISHED_STATES)
        cell_done = sum(in_cell.count(k) for k in FINISHED_STATES)
        self.progress(
            f"[{done}/{sum(counts.values())}] {cell.key:<22} round {t.round:>2}: "
            f"{cell_done} done, {in_cell.count('running')} running, best {best} | "
            f"trial {t.id:>4} {_short(changed) or 'baseline':<28} -> {loss}"
        )


def _short(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


# ---- Ray Tune ---------------------------------------------------------------------------------------------


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    # Our own progress view replaces Tune's console tables.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        ray_watchdog.start()  # the local Ray we started dies with us, even after SIGKILL
    signals.reinstall()  # ray.init replaced our SIGTERM handler with one that aborts


# Tune pickles its search algorithm and callbacks with the experiment state, so they hold only ids and find
# the live driver (database engine, locks) here, in the driver process.
_DRIVERS: dict[int, SweepDriver] = {}
_ERRORS: dict[str, str] = {}


def _searcher_base() -> type:
    from ray.tune.search import Searcher

    return Searcher


class SweepSearcher(_searcher_base()):  # type: ignore[misc]
    """Tune's Searcher seam: suggestions and results go through the database-backed driver."""

    def __init__(self, sweep_id: int) -> None:
        super().__init__(metric="final_eval_loss", mode="min")
        self.sweep_id = sweep_id
        self.ids: dict[str, int] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:  # or Searcher.FINISHED
        nxt = _call(self.sweep_id, "next_trial", "FINISHED")
        if nxt == "FINISHED":
            return self.FINISHED
        if nxt is None or isinstance(nxt, str):
            return None
        self.ids[trial_id] = int(nxt["trial_id"])
        return nxt

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the database holds the search state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a restarted driver re-reads the database."""

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if result.get("kind") == "eval" and trial_id in self.ids:
            point = (
                self.ids[trial_id],
                int(result["step"]),
                float(result["eval_loss"]),
                _finite(result.get("train_loss")),
            )
            _call(self.sweep_id, "record_eval", None, *point)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self.ids:
            reason = _ERRORS.pop(trial_id, None) if error else None
            _call(self.sweep_id, "record_final", None, self.ids.pop(trial_id), None if error else result, reason)


def _call(sweep_id: int, method: str, default: Any, *args: Any) -> Any:
    """A driver method called from inside Ray Tune: transient database errors retried (db/retry.py); a lost
    lease, or an error while stopping, ends the run (the stopper sees it) instead of crashing Tune's loop."""
    driver = _DRIVERS.get(sweep_id)
    if driver is None:
        return default
    try:
        return retrying(
            lambda: getattr(driver, method)(*args), f"sweep {sweep_id}: {method}", driver.progress, driver.stop
        )()
    except LeaseLost as exc:
        driver._say(f"{exc}: stopping, writing nothing more")
        return default
    except Exception:
        if driver.stopping():
            return default
        raise


def _repro_of(result: dict[str, Any]) -> dict[str, Any] | None:
    """The trial's reproducibility record from its final report's `info_json` (workers/tune_trainable.py: Ray Tune
    flattens nested dicts, so the worker sends it as one string); None when there is none."""
    return _json_dict(result.get("info_json"))


def _json_dict(raw: Any) -> dict[str, Any] | None:
    """A JSON object sent as one string, or None."""
    if not isinstance(raw, str):
        return None
    try:
        decoded = json.loads(raw)
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None


def _callback_base() -> type:
    from ray import tune

    return tune.Callback


def _stopper_base() -> type:
    from ray import tune

    return tune.Stopper


class CancelStopper(_stopper_base()):  # type: ignore[misc]
    """Stops every running trial once the sweep is cancelled (POST /sweeps/{id}/cancel sets the row)."""

    def __init__(self, sweep_id: int) -> None:
        self.sweep_id = sweep_id

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        driver = _DRIVERS.get(self.sweep_id)
        if driver is None or driver.stopping():
            return driver is not None
        try:
            return driver.cancelled()
        except Exception as exc:  # the database is away: not a reason to stop; looked at again within a second
            if transient(exc):
                return False
            raise


class ErrorReasons(_callback_base()):  # type: ignore[misc]
    """Keep the last line of a failed trial's error so the database says why it failed."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures = max_failures

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        text = "worker error"
        path = getattr(trial, "error_file", None)
        if path and Path(path).exists():
            lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
            text = lines[-1][:500] if lines else text
        _ERRORS[trial.trial_id] = f"failed after {self.max_failures + 1} attempts: {text}"


def _stopped(driver: SweepDriver) -> None:
    """A run that lost its lease raises LeaseLost and writes nothing more. One stopped by a signal leaves the
    sweep resumable: trials in flight back to pending, the sweep `running` with its lease released (any
    dispatcher, or the same command, resumes it at once); then it raises Interrupted."""
    if driver.lease_lost():
        raise LeaseLost(f"sweep {driver.sweep_id}: lease lost; this run stopped and wrote nothing more")

    def leave() -> int:
        with driver._write() as s:
            requeued = repo.requeue_running(s, driver.sweep_id)
            if driver.lease is not None:
                repo.release_lease(s, driver.sweep_id, driver.lease.epoch)
        return requeued

    requeued = retry(leave, f"sweep {driver.sweep_id}: stop", driver.progress)
    driver._say(f"sweep {driver.sweep_id} stopped: {requeued} trial(s) in flight back to pending; resumes on restart")
    raise Interrupted()


def run_sweep(
    db: Database,
    sweep_id: int,
    storage_dir: Path,
    progress: Progress | None = None,
    max_failures: int = 2,
    ray_address: str | None = None,
    ray_num_cpus: int | None = None,
    trainable: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
    lease: Lease | None = None,
) -> list[CellView]:
    """Run (or resume) a sweep to the end on Ray Tune; returns the final per-cell view.

    When `stop` is set (SIGINT/SIGTERM: sweep_service/signals.py) the Tune run ends, the trials in flight go back
    to pending, the sweep stays `running` and `Interrupted` is raised: the same command resumes it. With a
    `lease` (sweep_service/lease.py; the caller keeps its heartbeat) every write is fenced on its epoch, and a
    lost lease ends the Tune run and raises LeaseLost. Transient database errors are retried (db/retry.py).
    `trainable` replaces the training function (benchmarks time the engine with fixed-duration trials);
    it receives {"trial_id", "run"} and must end with a `tune.report` whose "kind" is "final".
    """
    from ray import tune

    from workers.tune_trainable import trainable as train_trial

    function = trainable or train_trial

    driver = SweepDriver(db, sweep_id, progress, lease=lease)
    if stop is not None:
        driver.stop = stop
    _DRIVERS[sweep_id] = driver
    requeued = retry(driver.prepare, f"sweep {sweep_id}: prepare", progress)
    if progress and requeued:
        progress(f"resuming: {requeued} trial(s) that were running when the driver stopped will run again")

    def start() -> None:
        with driver._write() as s:
            repo.set_sweep_status(s, sweep_id, ["queued", "running"], "running")

    retry(start, f"sweep {sweep_id}: start", progress)
    init_ray(ray_address, ray_num_cpus)
    if driver.stopping():  # a signal during ray.init, or the lease lost meanwhile
        _stopped(driver)
    plan = driver.plan
    resource_wait.check_started(driver._write, sweep_id, plan.cpu, plan.gpu, local=not ray_address)
    resources = {"cpu": plan.cpu, "gpu": plan.gpu}
    tuner = tune.Tuner(
        tune.with_resources(function, resources),
        tune_config=tune.TuneConfig(
            search_alg=SweepSearcher(sweep_id),
            num_samples=-1,  # the searcher says when the sweep is done
            max_concurrent_trials=plan.max_concurrent,
            reuse_actors=True,  # DESIGN.md: a new actor per trial costs ~3 s on 2 cores
        ),
        run_config=tune.RunConfig(
            name=f"sweep-{sweep_id}-{datetime.now():%Y%m%d-%H%M%S}",
            storage_path=str(storage_dir.resolve()),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=0,
            callbacks=[ErrorReasons(max_failures), resource_wait.ClearWaiting(sweep_id)],
            stop=CancelStopper(sweep_id),
        ),
    )
    try:
        tuner.fit()
    except Exception:
        if not driver.stopping():
            raise
        # Stopping anyway: a Ctrl+C reaches Ray's own processes too, and Tune may fail on the way out.
    finally:
        _DRIVERS.pop(sweep_id, None)
    if driver.stopping():
        _stopped(driver)

    def finish() -> None:
        driver.refresh()
        with driver._write() as s:
            cells = repo.cells_of(s, sweep_id)
            failed = all(c.best_loss is None for c in cells)
            repo.set_sweep_status(
                s,
                sweep_id,
                ["running"],
                "failed" if failed else "completed",
                error="no cell produced a finite loss" if failed else None,
            )

    retry(finish, f"sweep {sweep_id}: finish", progress)
    return driver.cell_views()
