"""The analysis use cases (sweep_service/service/analysis.py) on a real SQLite database: the paper's shipped
results imported, and small hand-built sweeps. Each use case gives the numbers its endpoint sends (the routers
only render: non-finite numbers as null), and an unknown sweep is NotFound, a 404 problem+json at the API.

(Named test_analysis_use_cases.py: tests/sweep_service/test_analysis.py holds the basename test_analysis.)"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from db.migrate import upgrade
from db.session import Database
from sweep_service.importer import PAPER_RESULTS, import_results
from sweep_service.service import analysis as uc
from sweep_service.service.errors import Conflict, Invalid, NotFound
from sweep_service.service.sweep_data import SweepNotFound
from tests.api.api_builders import T, make_settings, store_sweep

PARAMS_1_2B = 1_207_959_552  # non-embedding parameters of the paper's 1.2b (PAPER.md section 2)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'analysis.db'}"
    upgrade(url)
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(db_url, make_settings(tmp_path))
    with TestClient(app) as c:
        yield c
    app.state.db.dispose()


@pytest.fixture
def paper(db: Database) -> int:
    return import_results(db, PAPER_RESULTS)


def _json(value: Any) -> Any:
    """What the API sends for a use case's value: non-finite floats null, tuples as lists, dataclasses as dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def test_speedups_are_the_endpoints_numbers_on_the_paper_results(db: Database, client: TestClient, paper: int) -> None:
    result = uc.speedups(db, paper)  # the default draws: as the endpoint, `run` and the report
    assert result.sweep_id == paper and result.baseline == "adamw" and len(result.rows) == 134
    muon = next(r for r in result.rows if (r.optimizer, r.scale, r.chinchilla) == ("muon", "130m", 1.0))
    assert 1.2 < muon.speedup < 1.5 and muon.non_embedding_params == 134_217_728  # PAPER.md section 1: ~1.4x
    # one seed per cell: no interval, kept as NaN here and sent as null
    assert math.isnan(muon.speedup_ci_low) and muon.interval_source == ""
    body = client.get(f"/sweeps/{paper}/speedups").json()
    assert body["rows"] == [_json(r) for r in result.rows]

    other = uc.speedups(db, paper, baseline="muon")
    assert client.get(f"/sweeps/{paper}/speedups", params={"baseline": "muon"}).json()["rows"] == [
        _json(r) for r in other.rows
    ]


def test_an_unknown_baseline_lists_the_valid_ones(db: Database, client: TestClient, paper: int) -> None:
    with pytest.raises(uc.UnknownName) as caught:
        uc.speedups(db, paper, baseline="adamx")
    assert isinstance(caught.value, Invalid) and caught.value.field == "baseline" and "adamw" in caught.value.valid
    r = client.get(f"/sweeps/{paper}/speedups", params={"baseline": "adamx"})
    (error,) = r.json()["errors"]
    assert r.status_code == 422 and error["loc"] == ["query", "baseline"] and error["message"] == caught.value.message


def test_predict_is_the_endpoints_prediction(db: Database, client: TestClient, paper: int) -> None:
    for method in ("robust", "paper"):
        got = uc.predict(db, "muon", PARAMS_1_2B, 1.0, method=method)
        body = client.get("/predict", params={"optimizer": "muon", "params": PARAMS_1_2B, "method": method}).json()
        assert got.family == body["family"] == "paper" and got.method == body["method"] == method
        assert dict(got.scales_used) == body["scales_used"] == {"130m": 134_217_728, "300m": 301_989_888,
                                                                "520m": 536_870_912}  # fmt: skip
        assert list(got.sweeps_used) == body["sweeps_used"] == [paper] and got.cells_used == body["cells_used"] == 14
        assert _json(dict(got.config)) == body["config"] and got.note == body["note"]
        assert list(got.dropped) == body["dropped"] == ["lr_schedule"] and list(got.fallbacks) == body["fallbacks"]
        for fit, sent in zip(got.fits, body["fits"], strict=True):
            assert [fit.name, fit.form, fit.n_points, fit.fallback] == [sent[k] for k in ("name", "form", "n_points",
                                                                                          "fallback")]  # fmt: skip
            assert _json(fit.predicted) == sent["predicted"] and _json(fit.low) == sent["low"]
            assert _json(fit.error) == sent["error"] and _json(dict(fit.form_errors)) == sent["form_errors"]
    lr = next(f for f in uc.predict(db, "muon", PARAMS_1_2B).fits if f.name == "lr")
    assert isinstance(lr.predicted, float) and lr.low is not None and lr.high is not None
    assert lr.low <= lr.predicted <= lr.high  # robust: an interval from the leave-one-out residuals

    snapped = uc.predict(db, "muon", PARAMS_1_2B, snap=True)
    body = client.get("/predict", params={"optimizer": "muon", "params": PARAMS_1_2B, "snap": True}).json()
    assert _json(dict(snapped.config)) == body["config"] and snapped.snap


