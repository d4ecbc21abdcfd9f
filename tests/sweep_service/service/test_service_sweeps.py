"""sweep_service.service.sweeps: submit, list_sweeps, get, progress and cells on a real database (SQLite, then
PostgreSQL), as the engine writes it."""

from __future__ import annotations

import math
from datetime import UTC
from typing import Any

import pytest
from sqlalchemy import event

from db import queries
from db import repository as repo
from db.session import Database
from sweep_service.service import Invalid, NotFound, sweeps
from tests.api.api_builders import T, quickstart


def test_submit_queues_a_sweep_and_a_known_key_answers_its_sweep(db: Database) -> None:
    spec = quickstart()
    first = sweeps.submit(db, "quick", spec, idempotency_key="k1")
    assert first.created and first.status == "queued" and first.name == "quick"
    again = sweeps.submit(db, "quick", spec, idempotency_key="k1")
    assert again == sweeps.Submitted(first.id, "quick", "queued", created=False)
    # A key reused with another spec is refused, naming the key; the CLI (content-hash keys) gets the sweep.
    with pytest.raises(Invalid) as refused:
        sweeps.submit(db, "quick", quickstart(budget=3), idempotency_key="k1")
    assert refused.value.field == sweeps.IDEMPOTENCY_KEY_FIELD and f"sweep {first.id}" in refused.value.message
    lenient = sweeps.submit(db, "quick", quickstart(budget=3), idempotency_key="k1", same_spec_only=False)
    assert lenient.id == first.id and not lenient.created
    # Without a key every submission is a new sweep.
    assert sweeps.submit(db, "quick", spec).id != sweeps.submit(db, "quick", spec).id
    assert sweeps.list_sweeps(db).total == 3


def test_submit_that_loses_a_race_on_its_key_answers_the_winners_sweep(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = sweeps.submit(db, "quick", quickstart(), idempotency_key="race")
    lookup = repo.sweep_by_idempotency_key
    calls: list[str] = []

    def late_lookup(s: Any, key: str) -> Any:  # the first look-up runs before the winner's insert commits
        calls.append(key)
        return None if len(calls) == 1 else lookup(s, key)

    monkeypatch.setattr(repo, "sweep_by_idempotency_key", late_lookup)
    loser = sweeps.submit(db, "quick", quickstart(), idempotency_key="race")
    assert (loser.id, loser.created, len(calls)) == (winner.id, False, 2)


def test_list_is_newest_first_filtered_paginated_and_counts_cells_on_request(db: Database, store: Any) -> None:
    a = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}), T({"lr": 2e-3}, status="running")]}, status="running")
    b = store({"adamw/tiny-130k/1": [T({"lr": 1e-3})], "muon/tiny-130k/1": [T({"lr": 1e-2})]}, status="completed")
    c = sweeps.submit(db, "empty", quickstart()).id
    page = sweeps.list_sweeps(db)
    assert [sw.id for sw in page.items] == [c, b.sweep_id, a.sweep_id] and page.total == 3
    assert all(sw.cells is None for sw in page.items)  # not counted unless asked
    first = page.items[2]
    assert first.trials == sweeps.TrialCounts(running=1, completed=1, total=2)
    assert first.trials.present() == {"running": 1, "completed": 1}
    assert first.created_at.tzinfo is UTC and first.started_at is not None and first.started_at.tzinfo is UTC
    counted = sweeps.list_sweeps(db, count_cells=True)
    assert [sw.cells for sw in counted.items] == [0, 2, 1]
    done = sweeps.list_sweeps(db, status="completed")
    assert [sw.id for sw in done.items] == [b.sweep_id] and done.total == 1
    second = sweeps.list_sweeps(db, limit=1, offset=1)
    assert [sw.id for sw in second.items] == [b.sweep_id] and second.total == 3
    assert [sw.id for sw in sweeps.list_sweeps(db, limit=None).items] == [c, b.sweep_id, a.sweep_id]
    assert sweeps.list_sweeps(db, status="paused") == sweeps.SweepPage([], 0)


