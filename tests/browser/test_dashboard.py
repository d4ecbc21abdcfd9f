"""The dashboard in headless Chromium against the real service (`sweep-service serve` in a subprocess).

The main test is the issue's acceptance path: submit a sweep through the page's form (a spec that fails the
API's validation first: the error must appear next to the field's line; then a valid one), watch it progress
without reloading, open a cell, and find the best config on the page, agreeing with the API. The sweep is
tiny on purpose (tiny-130k at 0.02x and 0.05x Chinchilla: 12 and 32 steps; a 2-value lr grid: 4 trials, one
at a time). Every view is screenshotted.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sweep_service.spec import _numbers

pytestmark = [pytest.mark.browser]

SWEEP_DONE_S = 300.0  # 4 tiny trials take ~30 s on 2 free cores (Ray start included); a loaded machine, far longer

VALID_SPEC = """\
name: browser-e2e
optimizers: [adamw]
scales: [tiny-130k]
chinchilla: [0.02, 0.05]
search:
  adamw:
    tune: [lr]
    grid: {lr: [3.0e-3, 1.2e-2]}
    baseline: {lr: 3.0e-3}
    fixed: {warmup: 2}
budget: 3
seeds: [0]
resources: {cpu: 1, gpu: 0}
max_concurrent: 1
eval_every: 4
data: builtin
"""
INVALID_SPEC = VALID_SPEC.replace("budget: 3", "budget: 0")
BUDGET_LINE = VALID_SPEC.splitlines().index("budget: 3") + 1


def wait(driver: Any, script: str, timeout: float = 20.0, *args: Any) -> Any:
    """Wait until `script` (a JS expression body returning a value) returns something truthy; return it."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: d.execute_script(script, *args), message=f"timed out waiting for: {script}"
    )


def view_ready(driver: Any, view: str, timeout: float = 20.0) -> None:
    wait(
        driver,
        "const m = document.getElementById('main'); return m.dataset.view === arguments[0] && m.dataset.ready === '1';",
        timeout,
        view,
    )


def text_of(driver: Any, selector: str) -> str:
    return str(
        driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", selector
        )
    )


def set_spec(driver: Any, text: str) -> None:
    driver.execute_script(
        "const a = document.getElementById('spec-text'); a.value = arguments[0];a.dispatchEvent(new Event('input'));",
        text,
    )


def severe_console_errors(driver: Any, *allowed: str) -> list[str]:
    """Browser console errors (a script error, a refused asset), less the failed requests the page expects and
    handles: a 401 before the token is given, and a 404/422 from the analysis endpoints ("not available")."""
    expected = ("401 (Unauthorized)", "/speedups?", "/sensitivity", "/flips", "/importance", *allowed)
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and not any(x in e["message"] for x in expected)
    ]