def test_predict_says_when_it_cannot(db: Database, paper: int) -> None:
    with pytest.raises(uc.UnknownName, match="unknown optimizer 'sgd'; valid: adam_mini"):
        uc.predict(db, "sgd", 10**9)
    with pytest.raises(NotFound, match="import-results"):
        uc.predict(db, "adamh", 10**9)  # not in the release
    store_sweep(db, {"lion/tiny-130k/1": [T({"lr": 1e-3}, loss=3.0), T({"lr": 2e-3}, loss=2.9)]})
    # the family of the catalog scale nearest to 1e6 parameters is tiny (sweep_service.catalog.family_of)
    with pytest.raises(Conflict, match=r"one model size only \(tiny-130k\)"):
        uc.predict(db, "lion", 1_000_000)
    assert uc.predict(db, "lion", 1_000_000, family="paper").family == "paper"
    for bad in ({"params": 0}, {"params": 10**14}, {"chinchilla": 0.0}, {"chinchilla": math.inf},
                {"family": "x"}, {"method": "magic"}):  # fmt: skip
        kwargs: dict[str, Any] = {"params": 10**9, **bad}
        with pytest.raises(Invalid) as caught:
            uc.predict(db, "muon", **kwargs)
        assert caught.value.field == next(iter(bad)), bad


def _curve(losses: list[float]) -> list[tuple[int, float | None, float | None]]:
    return [(10 * (i + 1), v, None) for i, v in enumerate(losses)]


def test_sensitivity_flips_and_importance_are_the_endpoints(db: Database, client: TestClient) -> None:
    base = {"lr": 8e-3, "wd": 0.1}
    adamw = [5.0, 4.5, 4.0, 3.8, 3.6, 3.5, 3.45, 3.4, 3.35, 3.3]
    muon = [5.2, 4.7, 4.2, 3.9, 3.7, 3.4, 3.3, 3.2, 3.1, 3.0]  # leads after half of training
    stored = store_sweep(
        db,
        {
            "adamw/130m/1": [
                T(base, loss=3.529, curve=_curve(adamw)),
                T({**base, "lr": 4e-3}, loss=3.550),
                T({**base, "lr": 3.2e-2}, status="diverged"),
                T({**base, "wd": 0.0}, loss=3.545),
            ],
            "muon/130m/1": [T({"lr": 2e-2}, loss=3.4, curve=_curve(muon)), T({"lr": 4e-2}, loss=3.45)],
        },
    )
    sweep = stored.sweep_id

    sens = uc.sensitivity(db, sweep)
    rows = [(r.optimizer, r.hparam, r.value, r.diverged) for r in sens.rows]
    assert rows == [("adamw", "lr", 4e-3, False), ("adamw", "lr", 3.2e-2, True), ("adamw", "wd", 0.0, False),
                    ("muon", "lr", 4e-2, False)]  # fmt: skip
    diverged = sens.rows[1]
    assert math.isinf(diverged.loss) and math.isinf(diverged.delta)  # sent as null (JSON has no infinity)
    assert client.get(f"/sweeps/{sweep}/sensitivity").json() == _json(sens)

    flips = uc.flips(db, sweep)
    (flip,) = flips.rows
    assert (flip.optimizer_a, flip.optimizer_b, flip.final_leader, flip.n_flips) == ("adamw", "muon", "muon", 1)
    assert client.get(f"/sweeps/{sweep}/flips").json() == _json(flips)

    imp = uc.importance(db, sweep)
    assert [c.cell for c in imp.cells] == ["adamw/130m/1", "muon/130m/1"] and imp.method == uc.IMPORTANCE_METHOD
    assert imp.cells[0].n_trials == 4 and imp.cells[0].rows[0].hparam == "lr"
    assert math.isnan(imp.cells[1].unexplained) and imp.cells[1].rows == ()  # 2 trials: too few to compute
    assert client.get(f"/sweeps/{sweep}/importance").json() == _json(imp)
    one = uc.importance(db, sweep, cell="muon/130m/1")
    assert [c.cell for c in one.cells] == ["muon/130m/1"]
    with pytest.raises(NotFound, match="no trials in cell 'nope/1/1'"):
        uc.importance(db, sweep, cell="nope/1/1")


def test_an_unknown_sweep_is_not_found_and_a_404_problem(db: Database, client: TestClient) -> None:
    for use_case in (uc.speedups, uc.flips, uc.sensitivity, uc.importance):
        for sweep_id in (999, 0, 2**40):  # beyond the id column's range too: no sweep, not an overflow
            with pytest.raises(NotFound, match=f"^no sweep {sweep_id}$") as caught:
                use_case(db, sweep_id)
            # still the ValueError the CLI's report command prints as one line (exit status 2)
            assert isinstance(caught.value, SweepNotFound) and isinstance(caught.value, ValueError)
    for path in ("speedups", "flips", "sensitivity", "importance"):
        r = client.get(f"/sweeps/999/{path}")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", path
        assert r.json() == {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no sweep 999"}
