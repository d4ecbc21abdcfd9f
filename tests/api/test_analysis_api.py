"""GET /sweeps/{id}/speedups, GET /sweeps/{id}/sensitivity and GET /predict (api/routers/analysis.py), on the
paper's imported results and on hand-built sweeps; SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from api_builders import MakeClient, T
from fastapi.testclient import TestClient

from db.session import Database
from sweep_service.importer import PAPER_RESULTS, import_results
from workers.optimizers import REGISTRY, resolve_hparams


@pytest.fixture
def paper(db: Database) -> int:
    return import_results(db, PAPER_RESULTS)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_speedups_on_the_paper_results(client: TestClient, paper: int) -> None:
    r = client.get(f"/sweeps/{paper}/speedups")
    assert r.status_code == 200
    body = r.json()
    assert body["sweep_id"] == paper and body["baseline"] == "adamw" and body["fit_multiples"] is None
    rows = body["rows"]
    assert len(rows) == 134

    def speedups(optimizer: str, scale: str) -> list[float]:
        return [
            x["speedup"]
            for x in rows
            if x["optimizer"] == optimizer and x["scale"] == scale and x["chinchilla"] in (1, 2, 4, 8)
        ]

    for optimizer in ("muon", "soap"):  # 'soape' in the paper's files is our 'soap'
        at_130m = speedups(optimizer, "130m")
        # PAPER.md section 1: ~1.4x at 0.1B; this release gives 1.27-1.42 per point at 130m ...
        assert len(at_130m) == 4 and 1.25 < _mean(at_130m) < 1.45 and all(1.2 < s < 1.5 for s in at_130m)
        # ... and the speedup shrinks with scale
        assert _mean(speedups(optimizer, "520m")) < _mean(at_130m) - 0.05
    adamw = [x for x in rows if x["optimizer"] == "adamw" and x["chinchilla"] in (1, 2, 4, 8)]
    assert all(x["speedup"] == pytest.approx(1.0, abs=0.05) for x in adamw)  # test_analysis says why not 3%
    first = next(x for x in rows if x["scale"] == "130m")
    # AdamW at 130m fitted on 1-16x, as the authors' speedup script (PAPER.md section 5)
    assert first["fit_n_points"] == 5 and first["fit_d_min"] == 1 and first["fit_d_max"] == 16
    assert first["fit_alpha"] == pytest.approx(0.455, abs=5e-3) and first["fit_B"] == pytest.approx(0.435, abs=5e-3)
    assert first["non_embedding_params"] == 134_217_728 and first["speedup_ci_low"] is None  # one seed per cell
    # ... so no interval and no tie is claimed
    assert all(x["interval_source"] == "" and not x["tied_within_noise"] and x["tied_with"] == [] for x in rows)
    assert not any(x["fit_unphysical"] for x in rows)
    # Muon's 16x D_eff lies beyond AdamW's 16x, and the row says by how much.
    muon_16 = next(x for x in rows if (x["optimizer"], x["scale"], x["chinchilla"]) == ("muon", "130m", 16))
    assert muon_16["extrapolated"] and muon_16["extrapolation_factor"] == pytest.approx(muon_16["d_eff"] / 16)
    assert not any(x["extrapolated"] for x in adamw)

    # Another baseline: Muon's own curve; a name outside the registry and the sweep lists the valid ones.
    muon = client.get(f"/sweeps/{paper}/speedups", params={"baseline": "muon"}).json()
    assert muon["baseline"] == "muon"
    on_fit = [x for x in muon["rows"] if x["optimizer"] == "muon" and x["chinchilla"] in (1, 2, 4, 8)]
    assert len(on_fit) == 12 and all(x["speedup"] == pytest.approx(1.0, abs=0.05) for x in on_fit)
    r = client.get(f"/sweeps/{paper}/speedups", params={"baseline": "adamx"})
    assert r.status_code == 422 and "adamw" in r.json()["errors"][0]["message"]


def test_speedups_flag_an_extrapolation_from_an_unphysical_fit(client: TestClient, store: Any) -> None:
    """The quickstart's case: AdamW at 0.03/0.06/0.12x whose three losses no physical L(D) passes through, and
    Muon at 0.06x far below them. Before the flags the API reported a plain speedup of ~10 with D_eff ~5 off a
    fit with a negative asymptote."""
    cells = {
        f"adamw/tiny-300k/{d}": [T({"lr": 1e-2}, loss=loss)] for d, loss in ((0.03, 5.0), (0.06, 4.8), (0.12, 4.599))
    }
    cells["muon/tiny-300k/0.06"] = [T({"lr": 2e-2}, loss=4.5)]
    stored = store(cells)
    body = client.get(f"/sweeps/{stored.sweep_id}/speedups").json()
    assert body["fit_multiples"] is None  # every AdamW multiple is fitted
    rows = {(x["optimizer"], x["chinchilla"]): x for x in body["rows"]}
    muon = rows[("muon", 0.06)]
    assert muon["fit_unphysical"] and muon["fit_beta"] >= 0 and "unconstrained fit unphysical" in muon["note"]
    assert muon["fit_d_min"] == 0.03 and muon["fit_d_max"] == 0.12
    assert muon["extrapolated"] and muon["d_eff"] > 0.12 and muon["speedup"] is not None  # kept, flagged
    assert muon["extrapolation_factor"] == pytest.approx(muon["d_eff"] / 0.12)
    assert not rows[("adamw", 0.06)]["extrapolated"]


def test_best_and_predict_on_the_paper_results(client: TestClient, paper: int) -> None:
    best = client.get("/best", params={"optimizer": "muon", "scale": "130m", "chinchilla": 1}).json()["results"]
    assert len(best) == 1 and best[0]["sweep_id"] == paper and best[0]["imported"] is True
    assert best[0]["loss"] == pytest.approx(3.4626, abs=1e-4) and best[0]["config"]["lr"] == 0.016

    # The rest of the API takes the imported sweep as it is: its progress and its export.
    detail = client.get(f"/sweeps/{paper}").json()
    assert detail["status"] == "completed" and detail["imported"] is True and len(detail["cells"]) == 134
    assert detail["trials"]["completed"] == 134 and detail["best"] is not None
    export = client.get(f"/sweeps/{paper}/export", params={"format": "csv"})
    assert export.status_code == 200 and export.text.count("\n") == 1 + 134

    # Muon at 1.2b (no 1.2b cell in the release): fitted over 130m, 300m and 520m.
    params = {"optimizer": "muon", "params": 1_207_959_552, "chinchilla": 1}
    r = client.get("/predict", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["family"] == "paper" and body["sweeps_used"] == [paper] and body["snap"] is False
    assert body["scales_used"] == {"130m": 134_217_728, "300m": 301_989_888, "520m": 536_870_912}
    assert body["cells_used"] == 5 + 5 + 4  # muon: 130m and 300m at 1-16x, 520m at 1-8x
    assert body["method"] == "robust"  # the default
    lr = next(f for f in body["fits"] if f["name"] == "lr")
    assert lr["method"] == "robust" and lr["error"] is not None and lr["form_errors"]
    assert lr["low"] <= body["config"]["lr"] <= lr["high"]
    assert 0 < body["config"]["lr"] < 0.128 and body["config"]["lr"] == lr["predicted"]

    # method=paper: the authors' fit (12 cells, 520m 8x held out), unrounded
    by_paper = client.get("/predict", params={**params, "method": "paper"}).json()
    lr_paper = next(f for f in by_paper["fits"] if f["name"] == "lr")
    assert by_paper["method"] == "paper" and lr_paper["form"] == "power_law" and lr_paper["n_points"] == 12
    assert lr_paper["holdout"] == {"scale": "520m", "chinchilla": 8.0} and lr_paper["low"] is None
    assert client.get("/predict", params={**params, "method": "magic"}).status_code == 422

    snapped = client.get("/predict", params={**params, "snap": True}).json()
    grid = REGISTRY["muon"].spaces["paper"].grid
    for name, values in grid.items():
        if name in snapped["config"]:
            assert snapped["config"][name] in values, name
    assert snapped["config"]["lr"] in grid["lr"]

    # Only names the trainer takes: the release's lr_schedule (Muon, Scion) and nesterov (the Adam family) are
    # dropped and listed; what is left passes the trainer's own check.
    for optimizer, extra in (("muon", "lr_schedule"), ("scion", "lr_schedule"), ("adamw", "nesterov"),
                             ("nadamw", "nesterov"), ("adam_mini", "nesterov")):  # fmt: skip
        got = client.get("/predict", params={**params, "optimizer": optimizer, "snap": True}).json()
        assert extra not in got["config"] and extra in got["dropped"] and extra in got["note"], optimizer
        assert {f["name"] for f in got["fits"]} == set(got["config"])
        resolve_hparams(REGISTRY[optimizer], "paper", {k: v for k, v in got["config"].items() if v is not None})

    # AdamW at 1.2b under robust: the old fit said wd 20.8 (issue 12); every value within [min/2, 2 x max].
    adamw = client.get("/predict", params={**params, "optimizer": "adamw"}).json()
    assert 0.0 <= adamw["config"]["wd"] <= 0.4 and adamw["method"] == "robust"

    # params as a float-formatted whole number
    for text, n in (("1e9", 10**9), ("1.2e9", 1_200_000_000), ("1207959552", 1_207_959_552)):
        r = client.get("/predict", params={**params, "params": text})
        assert r.status_code == 200 and r.json()["non_embedding_params"] == n, text
    for text in ("1.5", "1e9.5", "x", "inf", "nan"):
        r = client.get("/predict", params={**params, "params": text})
        assert r.status_code == 422, text
        detail = r.json()["errors"][0]
        assert detail["loc"] == ["query", "params"] and "whole number" in detail["message"], text


def test_predict_says_when_it_cannot(client: TestClient, paper: int, store: Any) -> None:
    r = client.get("/predict", params={"optimizer": "sgd", "params": 10**9})
    assert r.status_code == 422 and all(n in r.json()["errors"][0]["message"] for n in REGISTRY)
    r = client.get("/predict", params={"optimizer": "adamh", "params": 10**9})  # not in the release
    assert r.status_code == 404 and "import-results" in r.json()["detail"]
    # Only tiny-130k results for lion: nothing to extrapolate in N from.
    store({"lion/tiny-130k/1": [T({"lr": 1e-3}, loss=3.0), T({"lr": 2e-3}, loss=2.9)]})
    r = client.get("/predict", params={"optimizer": "lion", "params": 1_000_000})  # nearest scale: tiny
    assert r.status_code == 409 and "one model size only (tiny-130k)" in r.json()["detail"]
    # ... while the paper family has three sizes of lion.
    r = client.get("/predict", params={"optimizer": "lion", "params": 1_000_000, "family": "paper"})
    assert r.status_code == 200 and r.json()["family"] == "paper"
    for bad in ({"params": 0}, {"params": 10**14}, {"chinchilla": 0}, {"chinchilla": "inf"}, {"family": "x"},
                {"colour": "red"}):  # fmt: skip
        assert client.get("/predict", params={"optimizer": "muon", "params": 10**9, **bad}).status_code == 422, bad


def test_predict_from_one_sweep(client: TestClient, store: Any) -> None:
    # Two sweeps of lion at the same tiny scales (e.g. two different models): `sweep=` fits one of them only.
    a = store({f"lion/{sc}/1": [T({"lr": 1e-3}, loss=3.0)] for sc in ("tiny-130k", "tiny-300k")})
    b = store({f"lion/{sc}/1": [T({"lr": 4e-3}, loss=3.0)] for sc in ("tiny-130k", "tiny-300k")})
    params = {"optimizer": "lion", "params": 400_000}
    both = client.get("/predict", params=params).json()
    assert both["sweeps_used"] == [a.sweep_id, b.sweep_id]
    for stored, lr in ((a, 1e-3), (b, 4e-3)):
        one = client.get("/predict", params={**params, "sweep": stored.sweep_id}).json()
        assert one["sweeps_used"] == [stored.sweep_id] and one["config"]["lr"] == pytest.approx(lr)
    assert one["family"] == "tiny"  # every cell a tiny preset: the tiny family, its grid and trainer names
    # a sweep over two families (or an outside trainer's custom scales): no catalog family, no grid to snap to
    mixed = store({"lion/tiny-130k/1": [T({"lr": 1e-3}, loss=3.0)], "lion/130m/1": [T({"lr": 5e-3}, loss=3.0)]})
    got = client.get("/predict", params={**params, "sweep": mixed.sweep_id, "snap": True}).json()
    assert got["family"] == "custom" and got["sweeps_used"] == [mixed.sweep_id] and "no grid to snap to" in got["note"]
    assert 1e-3 <= got["config"]["lr"] <= 5e-3
    r = client.get("/predict", params={**params, "sweep": 999_999})
    assert r.status_code == 404 and r.json()["detail"] == "no sweep 999999"
    r = client.get("/predict", params={**params, "sweep": 0})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "sweep"]


def test_flips_and_noise_intervals(client: TestClient, store: Any, db: Database) -> None:
    """GET /flips from the best trials' eval curves; GET /speedups uses a cell's recorded seed noise."""
    from db import repository as repo

    def curve(losses: list[float]) -> list[tuple[int, float | None, float | None]]:
        return [(10 * (i + 1), v, None) for i, v in enumerate(losses)]

    # adamw leads until half way, muon after: the crossing at 0.55 of training (sweep_service.ranking)
    adamw = [5.0, 4.5, 4.0, 3.8, 3.6, 3.5, 3.45, 3.4, 3.35, 3.3]
    muon = [5.2, 4.7, 4.2, 3.9, 3.7, 3.4, 3.3, 3.2, 3.1, 3.0]
    cells = {f"adamw/tiny-130k/{d}": [T({"lr": 1e-2}, loss=3.3 + 0.5 * d**-0.5)] for d in (0.5, 2.0, 4.0)}
    cells["adamw/tiny-130k/1"] = [T({"lr": 1e-2}, loss=3.8, curve=curve(adamw))]
    cells["muon/tiny-130k/1"] = [T({"lr": 2e-2}, loss=3.6, curve=curve(muon))]  # D_eff ~2.8
    stored = store(cells)
    body = client.get(f"/sweeps/{stored.sweep_id}/flips").json()
    assert len(body["rows"]) == 1 and body["note"] == ""
    row = body["rows"][0]
    assert (row["optimizer_a"], row["optimizer_b"], row["final_leader"]) == ("adamw", "muon", "muon")
    assert row["n_flips"] == 1 and row["settled_at"] == pytest.approx(0.55)
    assert client.get("/sweeps/999999/flips").status_code == 404

    # one seed per cell: no interval until the cells record their seed noise (as confirm_seeds does)
    def muon_row() -> dict[str, Any]:
        rows = client.get(f"/sweeps/{stored.sweep_id}/speedups").json()["rows"]
        return next(r for r in rows if r["optimizer"] == "muon")

    assert muon_row()["interval_source"] == "" and muon_row()["speedup_ci_low"] is None
    with db.session() as s:
        for cell_id in stored.cells.values():
            repo.update_cell(s, cell_id, settings={"tolerance": 3e-3, "noise_std": 0.005})
    noisy = muon_row()
    assert noisy["interval_source"] == "noise_estimate"
    assert 2.4 < noisy["speedup_ci_low"] < noisy["speedup"] < noisy["speedup_ci_high"] < 3.2  # speedup 2.78
    # the same interval as `sweep-service run`'s answer and the report (the use case's N_BOOT seeded draws)
    from sweep_service.service import analysis as uc

    same = next(r for r in uc.speedups(db, stored.sweep_id).rows if r.optimizer == "muon")
    assert (noisy["speedup_ci_low"], noisy["speedup_ci_high"]) == (same.speedup_ci_low, same.speedup_ci_high)


def test_sensitivity(client: TestClient, store: Any) -> None:
    base = {"lr": 8e-3, "wd": 0.1, "warmup": 2000}
    # PAPER.md section 6: AdamW at 130M, 1x
    stored = store(
        {
            "adamw/130m/1": [
                T(base, loss=3.529),
                T({**base, "lr": 4e-3}, loss=3.550),
                T({**base, "lr": 1.6e-2}, loss=3.538),
                T({**base, "lr": 3.2e-2}, status="diverged"),
                T({**base, "wd": 0.0}, loss=3.545),
                T({**base, "lr": 4e-3, "wd": 0.0}, loss=3.6),  # two changes: not a sensitivity row
            ]
        }
    )
    r = client.get(f"/sweeps/{stored.sweep_id}/sensitivity")
    assert r.status_code == 200
    body = r.json()
    assert body["sweep_id"] == stored.sweep_id
    rows = [(x["hparam"], x["value"], x["loss"], x["diverged"]) for x in body["rows"]]
    assert rows == [
        ("lr", 4e-3, pytest.approx(3.550), False),
        ("lr", 1.6e-2, pytest.approx(3.538), False),
        ("lr", 3.2e-2, None, True),  # diverged: no finite loss to send
        ("wd", 0.0, pytest.approx(3.545), False),
    ]
    assert body["rows"][0]["delta"] == pytest.approx(0.021) and body["rows"][0]["best_value"] == 8e-3
    assert body["rows"][2]["delta"] is None and body["rows"][0]["best_loss"] == pytest.approx(3.529)

    # No AdamW in this sweep: speedups against it are null with a note, not an error.
    other = store({"muon/130m/1": [T({"lr": 1e-2}, loss=3.4)]})
    sp = client.get(f"/sweeps/{other.sweep_id}/speedups").json()["rows"]
    assert sp[0]["speedup"] is None and "no adamw results" in sp[0]["note"]


def test_unknown_sweep_and_bad_ids(client: TestClient) -> None:
    for path in ("/sweeps/999/speedups", "/sweeps/999/sensitivity"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["detail"] == "no sweep 999"
    for path in ("/sweeps/0/speedups", f"/sweeps/{2**40}/sensitivity", "/sweeps/x/speedups"):
        assert client.get(path).status_code == 422, path
    assert client.get("/sweeps/1/speedups", params={"baselin": "adamw"}).status_code == 422


def test_openapi_documents_the_analysis_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, schema in (
        ("/sweeps/{sweep_id}/speedups", "SpeedupsResponse"),
        ("/sweeps/{sweep_id}/sensitivity", "SensitivityResponse"),
        ("/predict", "PredictResponse"),
    ):
        op = paths[path]["get"]
        ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/" + schema) and op["description"] and "404" in op["responses"]
    params = {p["name"] for p in paths["/predict"]["get"]["parameters"]}
    assert params == {"optimizer", "params", "chinchilla", "snap", "family", "method", "sweep"}


def test_tokens_are_required_when_set(make_client: MakeClient, paper: int) -> None:
    client = make_client(SWEEP_API_READ_TOKENS="r1")
    assert client.get(f"/sweeps/{paper}/speedups").status_code == 401
    ok = client.get(f"/sweeps/{paper}/sensitivity", headers={"Authorization": "Bearer r1"})
    assert ok.status_code == 200 and ok.json()["rows"] == []
