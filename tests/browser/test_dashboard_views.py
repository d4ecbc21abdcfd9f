"""The issue-17 views in headless Chromium at desktop (1440x900) and phone (390x844) sizes, on real data: the
paper's released results (`sweep-service import-results paper`) and a grid-searched sweep stored the way the
engine stores one (tests/api/api_builders.store_sweep) with curves. Every page: no horizontal overflow; each
new view drawn; the export links present; the submit form shows every error at once. Screenshots go to
runs/screenshots/ (and the two README ones are refreshed from them by `make screenshots`)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from db import repository as repo
from db.session import Database
from tests.api.api_builders import T, store_sweep
from tests.browser.test_dashboard import set_spec, severe_console_errors, view_ready, wait

pytestmark = [pytest.mark.browser]

SIZES = {"desktop": (1440, 900), "phone": (390, 844)}


def _curve(lr: float, wd: float) -> list[tuple[int, float | None, float | None]]:
    """An eval curve that ends at the trial's loss (loss falls as 1/sqrt(step))."""
    end = _loss(lr, wd)
    return [(s, end + 2.0 / math.sqrt(s), None) for s in (10, 20, 40, 80, 160)]


def _loss(lr: float, wd: float) -> float:
    return 3.3 + 40 * (math.log10(lr) + 2.5) ** 2 / 100 + 0.02 * abs(wd - 0.1)


def _grid_sweep(url: str) -> int:
    db = Database(url)
    try:
        cells = {
            key: [
                # nesterov: a constant of the paper's AdamW configs that our trainer has no setting for
                T(
                    {"lr": lr, "wd": wd, "warmup": 100, "nesterov": False},
                    loss=_loss(lr, wd) + shift,
                    curve=_curve(lr, wd),
                )
                for lr in (1e-3, 2e-3, 4e-3, 8e-3)
                for wd in (0.0, 0.1, 0.2)
            ]
            for key, shift in (("adamw/130m/1", 0.0), ("muon/130m/1", -0.05), ("adamw/130m/2", -0.08))
        }
        stored = store_sweep(db, cells, name="grid", status="completed")
        # adamw/130m/2 as a Phase III cell with its decision (sweep_service.phases.phase_three's record)
        decision = {
            "phase": 3,
            "prediction": {"lr": 4e-3, "wd": 0.1, "warmup": 100},
            "method": "robust",
            "fits": {
                "lr": {"form": "log_linear", "n_points": 4, "error": 0.12, "raw": 4e-3, "fallback": False, "note": ""},
                "wd": {"form": "constant", "n_points": 4, "error": None, "raw": 0.1, "fallback": True, "note": ""},
            },
        }
        with db.session() as s:
            repo.update_cell(s, stored.cells["adamw/130m/2"], settings={"tolerance": 3e-3, **decision})
        return stored.sweep_id
    finally:
        db.dispose()


def _no_overflow(driver: Any, width: int) -> int:
    """How many pixels the page is wider than `width`, the screen's (0: nothing scrolls sideways)."""
    return int(driver.execute_script("return document.documentElement.scrollWidth;")) - width