@pytest.mark.slow
@pytest.mark.ray
def test_submit_watch_open_cell_and_find_best(driver: Any, start_server: Any, shot: Any) -> None:
    server = start_server(dispatcher=True)
    driver.get_log("browser")  # drop what earlier tests left in the shared browser's log
    driver.get(f"{server.url}/#/sweeps")
    view_ready(driver, "sweeps")
    assert "No sweeps yet" in text_of(driver, "#main")
    shot("01-sweeps-empty")

    # The form: a spec the API refuses; its error is shown next to the line of the field it names.
    driver.get(f"{server.url}/#/submit")
    view_ready(driver, "submit")
    set_spec(driver, INVALID_SPEC)
    driver.find_element("id", "submit-spec").click()
    note = wait(driver, "return document.querySelector('#spec-notes .field-error[data-field=\"budget\"]');")
    assert note.get_attribute("data-line") == str(BUDGET_LINE)
    assert "greater than or equal to 1" in note.text
    assert "ln err" in driver.execute_script(
        "return document.querySelectorAll('.gutter .ln')[arguments[0] - 1].className;", BUDGET_LINE
    )
    with server.client() as api:
        assert api.get("/sweeps").json()["total"] == 0  # refused: nothing was created
    shot("02-submit-refused")

    # The valid spec: created, and the page moves to the sweep's page.
    set_spec(driver, VALID_SPEC)
    driver.find_element("id", "submit-spec").click()
    wait(driver, "return /^#\\/sweeps\\/\\d+$/.test(location.hash);")
    sweep_id = int(driver.execute_script("return location.hash.split('/')[2];"))
    view_ready(driver, "sweep-overview", 30)
    driver.execute_script("window.__sameDocument = true;")  # gone if the page reloads

    # Progress arrives live (events stream), without a reload: trials finish, then the sweep completes.
    wait(driver, "return Number(document.querySelector('#sweep-header .progress').dataset.done) >= 1;", SWEEP_DONE_S)
    shot("03-sweep-running")
    wait(driver, "return document.getElementById('main').dataset.status === 'completed';", SWEEP_DONE_S)
    assert driver.execute_script("return window.__sameDocument === true;"), "the page reloaded"
    with server.client() as api:
        detail = api.get(f"/sweeps/{sweep_id}").json()
    assert detail["status"] == "completed", server.log()
    assert [c["key"] for c in detail["cells"]] == ["adamw/tiny-130k/0.02", "adamw/tiny-130k/0.05"]
    # The overview draws every cell's best curve, highlighted, once its curve has been fetched.
    wait(driver, "return document.querySelectorAll('#curves g.series.best path').length === 2;", 15)
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#cells-table tbody tr')].map(r => [r.dataset.cell, r.dataset.status]);"
    )
    assert [r[0] for r in rows] == [c["key"] for c in detail["cells"]]
    shot("04-sweep-overview")

    # Open a cell: its best config (with the near-ties) and the coordinate-descent path, as the API says.
    cell = min(detail["cells"], key=lambda c: c["best_loss"])
    driver.find_element("css selector", f'#cells-table tr[data-cell="{cell["key"]}"] a').click()
    view_ready(driver, "cell")
    assert text_of(driver, "#best-loss") == f"{cell['best_loss']:.4f}"
    shown_lr = float(text_of(driver, '#best-config td.best-value[data-hparam="lr"]'))
    assert math.isclose(shown_lr, cell["best_config"]["lr"], rel_tol=1e-3)
    path_rows = driver.execute_script(
        "return [...document.querySelectorAll('#path-table tbody tr')].map(r => r.dataset.round);"
    )
    assert path_rows and path_rows[0] == "1"
    # The best trial's row is marked in the trials table, and its curve is the highlighted one.
    assert driver.execute_script("return document.querySelector('#cell-trials tr.winner').dataset.trial;") == str(
        cell["best_trial_id"]
    )
    assert driver.execute_script("return document.querySelectorAll('#cell-curves g.series.best').length;") == 1
    shot("05-cell")

    # The trial behind the best: its config and curve.
    driver.find_element("css selector", f'a[href="#/trials/{cell["best_trial_id"]}"]').click()
    view_ready(driver, "trial")
    assert "completed" in text_of(driver, "#main h1")
    shot("06-trial")

    # Best per scale: one table for tiny-130k, the lowest loss marked; speedups from the analysis endpoint.
    driver.get(f"{server.url}/#/sweeps/{sweep_id}/best")
    view_ready(driver, "sweep-best")
    winner = driver.execute_script(
        "return [...document.querySelectorAll('.scale-table[data-scale=\"tiny-130k\"] tr.winner td.loss')]"
        ".map(td => td.textContent);"
    )
    # printed with as many decimals as the gaps need (3 at least): equal to the API's to that rounding
    assert any(abs(float(w) - cell["best_loss"]) <= 5e-4 for w in winner), winner
    shot("07-best-per-scale")

    driver.get(f"{server.url}/#/sweeps/{sweep_id}/speedup")
    view_ready(driver, "sweep-speedup")
    # AdamW alone: its speedups are 1 by definition or not available; either way the view says which.
    assert driver.execute_script("return document.querySelector('#speedup section, #speedup .not-available') !== null;")
    shot("08-speedup-sensitivity")

    driver.get(f"{server.url}/#/sweeps/{sweep_id}/trials")
    view_ready(driver, "sweep-trials")
    assert len(driver.find_elements("css selector", "#trials tbody tr")) == detail["trials"]["total"]
    shot("09-trials")

    driver.get(f"{server.url}/#/best")
    view_ready(driver, "best")
    # losses printed with as many decimals as their gaps need (3 at least): the API's to that rounding
    shown = [
        float(x)
        for x in driver.execute_script(
            "return [...document.querySelectorAll('.scale-table tbody td:nth-child(3)')].map(td => td.textContent);"
        )
    ]
    assert any(abs(x - cell["best_loss"]) <= 5e-4 for x in shown), shown
    shot("10-best-overall")

    driver.get(f"{server.url}/#/sweeps")
    view_ready(driver, "sweeps")
    assert (
        driver.execute_script("return document.querySelector('#sweeps-table tr[data-sweep]').dataset.status;")
        == "completed"
    )
    shot("11-sweeps")
    # The one refused request is the invalid spec's POST (422), which the form showed.
    assert (
        severe_console_errors(driver, "/sweeps - Failed to load resource: the server responded with a status of 422")
        == []
    )


