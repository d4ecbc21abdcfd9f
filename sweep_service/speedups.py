"""Loss vs data and speedup over AdamW (PAPER.md section 5): fit L(D) = alpha x D^(-B) + beta to the baseline's
best losses, read each cell's D_eff off it, and say how far to trust the speedup D_eff / D: bootstrap intervals
over seeds (or a measured seed noise), ties within noise, extrapolation and unphysical fits.

Pure functions on the trials frame (sweep_service.analysis documents it) and on arrays; no database, no torch.
Uncertainty: where a config has repeated seeds, intervals are percentile bootstraps over its seeds (the choice of
the best config is taken as given, not re-made inside the bootstrap). A fit with as few points as parameters is
flagged `underdetermined` and reports no error estimate; with fewer it is not fitted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from sweep_service.bootstrap import CI_LEVEL, N_BOOT, percentile_interval, resample_means
from sweep_service.fitting import quiet_curve_fit
from sweep_service.ranking import Cell, CellSummary, summarize

__all__ = [
    "EXTRAPOLATION_SLACK",
    "LOSS_FIT_PARAMS",
    "LossFit",
    "estimate_speedup",
    "fit_loss_vs_data",
    "intervals_overlap",
    "speedups",
]

LOSS_FIT_PARAMS = 3  # alpha, B, beta (PAPER.md section 5)
# The physical region of L(D) = alpha x D^-B + beta (PAPER.md section 5): a loss that falls with data (alpha > 0,
# B > 0) towards an irreducible loss beta >= 0 (a cross-entropy is never negative). Lower bounds for the refit.
LOSS_FIT_LOWER: tuple[float, float, float] = (0.0, 0.0, 0.0)
# A D_eff within 5% of the baseline's fitted range is not flagged as extrapolated: the baseline's own points
# move by about that much with the fit's residuals (at 130m the paper's fit leaves ~1e-3 in loss, which is
# ~1.5% of D at 8x, where dL/dD = alpha x B x D^(-B-1) ~ 0.009; 5% is ~3 such residuals).
EXTRAPOLATION_SLACK = 0.05


def _loss_curve(d: npt.ArrayLike, alpha: float, b: float, beta: float) -> np.ndarray:
    """L(D) = alpha x D^(-B) + beta (PAPER.md section 5)."""
    return np.asarray(alpha * np.power(np.asarray(d, np.float64), -b) + beta)


def _effective_data(alpha: npt.ArrayLike, b: npt.ArrayLike, beta: npt.ArrayLike, loss: npt.ArrayLike) -> np.ndarray:
    """D_eff = ((L - beta) / alpha)^(-1/B), elementwise over broadcast arrays.

    +inf where L <= beta (no amount of AdamW data reaches it), 0 where L = +inf, NaN where a parameter or L
    is NaN or the curve is not decreasing (alpha <= 0 or B <= 0).
    """
    alpha, b, beta, loss = np.broadcast_arrays(
        np.asarray(alpha, np.float64), np.asarray(b, np.float64), np.asarray(beta, np.float64),
        np.asarray(loss, np.float64),
    )  # fmt: skip
    out = np.full(loss.shape, np.nan)
    valid = np.isfinite(alpha) & np.isfinite(b) & np.isfinite(beta) & (alpha > 0) & (b > 0) & ~np.isnan(loss)
    below = valid & (loss <= beta)
    above = valid & (loss > beta)
    out[below] = np.inf
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        out[above] = np.power((loss[above] - beta[above]) / alpha[above], -1.0 / b[above])
    return out


@dataclass(frozen=True)
class LossFit:
    """A fit of L(D) = alpha x D^(-B) + beta to best losses at data multiples D.

    `underdetermined` is True when there are no more distinct multiples than the 3 parameters: the curve
    then passes through the points and there is no error estimate (`*_se` are NaN). With fewer than 3 the
    fit is not attempted (`converged` False, parameters NaN).

    `unphysical` is True when the paper's unconstrained fit left the physical region (alpha <= 0, B <= 0 or a
    negative asymptote beta): the parameters are then those of the fit bounded to alpha, B, beta >= 0 (NaN if
    that failed too) and `note` gives the unconstrained ones. `d_min` and `d_max` are the smallest and largest
    multiple fitted: a D_eff outside them is read off the curve beyond the data (`extrapolation_factor`).
    """

    alpha: float
    B: float
    beta: float
    n_points: int
    underdetermined: bool
    residual_rms: float
    alpha_se: float
    B_se: float
    beta_se: float
    converged: bool
    note: str = ""
    unphysical: bool = False
    d_min: float = math.nan
    d_max: float = math.nan

    def loss_at(self, multiple: float) -> float:
        return float(_loss_curve(np.float64(multiple), self.alpha, self.B, self.beta))

    def effective_data(self, loss: float) -> float:
        """The AdamW data multiple that reaches `loss` on this curve (+inf below beta)."""
        if not self.converged:
            return math.nan
        return float(_effective_data(np.float64(self.alpha), np.float64(self.B), np.float64(self.beta), loss))

    def extrapolation_factor(self, d_eff: float) -> float:
        """How far `d_eff` lies outside the fitted multiples [d_min, d_max], as a ratio: d_eff / d_max above,
        d_min / d_eff below, 1.0 inside; +inf for an infinite D_eff; NaN when D_eff is unknown or 0 (a
        diverged cell) or nothing was fitted."""
        if not (self.converged and math.isfinite(self.d_min) and math.isfinite(self.d_max)):
            return math.nan
        if math.isnan(d_eff) or d_eff <= 0:
            return math.nan
        return max(d_eff / self.d_max, self.d_min / d_eff, 1.0)

    def describe(self) -> str:
        """One line; no error bars when they would be false precision."""
        if not self.converged:
            return f"no fit ({self.note})"
        text = f"L(D) = {self.alpha:.4g} x D^-{self.B:.4g} + {self.beta:.4g} from {self.n_points} points"
        if self.unphysical:
            text += " (bounded to alpha, B, beta >= 0: the unconstrained fit was unphysical)"
        if self.underdetermined:
            return text + " (underdetermined: as few points as parameters, no error estimate)"
        return text + (
            f" (se alpha {self.alpha_se:.2g}, B {self.B_se:.2g}, beta {self.beta_se:.2g}; "
            f"rms residual {self.residual_rms:.2g})"
        )


def _nan_loss_fit(n_points: int, note: str, unphysical: bool = False) -> LossFit:
    nan = math.nan
    return LossFit(nan, nan, nan, n_points, True, nan, nan, nan, nan, converged=False, note=note, unphysical=unphysical)


def _fit_once(d: np.ndarray, y: np.ndarray, p0: Sequence[float], bounds: Any) -> np.ndarray | None:
    """(alpha, B, beta, and their standard errors) of one curve_fit of L(D), or None when it failed."""
    fitted = quiet_curve_fit(_loss_curve, d, y, p0, maxfev=10000, bounds=bounds)
    return None if fitted is None else np.concatenate(fitted)


def _physical(alpha: float, b: float, beta: float) -> bool:
    """Inside L(D)'s physical region: falling with data towards a non-negative loss (LOSS_FIT_LOWER)."""
    return alpha > 0 and b > 0 and beta >= 0