def _resize(driver: Any, size: tuple[int, int] | None) -> None:
    """The viewport at `size` exactly (DevTools' device emulation: a headless window cannot be made narrower
    than ~500 px), as a phone (mobile) below 500 px; None: back to the window's own size."""
    if size is None:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        return
    # not "mobile": a mobile layout viewport grows to fit wide content, which would hide the overflow
    metrics = {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def test_new_views_on_real_data_at_desktop_and_phone_sizes(driver: Any, start_server: Any, shot: Any) -> None:
    server = start_server(dispatcher=False)
    env = {**os.environ, "SWEEP_HOME": str(server.home)}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "sweep_service.cli", "import-results", "paper"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    paper = int(done.stdout.strip())
    grid = _grid_sweep(f"sqlite:///{(server.home / 'sweep-service.db').resolve()}")
    with server.client() as api:
        cells = {c["key"]: c for c in api.get(f"/sweeps/{grid}").json()["cells"]}
        best_trial = cells["adamw/130m/1"]["best_trial_id"]
        paper_trial = api.get(f"/sweeps/{paper}/trials?limit=1").json()["items"][0]["id"]
        # GET /sweeps/{id}/flips comes with the analysis work: where the server has it, the view must draw it
        flips = api.get(f"/sweeps/{grid}/flips")
        has_flips = flips.status_code == 200 and bool(flips.json().get("rows"))
    driver.get_log("browser")
    try:
        for label, size in SIZES.items():
            _resize(driver, size)
            pages = [
                ("#/sweeps?status=running", "sweeps"),
                (f"#/sweeps/{paper}", "sweep-overview"),
                (f"#/sweeps/{paper}/best", "sweep-best"),
                (f"#/sweeps/{paper}/speedup", "sweep-speedup"),
                (f"#/sweeps/{paper}/explore?optimizer=muon", "sweep-explore"),
                (f"#/sweeps/{grid}/explore?cell=adamw/130m/1", "sweep-explore"),
                (f"#/sweeps/{grid}/cells/adamw%2F130m%2F1", "cell"),
                (f"#/sweeps/{grid}/cells/adamw%2F130m%2F2", "cell"),
                (f"#/sweeps/{grid}/trials", "sweep-trials"),
                (f"#/sweeps/{grid}/speedup", "sweep-speedup"),
                (f"#/trials/{best_trial}", "trial"),
                (f"#/compare?trials={best_trial},{paper_trial}", "compare"),
                ("#/best", "best"),
                ("#/submit", "submit"),
            ]
            for i, (hash_, view) in enumerate(pages):
                # a hash change does not reload the page: mark the old view stale so the wait sees the new one
                driver.execute_script("const m = document.getElementById('main'); if (m) m.dataset.ready = '0';")
                driver.get(f"{server.url}/{hash_}")
                view_ready(driver, view, 40)
                wait(driver, "return document.body.dataset.rendered !== undefined;", 20)
                too_wide = _no_overflow(driver, size[0])
                assert too_wide <= 0, f"{label} {hash_}: {too_wide} px too wide"
                shot(f"17-{label}-{i:02d}-{view}")
                _check(driver, hash_, paper, grid, has_flips)
                # nothing drawn as the text of an object (a list or null handed to the DOM as a child)
                body = driver.execute_script("return document.getElementById('main').innerText;")
                assert "[object " not in body and not re.search(r"(?<![\w-])null(?![\w-])", body), hash_
        # Dark mode follows the system's (prefers-color-scheme); keyboard: the chart and its tools take focus.
        driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}
        )
        _resize(driver, SIZES["desktop"])
        driver.execute_script("document.getElementById('main').dataset.ready = '0';")
        driver.get(f"{server.url}/#/sweeps/{paper}/speedup")
        view_ready(driver, "sweep-speedup", 40)
        background = driver.execute_script("return getComputedStyle(document.body).backgroundColor;")
        assert background == "rgb(21, 23, 26)", background
        shot("17-desktop-dark-speedup")
        focusable = driver.execute_script(
            "return [...document.querySelectorAll('.chart-holder, .chart-tools button, th button.sort')]"
            ".every(e => e.tabIndex >= 0);"
        )
        assert focusable
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        _resize(driver, None)
    # the refused spec (422) is the submit check itself
    assert (
        severe_console_errors(
            driver,
            "/flips",
            "/importance",
            "/sweeps - Failed to load resource: the server responded with a status of 422",
        )
        == []
    )


