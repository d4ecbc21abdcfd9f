"""The HTML report (sweep_service.report) on the paper's imported results and on a small engine-driven sweep
with curves (SweepDriver with a synthetic objective, as tests/sweep_service/fake_sweep.py: no Ray, no torch
training), and its command."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from db.migrate import upgrade
from db.session import Database
from sweep_service.cli import main
from sweep_service.engine import SweepDriver
from sweep_service.importer import PAPER_RESULTS, import_results
from sweep_service.report import SweepNotFound, write_report
from sweep_service.settings import get_settings
from tests.sweep_service.fake_sweep import LR, WD, drive, new_sweep
from tests.sweep_service.fake_sweep import objective as adamw_penalty

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'report.db'}"
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


def _png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


def test_report_on_the_paper_import_draws_the_speedup_plot(db: Database, tmp_path: Path) -> None:
    sweep_id = import_results(db, PAPER_RESULTS)
    index = write_report(db, sweep_id, tmp_path / "out")
    assert index == tmp_path / "out" / "index.html"
    page = index.read_text()
    assert _png(tmp_path / "out" / "speedup-d-eff.png") and 'src="speedup-d-eff.png"' in page
    assert _png(tmp_path / "out" / "loss-vs-data.png") and 'src="loss-vs-data.png"' in page
    assert "No curves: this sweep was imported" in page and "curves-" not in page
    assert "No one-at-a-time changes" in page
    best = pd.read_csv(tmp_path / "out" / "best_configs.csv")
    speedups = pd.read_csv(tmp_path / "out" / "speedups.csv")
    sensitivity = pd.read_csv(tmp_path / "out" / "sensitivity.csv")
    assert len(best) == 134 and len(speedups) == 134 and sensitivity.empty
    assert {"optimizer", "scale", "chinchilla", "best_loss", "best_config", "config.lr"} <= set(best.columns)
    row = best[(best["optimizer"] == "adamw") & (best["scale"] == "130m") & (best["chinchilla"] == 1)].iloc[0]
    assert row["best_loss"] == pytest.approx(3.529, abs=5e-4) and row["config.lr"] == 8e-3  # PAPER.md section 6
    # The authors' fit at 130m over 1-16x (PAPER.md section 5) and Muon's speedup there (~1.3-1.4x, section 1).
    at_130m = speedups[speedups["scale"] == "130m"]
    assert at_130m["fit_alpha"].iloc[0] == pytest.approx(0.455, abs=5e-3)
    assert at_130m["fit_beta"].iloc[0] == pytest.approx(3.073, abs=5e-3)
    muon = at_130m[(at_130m["optimizer"] == "muon") & at_130m["chinchilla"].isin([1, 2, 4, 8])]["speedup"]
    assert 1.25 < muon.mean() < 1.45
    assert "0.4554" in page and "Speedup over adamw" in page
    assert "No ranking flips to show" in page and pd.read_csv(tmp_path / "out" / "ranking_flips.csv").empty


def _l(d: float) -> float:
    """A known AdamW loss curve: L(D) = 0.5 x D^-0.5 + 2.5."""
    return 0.5 * d**-0.5 + 2.5


LION_SPEEDUP = 1.5


def _loss(run: dict[str, Any]) -> float:
    """AdamW's best reaches L(D); Lion's best reaches L(1.5 D): a 1.5x speedup by construction."""
    c, h = float(run["chinchilla"]), run["hparams"]
    if run["optimizer"] == "adamw":
        return adamw_penalty(h) - 3.0 + _l(c)  # +inf where fake_sweep's objective diverges (lr 2.4e-2)
    return _l(LION_SPEEDUP * c) + math.log2(h["lr"] / 2e-3) ** 2 * 0.05


def _small_sweep(db: Database, loss_of: Callable[[dict[str, Any]], float] = _loss) -> int:
    doc = {
        "name": "small",
        "optimizers": ["adamw", "lion"],
        "scales": ["tiny-130k"],
        "chinchilla": [0.1, 0.2, 0.4],
        "search": {
            # fake_sweep's grids, trimmed to keep the test short: 6 trials per AdamW cell.
            "adamw": {"tune": ["lr", "wd"], "grid": {"lr": LR[1:], "wd": WD[:2]}, "baseline": {"lr": LR[1], "wd": 0.0},
                      "fixed": {"warmup": 8}},
            "lion": {"tune": ["lr"], "grid": {"lr": [2e-3, 4e-3]}, "baseline": {"lr": 2e-3},
                     "fixed": {"warmup": 8}},
        },
        "max_concurrent": 3,
    }  # fmt: skip
    sweep_id = new_sweep(db, doc)
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    drive(driver, loss_of=loss_of, curve=(0, 10, 20, 30, 40))
    return sweep_id


def test_report_on_a_sweep_with_curves(db: Database, tmp_path: Path) -> None:
    sweep_id = _small_sweep(db)
    out = tmp_path / "report"
    page = write_report(db, sweep_id, out).read_text()
    curves = sorted(out.glob("curves-*.png"))
    assert len(curves) == 6 and all(_png(p) for p in curves)  # one per cell: 2 optimizers x 3 multiples
    assert all(f'src="{p.name}"' in page for p in curves) and "adamw/tiny-130k/0.1" in page
    sens_images = sorted(out.glob("sensitivity-*.png"))
    assert len(sens_images) == 2 and all(_png(p) for p in sens_images)  # lr and wd
    assert _png(out / "speedup-d-eff.png")

    best = pd.read_csv(out / "best_configs.csv")
    assert len(best) == 6
    adamw = best[best["optimizer"] == "adamw"]
    assert set(adamw["config.lr"]) == {1.2e-2} and set(adamw["config.wd"]) == {0.1}
    assert adamw["best_loss"].tolist() == pytest.approx([_l(c) for c in (0.1, 0.2, 0.4)])
    # Three AdamW multiples pin L(D) (PAPER.md section 5; exactly, so flagged underdetermined): Lion's speedup
    # is 1.5 at every multiple.
    speedups = pd.read_csv(out / "speedups.csv")
    lion = speedups[speedups["optimizer"] == "lion"]
    assert lion["speedup"].tolist() == pytest.approx([LION_SPEEDUP] * 3, rel=1e-3)
    assert speedups["fit_B"].iloc[0] == pytest.approx(0.5, rel=1e-3) and speedups["fit_underdetermined"].all()
    assert lion["loss_vs_baseline"].lt(0).all()
    # AdamW was measured at 0.1-0.4x: Lion's D_eff at 0.4x (0.6) is an extrapolation by 1.5, flagged in the CSV
    # and in the page; D_eff 0.15 and 0.3 are inside the range.
    assert lion["extrapolated"].tolist() == [False, False, True] and not speedups["fit_unphysical"].any()
    assert lion["extrapolation_factor"].iloc[2] == pytest.approx(LION_SPEEDUP, rel=1e-3)
    assert not speedups[speedups["optimizer"] == "adamw"]["extrapolated"].any()
    assert "1.5 (extrapolated 1.5x beyond adamw&#x27;s measured D)" in page and "1 of 6 speedups" in page
    sensitivity = pd.read_csv(out / "sensitivity.csv")
    lr = sensitivity[(sensitivity["hparam"] == "lr") & (sensitivity["optimizer"] == "adamw")]
    assert lr["diverged"].any() and set(sensitivity["hparam"]) == {"lr", "wd"}
    wd = sensitivity[(sensitivity["hparam"] == "wd") & (sensitivity["chinchilla"] == 0.1)].set_index("value")
    assert wd.loc[0.0, "delta"] == pytest.approx(0.03)  # fake_sweep: |wd - 0.1| x 0.3
    # Ranking flips: one pair (adamw, lion) per multiple, from their best trials' curves, drawn and tabled
    flips = pd.read_csv(out / "ranking_flips.csv")
    assert len(flips) == 3 and set(flips["optimizer_a"] + "/" + flips["optimizer_b"]) == {"adamw/lion"}
    assert flips["settled_at"].between(0, 1).all() and _png(out / "ranking-flips.png")
    assert "Ranking flips" in page and 'src="ranking-flips.png"' in page

    # Regenerated from the database alone: the same tables again, and no stale image left behind.
    (out / "curves-999.png").write_bytes(PNG)
    write_report(db, sweep_id, out)
    assert not (out / "curves-999.png").exists()
    assert pd.read_csv(out / "best_configs.csv").equals(best)


# AdamW's three best losses bend the wrong way (concave in log D): no physical L(D) passes through them.
CONCAVE_ADAMW = {0.1: 5.0, 0.2: 4.8, 0.4: 4.599}


def _concave_loss(run: dict[str, Any]) -> float:
    c, h = float(run["chinchilla"]), run["hparams"]
    if run["optimizer"] == "adamw":
        return adamw_penalty(h) - 3.0 + CONCAVE_ADAMW[c]
    return 4.5 + math.log2(h["lr"] / 2e-3) ** 2 * 0.05  # below every AdamW loss


def test_report_says_a_speedup_from_an_unphysical_fit_is_unreliable(db: Database, tmp_path: Path) -> None:
    sweep_id = _small_sweep(db, loss_of=_concave_loss)
    out = tmp_path / "report"
    page = write_report(db, sweep_id, out, n_boot=0).read_text()
    speedups = pd.read_csv(out / "speedups.csv")
    assert speedups["fit_unphysical"].all() and (speedups["fit_beta"] >= 0).all()
    lion = speedups[speedups["optimizer"] == "lion"]
    assert lion["extrapolated"].all() and lion["speedup"].notna().all()  # every D_eff beyond 0.4x; kept
    assert "UNRELIABLE: the unconstrained fit was unphysical" in page
    assert page.count("unreliable: adamw&#x27;s fit unphysical") == len(speedups)
    assert page.count("extrapolated ") >= len(lion) and "6 of 6 speedups are not measurements" in page


def test_unknown_sweep(db: Database, tmp_path: Path) -> None:
    for sweep_id in (99, 0, 2**40):
        with pytest.raises(SweepNotFound, match=f"no sweep {sweep_id}"):
            write_report(db, sweep_id, tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_report_command(cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import-results", "paper"]) == 0
    sweep_id = int(capsys.readouterr().out.strip())
    assert main(["report", str(sweep_id), "--out", str(tmp_path / "r")]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == tmp_path / "r" / "index.html" and 'src="speedup-d-eff.png"' in printed.read_text()

    assert main(["report", "12345", "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert err == "sweep-service: error: no sweep 12345\n"
    (tmp_path / "file").write_text("x")
    assert main(["report", str(sweep_id), "--out", str(tmp_path / "file")]) == 2
    assert "is not a directory" in capsys.readouterr().err
