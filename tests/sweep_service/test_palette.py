"""The shared palette (sweep_service/palette.py), the precision rule (sweep_service/numfmt.py) and what the
report takes from them: one colour per optimizer, numbers printed to the precision their gaps need, integer
counts in the CSV, a viewport tag and a dark scheme."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from db.migrate import upgrade
from db.session import Database
from sweep_service import palette
from sweep_service.importer import PAPER_RESULTS, import_results
from sweep_service.numfmt import decimals_for, fixed
from sweep_service.report import write_report


def _luminance(hex_colour: str) -> float:
    """WCAG relative luminance."""
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_every_registered_optimizer_has_its_own_colour() -> None:
    from workers.optimizers import REGISTRY

    colours = [palette.color_of(name) for name in REGISTRY]
    assert len(set(colours)) == len(colours)
    assert all(c in palette.OKABE_ITO + palette.TOL_MUTED for c in colours)
    # a name outside the table: a stable colour from the fallback list
    assert palette.color_of("my-optimizer") == palette.color_of("my-optimizer") in palette.FALLBACK


def test_the_baseline_is_visible_on_a_dark_background() -> None:
    dark_bg = _luminance("#15171a")
    for name in palette.OPTIMIZER_COLORS:
        fg = _luminance(palette.color_of(name, dark=True))
        assert (fg + 0.05) / (dark_bg + 0.05) >= 2.0, name  # WCAG's minimum for graphics is 3; lines are thick


def test_palette_js_carries_the_same_table() -> None:
    js = palette.javascript()
    for name, colour in palette.OPTIMIZER_COLORS.items():
        assert f'"{name}": "{colour}"' in js


@pytest.mark.parametrize(
    ("values", "decimals"),
    [([2.9, 2.899, 3.1], 3), ([2.9001, 2.9002], 4), ([], 3), ([3.0, 3.0], 3), ([1.0, 1.0 + 1e-9], 6)],
)
def test_decimals_tell_neighbours_apart(values: list[float], decimals: int) -> None:
    assert decimals_for(values) == decimals


def test_fixed() -> None:
    assert fixed(2.9, 3) == "2.900"
    assert fixed(float("nan"), 3) == "–" and fixed(None, 3) == "–"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'report.db'}"
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


def test_report_precision_counts_viewport_and_dark_mode(db: Database, tmp_path: Path) -> None:
    sweep_id = import_results(db, PAPER_RESULTS)
    page = write_report(db, sweep_id, tmp_path / "out", n_boot=20).read_text()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "prefers-color-scheme: dark" in page
    # One precision per table: every loss in the 130m best table has the same number of decimals.
    table = page.split("<h3>130m")[1].split("</table>")[0]
    losses = re.findall(r'<td class="n">(\d\.\d+)</td>', table)
    assert losses and len({len(v.split(".")[1]) for v in losses}) == 1
    best = pd.read_csv(tmp_path / "out" / "best_configs.csv", dtype=str)
    assert best["n_trials"].str.fullmatch(r"\d+").all() and best["n_near_ties"].str.fullmatch(r"\d+").all()
