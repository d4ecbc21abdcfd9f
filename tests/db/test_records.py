"""ORM objects stay inside db/ (issue 15): db functions hand out frozen records (db/records.py) that hold every
column of their table, and no public db function says it returns a mapped class."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper

from db import queries, records, repository, results, transitions, trial_leases
from db import repository as repo
from db.models import Base, Trial
from db.session import Database

MAPPED: frozenset[type] = frozenset(mapper.class_ for mapper in Base.registry.mappers)


@pytest.mark.parametrize(
    ("model", "record"), list(records.RECORD_OF.items()), ids=[m.__name__ for m in records.RECORD_OF]
)
def test_a_record_has_every_column_of_its_table(model: type, record: type) -> None:
    mapper: Mapper[Any] = sa_inspect(model)
    columns = [attr.key for attr in mapper.column_attrs]
    assert [f.name for f in dataclasses.fields(record)] == columns


def _mentions_a_model(hint: object) -> bool:
    if hint in MAPPED:
        return True
    return any(_mentions_a_model(arg) for arg in typing.get_args(hint))


@pytest.mark.parametrize("module", [repository, queries, results, transitions, trial_leases], ids=lambda m: m.__name__)
def test_no_public_db_function_returns_an_orm_object(module: ModuleType) -> None:
    leaks = [
        name
        for name, fn in inspect.getmembers(module, inspect.isfunction)
        if not name.startswith("_")
        and fn.__module__ == module.__name__
        and _mentions_a_model(typing.get_type_hints(fn).get("return"))
    ]
    assert leaks == []


def test_the_leak_check_sees_a_model_inside_a_type() -> None:
    assert _mentions_a_model(list[tuple[Trial, int]] | None)
    assert not _mentions_a_model(list[records.TrialRecord] | None)


def test_records_are_frozen_and_usable_after_their_session(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as s:
        sweep = repo.create_sweep(s, "r", {"name": "r"})
        cell = repo.add_cell(
            s,
            sweep.id,
            key="adamw/tiny-130k/1",
            optimizer="adamw",
            scale="tiny-130k",
            chinchilla=1.0,
            strategy="tpe",
            space={"grid": {}, "baseline": {}, "fixed": {}},
            status="pending",
        )
        trial = repo.add_trial(s, cell, {}, {"lr": 0.1}, 0, 1)
        assert trial is not None
    # Defaults the database filled in on insert are in the records; the session is gone, the records still read.
    assert (sweep.status, sweep.executor, sweep.lease_epoch) == ("queued", "ray", 0)
    assert (cell.settings, cell.round, trial.status, trial.attempts) == ({}, 0, "pending", 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell.status = "running"  # type: ignore[misc]
    with db.session() as s:
        assert repo.get_sweep(s, sweep.id) == sweep
        assert repo.get_trial(s, trial.id) == trial
    db.dispose()