def _fit_loss_curve(d: np.ndarray, y: np.ndarray, p0: Sequence[float]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """L(D)'s (alpha, B, beta, and their standard errors), or None; and the unconstrained (alpha, B, beta) when
    they were unphysical (else None).

    First the paper's unbounded curve_fit (PAPER.md section 5), so a physical fit is exactly the paper's. Three
    points that bend the wrong way (concave in log D) have no physical exact fit, and the unbounded one runs
    off to B ~ 0, alpha ~ 1e3 and beta ~ -1e3: a negative irreducible loss, whose D_eff is meaningless. Then
    the fit is redone bounded to alpha, B, beta >= 0: PAPER.md's form is a falling power law towards an
    asymptote, and a cross-entropy's asymptote cannot be negative, so the bounds only exclude what the form
    cannot mean.
    """
    result = _fit_once(d, y, p0, (-math.inf, math.inf))
    if result is not None and _physical(*(float(v) for v in result[:3])):
        return result, None
    # Unphysical, or the unbounded fit did not converge at all (then there are no unconstrained values to report):
    # the bounded fit, which may still converge.
    start = [max(float(v), low) for v, low in zip(p0, LOSS_FIT_LOWER, strict=True)]  # trf starts inside its bounds
    bounded = _fit_once(d, y, start, (list(LOSS_FIT_LOWER), [math.inf] * len(LOSS_FIT_LOWER)))
    return bounded, (result[:3] if result is not None else None)


def fit_loss_vs_data(multiples: Sequence[float], losses: Sequence[float], p0: Sequence[float] | None = None) -> LossFit:
    """Fit L(D) = alpha x D^(-B) + beta (PAPER.md section 5) with scipy's curve_fit.

    `p0` defaults to the paper's [L(D_min) - L(D_max), 0.5, L(D_max)]. Non-finite losses (diverged) and
    non-positive multiples are left out and said so in `note`. Repeated multiples (several seeds) are
    fitted as separate points; `n_points` counts them, underdetermination counts distinct multiples. An
    unconstrained fit outside alpha, B > 0, beta >= 0 is redone bounded to them and flagged `unphysical`
    (`_fit_loss_curve` says why).
    """
    d = np.asarray(multiples, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if d.shape != y.shape or d.ndim != 1:
        raise ValueError(f"multiples and losses must be 1-D and of one length, got {d.shape} and {y.shape}")
    keep = np.isfinite(d) & (d > 0) & np.isfinite(y)
    notes = [f"{int((~keep).sum())} non-finite or non-positive point(s) left out"] if not keep.all() else []
    d, y = d[keep], y[keep]
    order = np.argsort(d, kind="stable")
    d, y = d[order], y[order]
    n_distinct = len(np.unique(d))
    if n_distinct < LOSS_FIT_PARAMS:
        notes.append(f"{n_distinct} distinct multiple(s) for {LOSS_FIT_PARAMS} parameters: not fitted")
        return _nan_loss_fit(len(d), "; ".join(notes))
    underdetermined = n_distinct <= LOSS_FIT_PARAMS
    if p0 is None:
        first, last = float(y[d == d[0]].mean()), float(y[d == d[-1]].mean())
        p0 = [first - last, 0.5, last]
    result, unconstrained = _fit_loss_curve(d, y, p0)
    unphysical = unconstrained is not None
    if unphysical:
        assert unconstrained is not None  # for mypy
        a0, b0, beta0 = (float(v) for v in unconstrained)
        notes.append(
            f"unconstrained fit unphysical (alpha {a0:.4g}, B {b0:.4g}, beta {beta0:.4g}): "
            + ("refitted with alpha, B, beta >= 0" if result is not None else "the fit bounded to >= 0 failed too")
        )
    if result is None:
        if not unphysical:
            notes.append("curve_fit did not converge (unbounded, nor bounded to alpha, B, beta >= 0)")
        return _nan_loss_fit(len(d), "; ".join(notes), unphysical=unphysical)
    alpha, b, beta = (float(v) for v in result[:3])
    residuals = y - _loss_curve(d, alpha, b, beta)
    se = [math.nan] * 3 if underdetermined else [float(v) for v in result[3:]]
    if underdetermined:
        notes.append(f"underdetermined: {n_distinct} distinct multiples for {LOSS_FIT_PARAMS} parameters")
    return LossFit(
        alpha=alpha,
        B=b,
        beta=beta,
        n_points=len(d),
        underdetermined=underdetermined,
        residual_rms=float(np.sqrt(np.mean(residuals**2))),
        alpha_se=se[0],
        B_se=se[1],
        beta_se=se[2],
        converged=True,
        note="; ".join(notes),
        unphysical=unphysical,
        d_min=float(d[0]),
        d_max=float(d[-1]),
    )


def estimate_speedup(fit: LossFit, multiple: float, loss: float) -> float:
    """D_eff / D: how much more data AdamW needs to match `loss` reached with `multiple` (PAPER.md section 5).

    +inf when `loss` is at or below the fit's beta (AdamW never reaches it); NaN when the fit failed.
    """
    if multiple <= 0:
        raise ValueError(f"multiple must be positive, got {multiple}")
    return fit.effective_data(loss) / multiple


def _scale_order(summaries: Iterable[CellSummary]) -> list[str]:
    params: dict[str, float] = {}
    for s in summaries:
        n = s.non_embedding_params
        params.setdefault(s.key[1], n if math.isfinite(n) else math.inf)
    return sorted(params, key=lambda scale: (params[scale], scale))


_SPEEDUP_COLUMNS = [
    "scale",
    "optimizer",
    "chinchilla",
    "non_embedding_params",
    "loss",
    "n_seeds",
    "d_eff",
    "speedup",
    "speedup_ci_low",
    "speedup_ci_high",
    "loss_ci_low",
    "loss_ci_high",
    "interval_source",
    "tied_within_noise",
    "tied_with",
    "beyond_asymptote",
    "fit_alpha",
    "fit_B",
    "fit_beta",
    "fit_n_points",
    "fit_underdetermined",
    "fit_unphysical",
    "fit_d_min",
    "fit_d_max",
    "extrapolated",
    "extrapolation_factor",
    "note",
]


def speedups(
    trials: pd.DataFrame,
    baseline: str = "adamw",
    fit_multiples: Sequence[float] | None = None,
    n_boot: int = N_BOOT,
    ci: float = CI_LEVEL,
    seed: int = 0,
    noise: Mapping[Cell, float] | None = None,
) -> pd.DataFrame:
    """Speedup over `baseline` of every cell's best loss, per (scale, optimizer, chinchilla).

    Per scale, the baseline's best losses at `fit_multiples` (None, the default: every multiple it ran at that
    scale, as the authors' speedup_estimation script does, 16x included; PAPER.md section 5) are fitted with
    `fit_loss_vs_data`; each cell's point (D, L) then gets D_eff and speedup = D_eff / D. Where seeds repeat
    (the cell's best config, or the baseline's fitted points), a percentile bootstrap resamples seeds (and
    refits the baseline curve) for `speedup_ci_*` and `loss_ci_*`. A cell whose best config ran under one seed
    but whose seed noise is known (`noise`: (optimizer, scale, chinchilla) -> std of one seed's final loss, e.g.
    measured by confirm_seeds or tolerance auto) is drawn as its loss + N(0, std^2) instead. Without either the
    intervals are NaN. `interval_source` says which: "seeds", "noise_estimate", or "" (none).

    Ties: at each (scale, chinchilla), two optimizers whose speedup intervals overlap are tied within noise
    (`tied_with` lists the others a row overlaps, `tied_within_noise` is True when that list is not empty):
    neither is a winner. A row without an interval is never marked tied (its `interval_source` is "").

    Columns: scale, optimizer, chinchilla, non_embedding_params, loss, n_seeds, d_eff, speedup,
    speedup_ci_low/high, loss_ci_low/high, beyond_asymptote (loss <= the baseline's beta: speedup +inf),
    fit_alpha, fit_B, fit_beta, fit_n_points, fit_underdetermined, note, and the flags that say how far to trust
    the speedup:
    - fit_unphysical: the baseline's unconstrained fit at this scale had alpha <= 0, B <= 0 or a negative
      asymptote beta; fit_* are then from the fit bounded to >= 0 (`fit_loss_vs_data`).
    - fit_d_min, fit_d_max: the smallest and largest baseline multiple fitted (NaN when not fitted).
    - extrapolation_factor: how far D_eff lies outside [fit_d_min, fit_d_max] (D_eff / fit_d_max above,
      fit_d_min / D_eff below, 1 inside, +inf beyond the asymptote, NaN when D_eff is unknown or 0).
    - extrapolated: extrapolation_factor > 1 + EXTRAPOLATION_SLACK: D_eff is read off the baseline's curve
      beyond the data it was fitted to, so the speedup rests on the curve's form rather than on measurements.
    """
    rng = np.random.default_rng(seed)
    summaries = summarize(trials)
    wanted = None if fit_multiples is None else {float(m) for m in fit_multiples}
    rows: list[dict[str, Any]] = []
    for scale in _scale_order(summaries):
        at_scale = sorted((s for s in summaries if s.key[1] == scale), key=lambda s: (s.key[0], s.key[2]))
        base_points = [
            s
            for s in at_scale
            if s.key[0] == baseline and s.best is not None and (wanted is None or s.key[2] in wanted)
        ]
        base_d = [s.key[2] for s in base_points]
        base_seed_losses = [s.best.losses for s in base_points if s.best is not None]
        fit = fit_loss_vs_data(base_d, [float(np.mean(ls)) for ls in base_seed_losses])
        scale_note = ""
        if not base_points:
            scale_note = f"no {baseline} results at this scale"
        elif not fit.converged or fit.underdetermined or fit.unphysical:
            scale_note = f"{baseline} fit: {fit.note}"

        # Bootstrap of the baseline curve: resample each fitted point's seeds, refit. Shapes (n_boot,).
        boot_means: dict[Cell, np.ndarray] = {}
        boot_fit: np.ndarray | None = None  # (n_boot, 3)
        base_draws = {s.key: _loss_draws(s, rng, n_boot, noise) for s in base_points} if n_boot > 0 else {}
        if n_boot > 0 and fit.converged and any(d is not None for d in base_draws.values()):
            for s, ls in zip(base_points, base_seed_losses, strict=True):
                got = base_draws[s.key]
                boot_means[s.key] = got[0] if got is not None else np.full(n_boot, float(np.mean(ls)))
            draws = np.stack([boot_means[s.key] for s in base_points], axis=1)  # (n_boot, n_points)
            boot_fit = np.full((n_boot, 3), np.nan)
            x = np.asarray(base_d, np.float64)
            for i in range(n_boot):
                refit, _ = _fit_loss_curve(x, draws[i], (fit.alpha, fit.B, fit.beta))
                if refit is not None:
                    boot_fit[i] = refit[:3]
            failed = int(np.isnan(boot_fit[:, 0]).sum())
            if failed:
                scale_note = "; ".join(filter(None, [scale_note, f"{failed}/{n_boot} bootstrap refits failed"]))

        for s in at_scale:
            own = base_draws.get(s.key) if s.key in base_draws else _loss_draws(s, rng, n_boot, noise)
            rows.append(_speedup_row(s, fit, boot_fit, boot_means, own, n_boot, ci, scale_note))
    _mark_ties(rows)
    return pd.DataFrame(rows, columns=_SPEEDUP_COLUMNS)


def _loss_draws(
    s: CellSummary, rng: np.random.Generator, n_boot: int, noise: Mapping[Cell, float] | None
) -> tuple[np.ndarray, str] | None:
    """Bootstrap draws of the cell's best loss, shape (n_boot,), and their source; None without seeds or noise."""
    best = s.best
    if best is None or n_boot <= 0:
        return None
    if len(best.losses) >= 2:
        return resample_means(best.losses, rng, n_boot), "seeds"
    std = (noise or {}).get(s.key)
    if std is not None and math.isfinite(std) and std > 0:
        return best.loss + rng.normal(0.0, std, n_boot), "noise_estimate"
    return None


def _mark_ties(rows: list[dict[str, Any]]) -> None:
    """tied_with / tied_within_noise: the optimizers at the same (scale, chinchilla) whose intervals overlap."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["scale"], row["chinchilla"]), []).append(row)
    for group in groups.values():
        for row in group:
            tied = [
                other["optimizer"]
                for other in group
                if other is not row and intervals_overlap(row["speedup_ci_low"], row["speedup_ci_high"],
                                                 other["speedup_ci_low"], other["speedup_ci_high"])
            ]  # fmt: skip
            row["tied_with"] = tied
            row["tied_within_noise"] = bool(tied)


def intervals_overlap(low: float, high: float, other_low: float, other_high: float) -> bool:
    """Whether [low, high] and [other_low, other_high] intersect: the one "tied within noise" rule (speedups'
    `tied_with`, answer.py's verdicts). Inclusive; False where either is unknown (NaN)."""
    if any(math.isnan(v) for v in (low, high, other_low, other_high)):
        return False
    return low <= other_high and other_low <= high


def _speedup_row(
    s: CellSummary,
    fit: LossFit,
    boot_fit: np.ndarray | None,
    boot_means: Mapping[Cell, np.ndarray],
    own: tuple[np.ndarray, str] | None,
    n_boot: int,
    ci: float,
    scale_note: str,
) -> dict[str, Any]:
    best = s.best
    loss = best.loss if best is not None else (math.inf if s.n_finished else math.nan)
    n_seeds = len(best.losses) if best is not None else 0
    d_eff = fit.effective_data(loss)
    speedup = d_eff / s.key[2]
    notes = [scale_note] if scale_note else []
    beyond = bool(fit.converged and math.isfinite(loss) and loss <= fit.beta)
    if beyond:
        notes.append("loss below the baseline's asymptote beta: D_eff is infinite")
    factor = fit.extrapolation_factor(d_eff)
    extrapolated = bool(factor > 1.0 + EXTRAPOLATION_SLACK)  # False for NaN
    if extrapolated and math.isfinite(factor):
        side = (
            f"{factor:.3g}x above the largest fitted multiple {fit.d_max:g}"
            if d_eff > fit.d_max
            else f"{factor:.3g}x below the smallest fitted multiple {fit.d_min:g}"
        )
        notes.append(f"extrapolated: D_eff {d_eff:.3g} is {side}")
    if best is None:
        notes.append("no finished config with a finite loss")

    sp_low = sp_high = loss_low = loss_high = math.nan
    source = ""
    if best is not None and n_boot > 0 and fit.converged and (boot_fit is not None or own is not None):
        # This cell's loss draws: shared with the baseline refit when it is one of the fitted points.
        if s.key in boot_means:
            loss_draws = boot_means[s.key]
        elif own is not None:
            loss_draws = own[0]
        else:
            loss_draws = np.full(n_boot, loss)
        source = own[1] if own is not None else "baseline_fit"  # only the baseline's points were resampled
        params = boot_fit if boot_fit is not None else np.tile([fit.alpha, fit.B, fit.beta], (n_boot, 1))
        d_eff_draws = _effective_data(params[:, 0], params[:, 1], params[:, 2], loss_draws)
        sp_low, sp_high = percentile_interval(d_eff_draws / s.key[2], ci)
        if own is not None:
            loss_low, loss_high = percentile_interval(loss_draws, ci)
    return {
        "scale": s.key[1],
        "optimizer": s.key[0],
        "chinchilla": s.key[2],
        "non_embedding_params": s.non_embedding_params,
        "loss": loss,
        "n_seeds": n_seeds,
        "d_eff": d_eff,
        "speedup": speedup,
        "speedup_ci_low": sp_low,
        "speedup_ci_high": sp_high,
        "loss_ci_low": loss_low,
        "loss_ci_high": loss_high,
        "interval_source": source,
        "tied_within_noise": False,  # set by _mark_ties
        "tied_with": [],
        "beyond_asymptote": beyond,
        "fit_alpha": fit.alpha,
        "fit_B": fit.B,
        "fit_beta": fit.beta,
        "fit_n_points": fit.n_points,
        "fit_underdetermined": fit.underdetermined,
        "fit_unphysical": fit.unphysical,
        "fit_d_min": fit.d_min,
        "fit_d_max": fit.d_max,
        "extrapolated": extrapolated,
        "extrapolation_factor": factor,
        "note": "; ".join(notes),
    }