def test_auth_on_the_page_asks_for_the_token_then_works(driver: Any, start_server: Any, shot: Any) -> None:
    token = "browser-test-token"
    server = start_server(dispatcher=False, token=token)
    with server.client() as api:
        created = api.post("/sweeps", content=json.dumps(yaml.safe_load(VALID_SPEC)))
        assert created.status_code == 201, created.text
    driver.get(f"{server.url}/")
    driver.execute_script("localStorage.clear();")
    driver.get(f"{server.url}/#/sweeps")  # the page itself needs no token; its data does
    wait(driver, "return !document.getElementById('auth-prompt').hidden;")
    assert "needs an API token" in text_of(driver, "#auth-prompt")
    shot("12-auth-prompt")

    driver.find_element("id", "auth-token").send_keys("wrong-token")
    driver.find_element("id", "auth-submit").click()
    wait(
        driver,
        "return !document.getElementById('auth-prompt').hidden && "
        "document.getElementById('auth-message').textContent.includes('refused');",
    )

    driver.find_element("id", "auth-token").send_keys(token)
    driver.find_element("id", "auth-submit").click()
    view_ready(driver, "sweeps")
    assert driver.execute_script("return document.getElementById('auth-prompt').hidden;")
    assert "browser-e2e" in text_of(driver, "#sweeps-table")
    assert driver.execute_script("return localStorage.getItem('sweep-service.token');") == token

    # Kept across a reload, and used for writes: the form submits with it.
    driver.refresh()
    view_ready(driver, "sweeps")
    driver.get(f"{server.url}/#/submit")
    view_ready(driver, "submit")
    set_spec(driver, VALID_SPEC.replace("browser-e2e", "second"))
    driver.find_element("id", "submit-spec").click()
    view_ready(driver, "sweep-overview")
    assert "second" in text_of(driver, "#sweep-header h1")
    driver.execute_script("localStorage.clear();")
    driver.get("about:blank")  # closes the page's event stream, so the server stops at once


def test_page_loads_nothing_from_elsewhere_and_parses_specs_like_the_cli(driver: Any, start_server: Any) -> None:
    server = start_server(dispatcher=False)
    driver.get_log("browser")
    driver.get(f"{server.url}/#/submit")
    view_ready(driver, "submit")
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert urls and all(u.startswith(server.url) for u in urls), urls
    # The page's YAML reader gives what the CLI's (PyYAML, then the spec's number coercion) gives.
    repo = Path(__file__).resolve().parents[2]
    for name in ("quickstart.yaml", "paper.yaml", "quickstart.json"):
        text = (repo / "examples" / name).read_text()
        parsed = driver.execute_script("return window.SweepYaml.parse(arguments[0]).value;", text)
        assert _normal(parsed) == _normal(yaml.safe_load(text)), name
    # Syntax errors name their line.
    bad = driver.execute_script(
        "try { window.SweepYaml.parse(arguments[0]); return null; } catch (e) { return [e.line, e.message]; }",
        "name: x\nscales: [tiny-130k\nbudget: 3\n",
    )
    assert bad is not None and bad[0] == 2
    assert severe_console_errors(driver) == []


def _normal(value: Any) -> Any:
    """Numbers as floats (JSON from the browser has no int/float split; PyYAML reads 1e-3 as text)."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in _numbers(value).items()}
    if isinstance(value, list):
        return [_normal(v) for v in _numbers(value)]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    return _numbers(value)


def test_speedup_and_sensitivity_views_draw_the_papers_results(driver: Any, start_server: Any, shot: Any) -> None:
    """The paper's released results (`sweep-service import-results paper`): D_eff against D per scale, with
    the other optimizers' points, AdamW's fit, and the speedups in the best-per-scale tables."""
    server = start_server(dispatcher=False)
    env = {**os.environ, "SWEEP_HOME": str(server.home)}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "sweep_service.cli", "import-results", "paper"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    sweep_id = int(done.stdout.strip())
    with server.client() as api:
        speedups = api.get(f"/sweeps/{sweep_id}/speedups?baseline=adamw").json()["rows"]
    expected = {r["scale"] for r in speedups if r["optimizer"] != "adamw" and r["d_eff"] is not None}
    assert expected, "the paper's results give speedups"
    driver.get_log("browser")

    driver.get(f"{server.url}/#/sweeps/{sweep_id}/speedup")
    view_ready(driver, "sweep-speedup", 30)
    drawn = driver.execute_script(
        "return [...document.querySelectorAll('#speedup section.scale-speedup')]"
        ".filter(s => s.querySelectorAll('[id^=deff-] g.series circle').length > 0).map(s => s.dataset.scale);"
    )
    assert set(drawn) == expected
    assert driver.execute_script("return document.querySelectorAll('#speedup g.series.fit path').length;") >= 1
    shot("13-paper-speedup-sensitivity")

    driver.get(f"{server.url}/#/sweeps/{sweep_id}/best")
    view_ready(driver, "sweep-best", 30)
    shown = driver.execute_script(
        "return [...document.querySelectorAll('.scale-table td.speedup')].map(td => td.textContent);"
    )
    assert any(s.endswith("×") or "× [" in s for s in shown), shown
    shot("14-paper-best-per-scale")
    assert severe_console_errors(driver) == []