def _check(driver: Any, hash_: str, paper: int, grid: int, has_flips: bool) -> None:
    """What each page must show (beyond not overflowing)."""
    js = driver.execute_script
    if hash_.startswith("#/sweeps?status"):
        text = js("return document.getElementById('main').textContent;")
        assert "No sweeps yet" not in text and ("No running sweeps" in text or "#" in text)
    elif hash_ == f"#/sweeps/{paper}":
        assert js("return document.querySelector('#export-csv').getAttribute('href');").endswith("format=csv")
        # imported: no empty chart with a legend, a sentence instead
        assert js("return document.querySelectorAll('#curves .legend').length;") == 0
        assert "imported" in js("return document.querySelector('#no-curves').textContent;")
    elif hash_ == f"#/sweeps/{grid}/speedup":
        assert js("return document.querySelectorAll('.speedup-matrix td.sp-cell').length;") >= 1
        if has_flips:
            assert js("return document.querySelectorAll('#flips-table tbody tr').length;") >= 1
    elif hash_.endswith("/speedup"):
        matrix = js("return document.querySelectorAll('.speedup-matrix td.sp-cell').length;")
        assert matrix > 10
        charts = js("return document.querySelectorAll('[id^=deff-] svg.chart g.bands').length;")
        assert charts >= 1 and js("return document.querySelectorAll('[id^=deff-] path.band').length;") == 6 * charts
        ticks = js("return [...document.querySelectorAll('[id^=deff-] .axes text')].map(t => t.textContent);")
        assert "4" in ticks and "5" not in ticks  # powers of two
        assert js("return document.querySelectorAll('.chart-tools .toggle-log').length;") >= 1
        size = js("return parseFloat(getComputedStyle(document.querySelector('svg.chart .axes text')).fontSize);")
        assert size >= 11
    elif "explore?optimizer" in hash_:
        assert js("return document.querySelectorAll('#slices figure.slice g.series circle').length;") > 3
        assert js("return document.querySelectorAll('#parallel polyline').length;") > 3
    elif "explore?cell" in hash_:
        assert js("return document.querySelectorAll('#slices figure.slice').length;") == 2  # lr, wd
        assert js("return document.querySelectorAll('#parallel polyline').length;") == 12
        bars = js("return [...document.querySelectorAll('#importance .bar text')].map(t => t.textContent);")
        assert bars[0] == "lr", bars
    elif "/cells/adamw%2F130m%2F2" in hash_:  # a Phase III cell: its decision under the header
        text = js("return document.getElementById('phase-decision').textContent;")
        assert text.startswith("Phase III (robust): runs the predicted config lr=0.004, wd=0.1, warmup=100"), text
        assert "lr log_linear (held-out error 0.12)" in text and "wd constant [fallback" in text, text
    elif "/cells/" in hash_:
        assert js("return document.getElementById('phase-decision');") is None  # a Phase I cell: none
        js("document.getElementById('copy-train').click();")
        out = wait(driver, "return document.getElementById('copy-out').textContent;")
        assert out.startswith("sweep-service train --scale 130m --optimizer adamw") and "--set lr=" in out
        # the paper's constants that the trainer has no setting for are left out and named (train refuses them)
        assert "--set nesterov" not in out and "# left out, not settings of this trainer: nesterov=false" in out
        js("document.getElementById('copy-yaml').click();")
        out = wait(
            driver, "const o = document.getElementById('copy-out'); return o.dataset.what === 'yaml' && o.textContent;"
        )
        assert "optimizer: adamw" in out and "config:" in out
        # the chart's tools: log y, tokens on x, hover values
        js("document.querySelector('#cell-curves .toggle-log').click();")
        assert js("return document.querySelector('#cell-curves .chart-interactive').dataset.ylog;") == "1"
        js("document.querySelector('#cell-curves .toggle-x').click();")
        labels = js("return [...document.querySelectorAll('#cell-curves svg text.label')].map(t => t.textContent);")
        assert "tokens" in labels
        tip = js(
            "const svg = document.querySelector('#cell-curves svg.chart');"
            "const p = svg.chartData.hover[0]; const r = svg.getBoundingClientRect();"
            "const x = r.left + p.sx * r.width / svg.chartData.W, y = r.top + p.sy * r.height / svg.chartData.H;"
            "svg.parentElement.dispatchEvent(new MouseEvent('mousemove', {clientX: x, clientY: y, bubbles: true}));"
            "const t = document.querySelector('#cell-curves .chart-tip'); return !t.hidden && t.textContent;"
        )
        assert tip and "trial" in tip
        # drag on x zooms in
        js(
            "const h = document.querySelector('#cell-curves .chart-holder'); const r = h.getBoundingClientRect();"
            "h.dispatchEvent(new MouseEvent('mousedown', {clientX: r.left + r.width * 0.3, clientY: r.top + 50}));"
            "h.dispatchEvent(new MouseEvent('mouseup', {clientX: r.left + r.width * 0.7, clientY: r.top + 50}));"
        )
        assert js("return document.querySelector('#cell-curves .chart-interactive').dataset.zoomed;") == "1"
        # a sortable table: sort the trials by final loss, descending then ascending
        assert js("return document.querySelectorAll('.trials-table th button.sort').length;") >= 5
        assert js("return document.querySelectorAll('input.table-filter').length;") >= 1
    elif hash_.startswith("#/compare"):
        assert js("return document.querySelectorAll('#compare-curves g.series path').length;") >= 1
        assert js("return document.querySelectorAll('#compare-diff tr.differs-row').length;") >= 1
    elif hash_ == "#/submit":
        bad = "name: x\noptimizers: [adamw, adamx]\nscales: [tiny-130k]\nchinchilla: [0.1]\nbudget: 0\n"
        set_spec(driver, bad)
        js("document.getElementById('submit-spec').click();")
        fields = wait(
            driver,
            "const f = [...document.querySelectorAll('#spec-errors li')].map(l => l.dataset.field);"
            "return f.length >= 2 && f;",
        )
        assert {"budget", "optimizers.1"} <= set(fields)  # every error in one answer
        set_spec(driver, bad.replace("budget: 0", "budget: 2"))  # an edit: the old errors go
        assert js("return document.querySelectorAll('#spec-errors li').length;") == 0
