"""Tests of sweep_service.speedups: the paper's worked example, fits by hand, bootstrap intervals, ties within
noise, extrapolation and unphysical flags (moved from test_analysis.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sweep_service import ranking as R
from sweep_service import speedups as SP
from sweep_service.paper_results import load_paper_results
from tests.sweep_service.trials_frame import (
    by_key,
    curve,
    frame,
    paper_results_path,
    trial,
)

# ---------------------------------------------------------------------------------------------------------------
# loss vs data, speedup (PAPER.md section 5)
# ---------------------------------------------------------------------------------------------------------------

PAPER_130M_ADAMW = [3.529, 3.409, 3.322, 3.262]  # PAPER.md section 5, at 1/2/4/8x


def test_fit_loss_vs_data_paper_worked_example() -> None:
    fit = SP.fit_loss_vs_data([1, 2, 4, 8], PAPER_130M_ADAMW)
    assert fit.converged and not fit.underdetermined and fit.n_points == 4
    assert (round(fit.alpha, 3), round(fit.B, 3), round(fit.beta, 3)) == (0.417, 0.493, 3.112)
    assert fit.residual_rms < 1e-3
    assert all(math.isfinite(v) and v > 0 for v in (fit.alpha_se, fit.B_se, fit.beta_se))
    assert "underdetermined" not in fit.describe()


def test_fit_loss_vs_data_recovers_exact_curve() -> None:
    d = [1, 2, 4, 8, 16]
    fit = SP.fit_loss_vs_data(d, [curve(x, 0.4, 0.45, 3.1) for x in d])
    assert (fit.alpha, fit.B, fit.beta) == pytest.approx((0.4, 0.45, 3.1), rel=1e-6)


def test_estimate_speedup_by_hand() -> None:
    fit = SP.LossFit(0.5, 0.5, 3.0, 4, False, 0.0, 0.0, 0.0, 0.0, converged=True)
    # (3.25 - 3) / 0.5 = 0.5; 0.5^(-1/0.5) = 4: AdamW needs 4x data to reach 3.25
    assert SP.estimate_speedup(fit, 1.0, 3.25) == pytest.approx(4.0, rel=1e-12)
    assert SP.estimate_speedup(fit, 2.0, 3.25) == pytest.approx(2.0, rel=1e-12)
    # (3.1 - 3) / 0.5 = 0.2; 0.2^-2 = 25
    assert SP.estimate_speedup(fit, 5.0, 3.1) == pytest.approx(5.0, rel=1e-12)
    assert math.isinf(SP.estimate_speedup(fit, 1.0, 2.99))  # below beta: AdamW never gets there
    assert SP.estimate_speedup(fit, 1.0, math.inf) == 0.0  # a diverged run
    failed = SP.fit_loss_vs_data([1, 2], [3.5, 3.4])
    assert math.isnan(SP.estimate_speedup(failed, 1.0, 3.3))


def test_speedup_of_a_point_on_the_paper_fit() -> None:
    fit = SP.fit_loss_vs_data([1, 2, 4, 8], PAPER_130M_ADAMW)
    # by hand on the fitted curve: D_eff = ((L - beta) / alpha)^(-1/B)
    loss = 3.4626  # Muon 130M 1x
    d_eff = ((loss - fit.beta) / fit.alpha) ** (-1 / fit.B)
    assert SP.estimate_speedup(fit, 1.0, loss) == pytest.approx(d_eff, rel=1e-12)
    assert 1.35 < d_eff < 1.5
    # a loss on AdamW's own curve is worth exactly its own data
    assert SP.estimate_speedup(fit, 3.0, fit.loss_at(3.0)) == pytest.approx(1.0, rel=1e-9)


def test_underdetermined_fits_are_flagged() -> None:
    three = SP.fit_loss_vs_data([1, 2, 4], [3.529, 3.409, 3.322])
    assert three.converged and three.underdetermined
    assert math.isnan(three.alpha_se) and "underdetermined" in three.describe()
    two = SP.fit_loss_vs_data([1, 2], [3.529, 3.409])
    assert not two.converged and two.underdetermined and math.isnan(two.alpha)
    # a diverged point does not count
    with_inf = SP.fit_loss_vs_data([1, 2, 4, 8], [3.529, 3.409, math.inf, 3.262])
    assert with_inf.underdetermined and with_inf.n_points == 3 and "left out" in with_inf.note
    # repeated seeds at 3 multiples are still 3 distinct points for 3 parameters
    repeated = SP.fit_loss_vs_data([1, 1, 2, 2, 4, 4], [3.53, 3.52, 3.41, 3.40, 3.32, 3.33])
    assert repeated.underdetermined


def _speedup_frame() -> list[dict[str, Any]]:
    rows = [trial({"lr": 1e-2}, curve(d), chinchilla=d) for d in (1.0, 2.0, 4.0, 8.0)]
    rows += [
        trial({"lr": 2e-2}, curve(2.0), optimizer="muon", chinchilla=1.0),  # worth 2x data
        trial({"lr": 2e-2}, curve(16.0), optimizer="muon", chinchilla=4.0),  # worth 4x data
        trial({"lr": 2e-2}, 2.9, optimizer="muon", chinchilla=8.0),  # below AdamW's asymptote
    ]
    return rows


def test_speedups_hand_built() -> None:
    sp = SP.speedups(frame(_speedup_frame()))
    muon = by_key(sp[sp["optimizer"] == "muon"], "chinchilla")
    assert muon[1.0]["speedup"] == pytest.approx(2.0, rel=1e-5)
    assert muon[4.0]["speedup"] == pytest.approx(4.0, rel=1e-5)
    assert math.isinf(muon[8.0]["speedup"]) and muon[8.0]["beyond_asymptote"]
    assert "asymptote" in muon[8.0]["note"]
    assert not muon[1.0]["beyond_asymptote"]
    adamw = sp[sp["optimizer"] == "adamw"]
    assert np.allclose(adamw["speedup"], 1.0, rtol=1e-5)
    assert sp["fit_alpha"].iloc[0] == pytest.approx(0.5, rel=1e-6)
    assert not sp["fit_underdetermined"].any()
    assert sp["speedup_ci_low"].isna().all()  # one seed everywhere: no interval
    # AdamW measured at 1-8x: D_eff 2 lies inside, D_eff 16 is 2x beyond 8x, an infinite one is beyond too.
    assert (sp["fit_d_min"] == 1.0).all() and (sp["fit_d_max"] == 8.0).all() and not sp["fit_unphysical"].any()
    assert not muon[1.0]["extrapolated"] and muon[1.0]["extrapolation_factor"] == 1.0
    assert muon[4.0]["extrapolated"] and muon[4.0]["extrapolation_factor"] == pytest.approx(2.0, rel=1e-5)
    assert "extrapolated: D_eff 16 is 2x above the largest fitted multiple 8" in muon[4.0]["note"]
    assert muon[8.0]["extrapolated"] and math.isinf(muon[8.0]["extrapolation_factor"])
    assert not adamw["extrapolated"].any()


# The quickstart's tiny-300k AdamW (0.03/0.06/0.12x): three losses that fall faster in log D at the end
# (concave), which no physical L(D) passes through. Unbounded, curve_fit ran off to alpha 1180, B 0.00025,
# beta -1178 and reported Muon at 0.06x as an exact-looking 10x speedup.
QUICKSTART_ADAMW = {0.03: 5.0, 0.06: 4.8, 0.12: 4.599}


def test_unphysical_fit_is_bounded_and_flagged() -> None:
    d, y = list(QUICKSTART_ADAMW), list(QUICKSTART_ADAMW.values())
    fit = SP.fit_loss_vs_data(d, y)
    assert fit.converged and fit.unphysical and fit.underdetermined
    assert fit.alpha > 0 and fit.B > 0 and fit.beta >= 0  # refitted inside the physical region
    assert "unconstrained fit unphysical" in fit.note and "beta -10" in fit.note  # the unbounded numbers kept
    assert "bounded" in fit.describe() and (fit.d_min, fit.d_max) == (0.03, 0.12)
    # a physical fit is the paper's unbounded one, untouched
    paper = SP.fit_loss_vs_data([1, 2, 4, 8], PAPER_130M_ADAMW)
    assert not paper.unphysical and (round(paper.alpha, 3), round(paper.beta, 3)) == (0.417, 3.112)


def test_speedups_flag_extrapolation_and_unphysical_fit() -> None:
    rows = [trial({"lr": 1e-2}, loss, chinchilla=d, scale="tiny-300k") for d, loss in QUICKSTART_ADAMW.items()]
    rows.append(trial({"lr": 2e-2}, 4.5, optimizer="muon", chinchilla=0.06, scale="tiny-300k"))
    sp = SP.speedups(frame(rows), fit_multiples=None, n_boot=0)
    assert sp["fit_unphysical"].all() and (sp["fit_beta"] >= 0).all()
    muon = sp[sp["optimizer"] == "muon"].iloc[0]
    assert muon["extrapolated"] and muon["d_eff"] > 0.12
    assert muon["extrapolation_factor"] == pytest.approx(muon["d_eff"] / 0.12)
    assert math.isfinite(muon["speedup"])  # the number is kept, flagged
    assert "unconstrained fit unphysical" in muon["note"] and "extrapolated" in muon["note"]
    # below the range: a loss worse than AdamW's at its smallest multiple
    rows.append(trial({"lr": 2e-2}, 5.2, optimizer="lion", chinchilla=0.06, scale="tiny-300k"))
    sp = SP.speedups(frame(rows), fit_multiples=None, n_boot=0)
    lion = sp[sp["optimizer"] == "lion"].iloc[0]
    assert lion["extrapolated"] and lion["extrapolation_factor"] == pytest.approx(0.03 / lion["d_eff"])
    assert "below the smallest fitted multiple 0.03" in lion["note"]


def test_speedups_flag_too_few_adamw_points() -> None:
    rows = [trial({"lr": 1e-2}, curve(d), chinchilla=d, scale="s3") for d in (1.0, 2.0, 4.0)]
    rows += [trial({"lr": 1e-2}, curve(d), chinchilla=d, scale="s2") for d in (1.0, 2.0)]
    rows += [trial({"lr": 2e-2}, curve(2.0), optimizer="muon", chinchilla=1.0, scale=s) for s in ("s2", "s3")]
    sp = by_key(SP.speedups(frame(rows)), "scale", "optimizer", "chinchilla")
    three = sp[("s3", "muon", 1.0)]
    assert three["fit_underdetermined"] and "underdetermined" in three["note"]
    assert three["speedup"] == pytest.approx(2.0, rel=1e-5)  # exact curve: 3 points still pin it
    two = sp[("s2", "muon", 1.0)]
    assert two["fit_underdetermined"] and math.isnan(two["speedup"]) and "not fitted" in two["note"]


def test_speedups_bootstrap_over_seeds() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for d in (1.0, 2.0, 4.0, 8.0):
        for seed in range(3):
            rows.append(trial({"lr": 1e-2}, curve(d) + rng.normal(0, 2e-3), chinchilla=d, seed=seed))
    for seed in range(3):
        rows.append(trial({"lr": 2e-2}, curve(2.0) + rng.normal(0, 2e-3), optimizer="muon", seed=seed))
    rows.append(trial({"lr": 2e-2}, curve(8.0), optimizer="muon", chinchilla=4.0))  # one seed
    trials = frame(rows)
    sp = SP.speedups(trials, n_boot=200, seed=1)
    muon = by_key(sp[sp["optimizer"] == "muon"], "chinchilla")
    one = muon[1.0]
    assert one["n_seeds"] == 3
    assert one["speedup_ci_low"] < one["speedup"] < one["speedup_ci_high"]
    assert one["loss_ci_low"] < one["loss"] < one["loss_ci_high"]
    assert 1.5 < one["speedup"] < 2.7
    # one seed of its own, but the baseline curve's uncertainty still gives a speedup interval
    four = muon[4.0]
    assert four["speedup_ci_low"] < four["speedup"] < four["speedup_ci_high"]
    assert math.isnan(four["loss_ci_low"])
    # deterministic given the seed
    again = SP.speedups(trials, n_boot=200, seed=1)
    pd.testing.assert_frame_equal(sp, again)


def test_speedups_say_tied_within_noise_where_intervals_overlap() -> None:
    """Two optimizers at the same cell whose speedup intervals overlap are tied (no winner); one far ahead is
    not. Seeds where the cells have them; the cell's noise estimate where its best ran under one seed."""
    rng = np.random.default_rng(0)
    rows = []
    for d in (1.0, 2.0, 4.0, 8.0):
        for seed in range(4):
            rows.append(trial({"lr": 1e-2}, curve(d) + rng.normal(0, 3e-3), chinchilla=d, seed=seed))
    at = 2.0
    for seed in range(4):  # lion ~ AdamW, noisy: tied with AdamW; muon clearly faster (D_eff ~ 2x)
        rows.append(trial({"lr": 1e-3}, curve(at) - 0.002 + rng.normal(0, 0.02), optimizer="lion", chinchilla=at,
                          seed=seed))  # fmt: skip
        rows.append(trial({"lr": 2e-2}, curve(2 * at) + rng.normal(0, 1e-3), optimizer="muon", chinchilla=at,
                          seed=seed))  # fmt: skip
    sp = SP.speedups(frame(rows), n_boot=300, seed=2)
    cell = by_key(sp[sp["chinchilla"] == at], "optimizer")
    assert cell["lion"]["interval_source"] == "seeds" and cell["muon"]["interval_source"] == "seeds"
    assert cell["lion"]["tied_within_noise"] and "adamw" in cell["lion"]["tied_with"]
    assert "lion" in cell["adamw"]["tied_with"]
    assert not cell["muon"]["tied_within_noise"] and cell["muon"]["speedup_ci_low"] > cell["lion"]["speedup_ci_high"]

    # One seed each, no noise known: no interval from the point itself (only AdamW's refit), never tied by default
    single = [r for r in rows if r["optimizer"] == "adamw" or r["seed"] == 0]
    single = [dict(r, seed=0) for r in single if r["optimizer"] != "adamw" or r["seed"] == 0]
    bare = by_key(SP.speedups(frame(single), n_boot=300, seed=2).query("chinchilla == @at"), "optimizer")
    assert bare["lion"]["interval_source"] == "" and math.isnan(bare["lion"]["speedup_ci_low"])
    assert not bare["lion"]["tied_within_noise"]
    # ... with each cell's measured seed noise (e.g. confirm_seeds), the interval and the tie come back
    noise = {("lion", "130m", at): 0.02, **{("adamw", "130m", d): 3e-3 for d in (1.0, 2.0, 4.0, 8.0)}}
    noisy = by_key(SP.speedups(frame(single), n_boot=300, seed=2, noise=noise).query("chinchilla == @at"), "optimizer")
    assert noisy["lion"]["interval_source"] == noisy["adamw"]["interval_source"] == "noise_estimate"
    assert noisy["lion"]["speedup_ci_low"] < noisy["lion"]["speedup"] < noisy["lion"]["speedup_ci_high"]
    assert noisy["lion"]["tied_within_noise"] and noisy["muon"]["interval_source"] == "baseline_fit"


