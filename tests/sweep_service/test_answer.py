"""The printed answer (sweep_service/answer.py): speedups with intervals over seeds, and "tied within noise"."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

from sweep_service import answer

OFFSETS = (-0.01, 0.0, 0.01)  # three seeds: std 0.01


def curve(d: float) -> float:
    return 0.4 * d**-0.5 + 2.0  # AdamW's L(D), PAPER.md section 5's form


def trials(extra: list[tuple[str, float, float]]) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    points = [("adamw", d, curve(d)) for d in (0.05, 0.1, 0.2, 0.4)] + extra
    for optimizer, d, loss in points:
        for seed, off in enumerate(OFFSETS):
            rows.append(
                {
                    "optimizer": optimizer,
                    "scale": "tiny-130k",
                    "chinchilla": d,
                    "config": {"lr": 1e-2},
                    "loss": loss + off,
                    "status": "completed",
                    "seed": seed,
                    "non_embedding_params": 131072,
                }
            )
    return pd.DataFrame(rows)


def by_optimizer(rows: list[answer.Row], d: float) -> dict[str, answer.Row]:
    return {r.optimizer: r for r in rows if r.multiple == d}


def test_a_clear_winner_and_a_tie() -> None:
    # muon at 0.1x matches AdamW at 0.2x (2x); lion at 0.1x matches AdamW at 0.1x (1x, tied with AdamW).
    table = answer.answer_rows(trials([("muon", 0.1, curve(0.2)), ("lion", 0.1, curve(0.1) + 0.002)]), n_boot=300)
    rows = by_optimizer(table["tiny-130k"], 0.1)
    assert rows["muon"].speedup == pytest.approx(2.0, rel=0.05)
    assert rows["muon"].ci_low < 2.0 < rows["muon"].ci_high
    assert rows["muon"].verdict == "fastest"
    assert rows["adamw"].speedup == pytest.approx(1.0, rel=0.05)
    assert rows["lion"].verdict.startswith(answer.TIED) and "adamw" in rows["lion"].verdict
    assert rows["muon"].loss_std == pytest.approx(0.01) and rows["muon"].n_seeds == 3


def test_overlapping_intervals_are_never_a_winner() -> None:
    table = answer.answer_rows(trials([("muon", 0.1, curve(0.1) - 0.003)]), n_boot=300)
    rows = by_optimizer(table["tiny-130k"], 0.1)
    assert rows["muon"].verdict == f"{answer.TIED} (with adamw)"
    assert rows["adamw"].verdict == f"{answer.TIED} (with muon)"


def test_render_pairs_our_scale_with_the_papers() -> None:
    ours = answer.answer_rows(trials([("muon", 0.1, curve(0.2))]), n_boot=100)
    paper_rows = [
        answer.Row("adamw", 1.0, 3.529, math.nan, 1, 1.0, math.nan, math.nan, False, ""),
        answer.Row("muon", 1.0, 3.463, math.nan, 1, 1.4, math.nan, math.nan, False, ""),
    ]
    lines = answer.render(ours, {"130m": paper_rows, "300m": paper_rows})
    text = "\n".join(lines)
    assert "tiny-130k (this sweep)" in lines[0] and "130m (paper" in lines[0]
    muon = next(line for line in lines if line.startswith("muon"))
    assert "fastest" in muon and "1.40x" in muon.split("|")[1]
    assert "300m (paper, released results)" in text


def test_print_answer_reads_a_sweep_and_the_papers_file(tmp_path: Any) -> None:
    import io

    from db.migrate import upgrade
    from db.session import Database
    from sweep_service.engine import SweepDriver
    from tests.sweep_service.fake_sweep import drive, new_sweep, spec

    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(url)
    db = Database(url)
    sweep_id = new_sweep(db, spec(confirm_seeds=1))
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    drive(driver)
    out = io.StringIO()
    answer.print_answer(db, sweep_id, out, n_boot=0)
    text = out.getvalue()
    assert "tiny-130k (this sweep)" in text and "| 130m (paper, released results)" in text
    assert "520m (paper, released results)" in text
    assert "3.0000 ± 0.0000 (2)" in text  # the fake's loss does not depend on the seed
    with db.session() as s:
        from db import repository as repo

        assert len(repo.list_sweeps(s)) == 1  # the paper's results are read, not imported
    db.dispose()


def test_a_cell_without_a_result_prints_dashes() -> None:
    row = answer.Row("adamw", 1.0, math.nan, math.nan, 0, math.nan, math.nan, math.nan, False, "")
    assert answer._cells(row)[2:4] == ["- (0)", "-"]


def test_the_analysis_ties_are_used_where_it_gives_them() -> None:
    a = answer.Row("adamw", 0.1, 2.8, 0.01, 3, 1.0, 0.9, 1.1, False, "", tied_with=("muon",))
    b = answer.Row("muon", 0.1, 2.2, 0.01, 3, 5.0, 4.0, 6.0, False, "", tied_with=("adamw",))
    assert answer.tied_within_noise([a, b]) == {0: f"{answer.TIED} (with muon)", 1: f"{answer.TIED} (with adamw)"}
    clear = [answer.Row(**{**r.__dict__, "tied_with": ()}) for r in (a, b)]
    assert answer.tied_within_noise(clear) == {1: "fastest"}
