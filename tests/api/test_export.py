"""GET /sweeps/{id}/export: CSV, Parquet and JSON read back with pandas to the stored rows."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import pytest
from api_builders import T
from fastapi.testclient import TestClient


@pytest.fixture
def stored(store: Any) -> Any:
    return store(
        {
            "adamw/tiny-130k/1": [
                T({"lr": 1e-3, "wd": 0.1, "nesterov": True}, loss=3.1, seconds=12),
                T({"lr": 2e-3, "wd": 0.1, "nesterov": False}, status="diverged", reason="loss 1e5 > 1e4"),
                T({"lr": 4e-3, "wd": 0.1, "nesterov": True}, status="pending"),
            ],
            "muon/tiny-130k/1": [T({"lr": 2e-2, "schedule": "wsd"}, loss=2.9, seed=3)],
        }
    )


def read(client: TestClient, sweep_id: int, fmt: str) -> pd.DataFrame:
    r = client.get(f"/sweeps/{sweep_id}/export", params={"format": fmt})
    assert r.status_code == 200, r.text
    assert f'filename="sweep-{sweep_id}-trials.{fmt}"' in r.headers["content-disposition"]
    if fmt == "csv":
        assert r.headers["content-type"].startswith("text/csv")
        return pd.read_csv(io.StringIO(r.text))
    if fmt == "parquet":
        return pd.read_parquet(io.BytesIO(r.content))
    assert r.headers["content-type"] == "application/json"
    return pd.DataFrame(r.json())


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_export_has_one_row_per_trial_with_flattened_configs(client: TestClient, stored: Any, fmt: str) -> None:
    frame = read(client, stored.sweep_id, fmt)
    assert list(frame["trial_id"]) == stored.trials
    assert list(frame["status"]) == ["completed", "diverged", "pending", "completed"]
    assert list(frame["cell"]) == ["adamw/tiny-130k/1"] * 3 + ["muon/tiny-130k/1"]
    assert frame["final_loss"].iloc[0] == pytest.approx(3.1) and frame["final_loss"].iloc[3] == pytest.approx(2.9)
    assert frame["final_loss"].iloc[1:3].isna().all()
    assert list(frame["config.lr"]) == pytest.approx([1e-3, 2e-3, 4e-3, 2e-2])
    assert frame["config.wd"].iloc[:3].tolist() == pytest.approx([0.1] * 3) and pd.isna(frame["config.wd"].iloc[3])
    assert frame["config.schedule"].iloc[3] == "wsd"
    assert [bool(v) for v in frame["config.nesterov"].iloc[:3]] == [True, False, True]
    assert frame["reason"].iloc[1] == "loss 1e5 > 1e4" and frame["seed"].iloc[3] == 3
    assert frame["device_seconds"].iloc[0] == pytest.approx(12.0)
    assert {"optimizer", "scale", "chinchilla", "started_at", "finished_at", "repro"} <= set(frame.columns)


def test_json_export_keeps_every_digit_and_the_api_s_timestamps(client: TestClient, stored: Any) -> None:
    rows = client.get(f"/sweeps/{stored.sweep_id}/export", params={"format": "json"}).json()
    for row in rows:
        trial = client.get(f"/trials/{row['trial_id']}").json()
        assert row["final_loss"] == trial["final_loss"]  # the same float, not one rounded to 10 or 15 digits
        # Integers stay integers beside a gap (the pending trial has no steps; muon's config has no wd).
        assert row["steps"] == trial["steps"] and type(row["steps"]) is type(trial["steps"])
        exported = {k.removeprefix("config."): v for k, v in row.items() if k.startswith("config.") and v is not None}
        assert exported == trial["config"]
        assert all(type(exported[k]) is type(v) for k, v in trial["config"].items())
        for field in ("created_at", "started_at", "finished_at"):
            assert row[field] == trial["timings"][field], field


def test_an_empty_sweep_exports_the_header_and_bad_formats_are_422(client: TestClient, store: Any) -> None:
    empty = client.post("/sweeps", json={"name": "e", "optimizers": ["adamw"], "scales": ["tiny-130k"]}).json()
    frame = read(client, empty["id"], "csv")
    assert len(frame) == 0 and "trial_id" in frame.columns
    assert len(read(client, empty["id"], "parquet")) == 0
    r = client.get(f"/sweeps/{empty['id']}/export", params={"format": "xlsx"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "format"]


def test_a_config_column_mixing_kinds_is_written_as_text_in_parquet(client: TestClient, store: Any) -> None:
    mixed = store({"adamw/tiny-130k/1": [T({"eps": 1e-8}, loss=3.0), T({"eps": "auto"}, loss=3.1)]})
    frame = read(client, mixed.sweep_id, "parquet")
    assert list(frame["config.eps"]) == ["1e-08", "auto"]