# ---------------------------------------------------------------------------------------------------------------
# the paper's released results
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper() -> pd.DataFrame:
    path = paper_results_path()
    if path is None:
        pytest.skip("paper_results.json not found (package data or ../shared/data)")
    return load_paper_results(path)


def test_paper_adamw_130m_fit(paper: pd.DataFrame) -> None:
    adamw = R.best_per_cell(paper[(paper["optimizer"] == "adamw") & (paper["scale"] == "130m")], n_boot=0)
    adamw = adamw[adamw["chinchilla"].isin([1, 2, 4, 8])]
    fit = SP.fit_loss_vs_data(adamw["chinchilla"].tolist(), adamw["best_loss"].tolist())
    # PAPER.md section 5: alpha ~ 0.417, B ~ 0.493, beta ~ 3.112 (to 2 decimals)
    assert fit.alpha == pytest.approx(0.417, abs=5e-3)
    assert math.isclose(fit.B, 0.493, abs_tol=5e-3)
    assert fit.beta == pytest.approx(3.112, abs=5e-3)


def test_paper_speedups_muon_soap(paper: pd.DataFrame) -> None:
    sp = SP.speedups(paper)
    main = sp[sp["chinchilla"].isin([1, 2, 4, 8])]
    mean = main.groupby(["scale", "optimizer"])["speedup"].mean()
    for optimizer in ("muon", "soap"):
        # section 1 claims ~1.4x at 0.1B; this data gives 1.28-1.43 per point at 130m
        assert 1.25 < mean[("130m", optimizer)] < 1.45
        points = main[(main["scale"] == "130m") & (main["optimizer"] == optimizer)]["speedup"]
        assert points.between(1.2, 1.5).all()
        # and the speedup shrinks with scale
        assert mean[("520m", optimizer)] < mean[("130m", optimizer)] - 0.05
    assert not sp["beyond_asymptote"].any() and not sp["fit_unphysical"].any()
    # AdamW's curve is fitted on every multiple it ran (1-16x at 130m and 300m): a fast optimizer's 16x D_eff
    # lies beyond 16x, an extrapolation, and says by how much
    sixteen = sp[(sp["chinchilla"] == 16) & (sp["optimizer"] == "muon")]
    assert sixteen["extrapolated"].all() and (sixteen["fit_d_max"] == 16).all()
    assert not sp[sp["optimizer"] == "adamw"]["extrapolated"].any()
    assert sp["speedup_ci_low"].isna().all()  # one seed per cell in the release


