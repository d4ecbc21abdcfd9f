"""The near-tie count is the same in the report and in the dashboard (issue 17: 1 in the report, 0 on the
dashboard for the same cell): both count the configs within the tolerance other than the best itself. The
dashboard counts them from the cell's stored near_ties (GET /sweeps/{id}: the best included, first), as
api/dashboard/app.js otherTies does; the report from analysis.best_per_cell's n_near_ties (the best included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api_builders import T
from fastapi.testclient import TestClient

from db.session import Database
from sweep_service.report import write_report


def test_report_and_dashboard_count_the_same_near_ties(
    client: TestClient, store: Any, db: Database, tmp_path: Path
) -> None:
    stored = store(
        {
            # two configs within 3e-3 of the best: 2 near-ties besides it
            "adamw/130m/1": [
                T({"lr": 1e-3}, loss=3.500),
                T({"lr": 2e-3}, loss=3.501),
                T({"lr": 4e-3}, loss=3.502),
                T({"lr": 8e-3}, loss=3.600),
            ],
            "muon/130m/1": [T({"lr": 1e-3}, loss=3.4), T({"lr": 2e-3}, loss=3.5)],  # none besides the best
        }
    )
    cells = client.get(f"/sweeps/{stored.sweep_id}").json()["cells"]
    dashboard = {c["key"]: sum(1 for t in c["near_ties"] if t != c["best_config"]) for c in cells}
    assert dashboard == {"adamw/130m/1": 2, "muon/130m/1": 0}
    page = write_report(db, stored.sweep_id, tmp_path / "out", n_boot=10).read_text()
    best = page.split("<h2>Best configs per scale</h2>")[1].split("</table>")[0]
    rows = [r for r in best.split("<tr>")[2:]]
    report = {}
    for r in rows:
        cells_ = [c.split(">", 1)[1].split("</td>")[0] for c in r.split("<td")[1:]]
        report[f"{cells_[0]}/130m/1"] = int(cells_[6])  # the "near-ties" column
    assert report == dashboard