def test_progress_counts_best_compute_and_time_left(db: Database, store: Any) -> None:
    stored = store(
        {
            "adamw/tiny-130k/1": [
                T({"lr": 1e-3}, loss=3.10, seconds=30),
                T({"lr": 2e-3}, loss=3.00, seconds=50),
                T({"lr": 4e-3}, loss=3.002, seconds=40),
                T({"lr": 8e-3}, status="diverged", seconds=20, reason="loss above 1e4"),
                T({"lr": 1.6e-2}, status="running"),
            ],
            "muon/tiny-130k/1": [
                T({"lr": 1e-2}, loss=2.90, seconds=60),
                T({"lr": 2e-2}, status="failed", seconds=5, reason="worker died"),
                T({"lr": 4e-2}, status="pending"),
            ],
        },
        max_concurrent=3,
    )
    p = sweeps.progress(db, stored.sweep_id)
    assert p.summary.status == "running" and p.summary.trials.total == 8
    adamw, muon = p.cells
    assert adamw.trials == sweeps.TrialCounts(running=1, completed=3, diverged=1, total=5)
    assert adamw.best_loss == pytest.approx(3.0) and adamw.best_trial_id == stored.trials[1]
    assert adamw.near_ties == [{"lr": 2e-3}, {"lr": 4e-3}] and adamw.noise.tolerance == pytest.approx(3e-3)
    assert muon.trials == sweeps.TrialCounts(pending=1, completed=1, failed=1, total=3)
    assert p.best is not None and (p.best.cell, p.best.trial_id) == ("muon/tiny-130k/1", stored.trials[5])
    assert p.device_hours == pytest.approx((30 + 50 + 40 + 20 + 60) / 3600)
    mean = (30 + 50 + 40 + 20 + 60 + 5) / 6  # completed, diverged and failed trials took a slot
    assert p.max_concurrent == 3 and p.eta_seconds == pytest.approx(mean * 2 / 3)  # 1 pending + 1 running
    # get adds the spec and the claim; cells are the same rows as the progress's.
    detail = sweeps.get(db, stored.sweep_id)
    assert detail.progress == p and detail.spec["max_concurrent"] == 3 and detail.claimed_by is None
    assert sweeps.cells(db, stored.sweep_id) == p.cells


def test_best_so_far_skips_infinite_bests_and_a_sweep_without_trials_has_no_eta(db: Database, store: Any) -> None:
    stored = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.0)], "muon/tiny-130k/1": [T({"lr": 1e-2})]})
    with db.session() as s:
        repo.update_cell(s, stored.cells["muon/tiny-130k/1"], best_loss=math.inf)
    p = sweeps.progress(db, stored.sweep_id)
    assert p.cells[1].best_loss == math.inf  # as stored: the API sends null, the CLI prints it
    assert p.best is not None and p.best.cell == "adamw/tiny-130k/1"
    empty = sweeps.progress(db, sweeps.submit(db, "empty", quickstart()).id)
    assert (empty.cells, empty.best, empty.eta_seconds, empty.device_hours) == ([], None, None, 0.0)
    assert empty.max_concurrent == sweeps.DEFAULT_MAX_CONCURRENT


def test_a_missing_sweep_is_not_found(db: Database) -> None:
    for use_case in (sweeps.get, sweeps.progress, sweeps.cells):
        with pytest.raises(NotFound, match="no sweep 404"):
            use_case(db, 404)


def test_a_finished_sweeps_statistics_are_read_once(db: Database, store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    done = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.0)]}, status="completed")
    running = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.0)]}, status="running")
    reads: list[int] = []
    real = queries.sweep_trial_stats

    def counting(s: Any, sweep_id: int) -> Any:
        reads.append(sweep_id)
        return real(s, sweep_id)

    monkeypatch.setattr(queries, "sweep_trial_stats", counting)
    first = [sweeps.progress(db, done.sweep_id) for _ in range(3)]
    assert reads == [done.sweep_id] and first[0] == first[2]
    for _ in range(2):
        sweeps.progress(db, running.sweep_id)  # a running sweep can change: read every time
    assert reads == [done.sweep_id] + [running.sweep_id] * 2


def test_a_sweeps_progress_costs_the_same_queries_whatever_its_cells(db: Database, store: Any) -> None:
    """Beyond the sweep's row: its trials' statistics and its cells, each in one query (no query per cell)."""

    def selects(sweep_id: int) -> int:
        seen: list[str] = []

        def capture(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                seen.append(statement)

        event.listen(db.engine, "before_cursor_execute", capture)
        try:
            progress = sweeps.progress(db, sweep_id)
        finally:
            event.remove(db.engine, "before_cursor_execute", capture)
        assert all(c.noise.tolerance is not None for c in progress.cells)  # the settings were read
        return len(seen)

    one = store({"adamw/tiny-130k/1": [T({"lr": 1e-3})]})
    many = store({f"opt{i}/tiny-130k/1": [T({"lr": 1e-3})] for i in range(12)})
    assert selects(one.sweep_id) == selects(many.sweep_id) == 3