def test_paper_adamw_is_its_own_speedup_up_to_the_fit_residual(paper: pd.DataFrame) -> None:
    """AdamW against its own curve, fitted on every multiple as the authors' script does (PAPER.md section 5).

    Issue 12 asks for 1x within 3% at every multiple; the authors' fit does not allow it. The 3-parameter
    L(D) through 5 points (4 at 520m) leaves residuals: at 130m 8x AdamW's loss lies 3.4e-3 above the curve
    (just over the near-tie tolerance 3e-3), where the curve falls by alpha x B x 8^-B ~ 0.080 per e-fold of
    D, so D_eff is 4.2% short: speedup 0.958; at 130m 16x the residual is -2.0e-3: 1.034. Every other
    AdamW cell is within 3% (0.977-1.023). So: within 5% everywhere, within 3% at all but those two, the
    mean over the 14 cells within 1%, and every deviation is what the fit residual predicts
    (speedup - 1 ~ -residual / (alpha x B x D^-B)) -- which fails if the fit or the D_eff formula is wrong.
    (The old 1-8x fit said 1.22x at 130m 16x.)"""
    sp = SP.speedups(paper, n_boot=0)
    adamw = sp[sp["optimizer"] == "adamw"]
    assert len(adamw) == 14 and (adamw["fit_n_points"] == adamw["scale"].map({"130m": 5, "300m": 5, "520m": 4})).all()
    off = (adamw["speedup"] - 1).abs()
    assert (off < 0.05).all() and off.mean() < 0.02 and abs(adamw["speedup"].mean() - 1) < 0.01
    assert sorted(adamw[off > 0.03][["scale", "chinchilla"]].itertuples(index=False, name=None)) == [
        ("130m", 8.0),
        ("130m", 16.0),
    ]
    for r in adamw.itertuples():
        d = float(r.chinchilla)
        residual = float(r.loss) - (r.fit_alpha * d**-r.fit_B + r.fit_beta)
        slope = r.fit_alpha * r.fit_B * d**-r.fit_B  # -dL/dlnD on the curve
        assert math.log(r.speedup) == pytest.approx(-residual / slope, rel=0.05, abs=1e-4), (r.scale, d)


def test_intervals_overlap_is_the_one_tie_rule() -> None:
    assert SP.intervals_overlap(1.0, 1.2, 1.2, 1.4)  # inclusive: touching intervals are tied
    assert not SP.intervals_overlap(1.0, 1.2, 1.21, 1.4)
    assert not SP.intervals_overlap(math.nan, 1.2, 1.0, 1.4)  # no interval: never tied
