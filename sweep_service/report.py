"""An HTML report of one sweep, regenerated from the database alone (`sweep-service report SWEEP_ID --out DIR`).

`write_report` writes into DIR: `index.html` (one self-contained page, inline CSS, no scripts), the figures
as PNG files next to it, and the tables as CSV (`best_configs.csv`, `speedups.csv`, `sensitivity.csv`):
- the best config and loss of every cell, per scale (sweep_service.analysis.best_per_cell);
- the speedup over AdamW: the paper's D_eff-against-D plot with bands of constant speedup and the loss-vs-data
  plot with AdamW's fitted L(D) = alpha x D^-B + beta (PAPER.md section 5; analysis.speedups);
- the eval-loss curves of every cell's trials (from curve_points; an imported sweep has none and says so);
- sensitivity bars per hyperparameter: the loss change of every one-at-a-time change from a cell's best
  (PAPER.md section 4, Phase I step 5; analysis.sensitivity).

Figures are drawn with matplotlib's Agg canvas on `Figure` objects (no pyplot: no global state, no display).
"""

from __future__ import annotations

import html
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from db import results
from db.session import Database
from sweep_service import analysis, palette, ranking
from sweep_service.numfmt import decimals_for, fixed
from sweep_service.service.analysis import speedup_table
from sweep_service.service.sweep_data import SweepData, SweepNotFound, load_sweep

__all__ = ["SweepNotFound", "load_sweep", "speedup_table", "write_report"]

INDEX = "index.html"
BEST_CSV = "best_configs.csv"
SPEEDUPS_CSV = "speedups.csv"
SENSITIVITY_CSV = "sensitivity.csv"
FLIPS_CSV = "ranking_flips.csv"
# Generated images start with these; older ones are removed when the report is written again.
IMAGE_PREFIXES = ("curves-", "speedup-", "loss-vs-data", "sensitivity-", "ranking-flips")
# Bands of constant speedup on the D_eff-against-D plot: the paper reports 1.1x to 1.4x (PAPER.md section 1);
# 2x marks the claims its fair tuning shrank.
SPEEDUP_BANDS = (1.0, 1.1, 1.2, 1.3, 1.4, 1.6, 2.0)
DPI = 110


# ---- formatting -------------------------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        return f"{v:.{digits}g}"
    return str(value)


def _config_text(config: object) -> str:
    if not isinstance(config, dict):
        return "–"
    return ", ".join(f"{k}={_num(v)}" for k, v in sorted(config.items()))


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool] | None = None) -> str:
    """An HTML table of already-escaped cells."""
    numeric = numeric or [False] * len(headers)
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"n" if n else ""}">{c}</td>' for c, n in zip(r, numeric, strict=True)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists and dicts as JSON text, so a CSV cell holds one readable value."""
    out = frame.copy()
    for column in out.columns:
        if out[column].map(lambda v: isinstance(v, dict | list | tuple)).any():
            out[column] = out[column].map(lambda v: json.dumps(v, sort_keys=True, default=str))
        elif _is_count(str(column)) and pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].round().astype("Int64")  # counts print as 3, not 3.0 (NaN stays empty)
    return out


def _is_count(column: str) -> bool:
    """A column of counts (n_seeds, n_trials, fit_n_points, ...): written as integers."""
    return column.startswith("n_") or "_n_" in column


def _scale_order(frame: pd.DataFrame) -> list[str]:
    params = frame.groupby("scale")["non_embedding_params"].first() if not frame.empty else pd.Series(dtype=float)
    return sorted(params.index, key=lambda sc: (params[sc] if math.isfinite(params[sc]) else math.inf, sc))


def _styles(names: Sequence[str], baseline: str) -> dict[str, dict[str, Any]]:
    """Line style per optimizer: its colour and marker from sweep_service/palette.py (the dashboard's too); the
    baseline dashed."""
    styles = {name: {"color": palette.color_of(name), "marker": palette.marker_of(name), "ls": "-"} for name in names}
    if baseline in styles:
        styles[baseline]["ls"] = "--"
    return styles


def _figure(width: float, height: float, margins: tuple[float, float, float, float] = (0.7, 0.2, 0.55, 0.35)) -> Any:
    """A figure of `width` x `height` inches; `margins` (left, right, bottom, top) in inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins, not a layout engine: constrained layout measures every tick label twice and tripled the
    # time to draw a report on a busy 2-core machine.
    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(left=margins[0] / width, right=1 - margins[1] / width,
                        bottom=margins[2] / height, top=1 - margins[3] / height, wspace=0.35)  # fmt: skip
    FigureCanvasAgg(fig)  # the Agg canvas: PNG without a display or pyplot's global state
    return fig


def _log2_axis(axis: Any, lo: float, hi: float) -> None:
    """Log-2 scale with a label at each power of 2 in [lo, hi] (and no minor labels, which cost time to lay out)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ticks = [2.0**k for k in range(math.floor(math.log2(lo)), math.ceil(math.log2(hi)) + 1) if lo <= 2.0**k <= hi]
    if len(ticks) < 2:  # a range narrower than a doubling
        ticks = [float(v) for v in np.geomspace(lo, hi, 3)]
    ticks = ticks[:: max(1, math.ceil(len(ticks) / 7))]  # at most ~7 labels: wide ranges would overlap
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _save(fig: Any, out: Path, name: str) -> str:
    fig.savefig(out / name, format="png")
    return name


# ---- figures ----------------------------------------------------------------------------------------------


def _speedup_figure(sp: pd.DataFrame, baseline: str, out: Path) -> str | None:
    """The paper's plot (PAPER.md section 5): per scale, each optimizer's D_eff against its D, log-log, over
    bands of constant speedup D_eff / D. Points beyond the baseline's asymptote are drawn at the top."""
    scales = [sc for sc in _scale_order(sp) if sp[(sp["scale"] == sc)]["d_eff"].map(_finite_positive).any()]
    if not scales:
        return None
    from matplotlib.patches import Patch

    optimizers = sorted(set(sp["optimizer"]))
    styles = _styles(optimizers, baseline)
    fig = _figure(3.9 * len(scales) + 1.4, 4.0, margins=(0.7, 1.55, 0.55, 0.35))
    axes = fig.subplots(1, len(scales), squeeze=False)[0]
    shades = [str(0.93 - 0.07 * i) for i in range(len(SPEEDUP_BANDS) - 1)]  # darker = faster
    for ax, scale in zip(axes, scales, strict=True):
        at = sp[sp["scale"] == scale]
        d = at["chinchilla"].astype(float)
        finite = at["d_eff"][at["d_eff"].map(_finite_positive)].astype(float)
        lo = float(min(d.min(), finite.min())) / 1.3
        hi = float(max(d.max(), finite.max())) * 1.3
        xs = np.geomspace(lo, hi, 50)
        for shade, (k0, k1) in zip(shades, itertools.pairwise(SPEEDUP_BANDS), strict=True):
            ax.fill_between(xs, k0 * xs, k1 * xs, color=shade, lw=0, zorder=0)
        ax.plot(xs, xs, color="0.5", lw=0.6, zorder=1)  # speedup 1: the baseline's own curve
        for optimizer in optimizers:
            rows = at[at["optimizer"] == optimizer].sort_values("chinchilla")
            ok = rows[rows["d_eff"].map(_finite_positive)]
            style = styles[optimizer]
            if not ok.empty:
                ax.plot(ok["chinchilla"], ok["d_eff"], ms=4, lw=1, label=optimizer, zorder=3, **style)
                extra = ok[ok["extrapolated"].astype(bool)]
                if not extra.empty:  # not measurements: a white-filled marker over the filled one
                    ax.scatter(extra["chinchilla"], extra["d_eff"], s=22, marker=style["marker"], zorder=4,
                               facecolors="white", edgecolors=style["color"], linewidths=1.2)  # fmt: skip
            beyond = rows[rows["beyond_asymptote"].astype(bool)]
            if not beyond.empty:  # an infinite D_eff: drawn at the top edge
                ax.scatter(beyond["chinchilla"], [hi / 1.05] * len(beyond), marker="^", color=style["color"], zorder=3)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        _log2_axis(ax.xaxis, lo, hi)
        _log2_axis(ax.yaxis, lo, hi)
        ax.set_title(f"{scale}: D_eff against D", fontsize=10)
        ax.set_xlabel("D (Chinchilla multiple)")
        ax.set_ylabel(f"D_eff ({baseline} data to match)")
        ax.grid(True, which="major", alpha=0.2)
    bands = [
        Patch(color=shade, label=f"{k0:g}-{k1:g}x")
        for shade, (k0, k1) in zip(shades, itertools.pairwise(SPEEDUP_BANDS), strict=True)
    ]
    legend = axes[0].legend(handles=bands, fontsize=7, loc="lower right", title="speedup", title_fontsize=7)
    axes[0].add_artist(legend)  # kept when the optimizers' legend goes on the same (only) axes
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _save(fig, out, "speedup-d-eff.png")


def _finite_positive(value: object) -> bool:
    return isinstance(value, int | float | np.floating) and math.isfinite(float(value)) and float(value) > 0


def _loss_figure(sp: pd.DataFrame, baseline: str, out: Path) -> str | None:
    """Best final loss against D per scale, with the baseline's fitted L(D) where it converged."""
    scales = [sc for sc in _scale_order(sp) if sp[sp["scale"] == sc]["loss"].map(_finite_positive).any()]
    if not scales:
        return None
    optimizers = sorted(set(sp["optimizer"]))
    styles = _styles(optimizers, baseline)
    fig = _figure(3.9 * len(scales) + 1.4, 4.0, margins=(0.7, 1.55, 0.55, 0.35))
    axes = fig.subplots(1, len(scales), squeeze=False)[0]
    for ax, scale in zip(axes, scales, strict=True):
        at = sp[sp["scale"] == scale]
        for optimizer in optimizers:
            rows = at[(at["optimizer"] == optimizer) & at["loss"].map(_finite_positive)].sort_values("chinchilla")
            if not rows.empty:
                style = {**styles[optimizer], "ls": ":" if optimizer == baseline else "-"}
                ax.plot(rows["chinchilla"], rows["loss"], ms=4, lw=0.8, label=optimizer, **style)
        first = at.iloc[0]
        if all(math.isfinite(float(first[c])) for c in ("fit_alpha", "fit_B", "fit_beta")):
            d = at["chinchilla"].astype(float)
            xs = np.geomspace(float(d.min()) / 1.2, float(d.max()) * 1.2, 100)
            ys = float(first["fit_alpha"]) * xs ** (-float(first["fit_B"])) + float(first["fit_beta"])
            ax.plot(xs, ys, color="k", lw=1, ls="--", label=f"{baseline} L(D) fit")
        d = at["chinchilla"].astype(float)
        ax.set_xscale("log", base=2)
        ax.set_xlim(float(d.min()) / 1.2, float(d.max()) * 1.2)
        _log2_axis(ax.xaxis, float(d.min()) / 1.2, float(d.max()) * 1.2)
        ax.set_title(f"{scale}: best final loss", fontsize=10)
        ax.set_xlabel("D (Chinchilla multiple)")
        ax.set_ylabel("final eval loss")
        ax.grid(True, alpha=0.2)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _save(fig, out, "loss-vs-data.png")


def _curve_figures(curves: Sequence[results.CellCurves], out: Path) -> list[tuple[str, str]]:
    """One PNG per cell with curves: every trial thin and grey, the cell's best trial in colour."""
    images: list[tuple[str, str]] = []
    for i, cell in enumerate(c for c in curves if c.curves):
        fig = _figure(4.0, 3.0)
        ax = fig.subplots()
        best = cell.curves.get(cell.best_trial_id) if cell.best_trial_id is not None else None
        for trial_id, points in cell.curves.items():
            if trial_id == cell.best_trial_id:
                continue
            ax.plot([p[0] for p in points], [p[1] for p in points], color="0.6", lw=0.7, alpha=0.7)
        if best:
            ax.plot([p[0] for p in best], [p[1] for p in best], color="C3", lw=1.8, label="best trial")
            ax.legend(fontsize=7)
        # A diverged trial's loss (up to 1e4) would flatten the others: the axis stops a little above the
        # highest finite point of the best curve (else at the 90th percentile of all points).
        values = np.array([p[1] for pts in cell.curves.values() for p in pts if math.isfinite(p[1])])
        if values.size:
            middle = float(np.quantile(values, 0.9))
            top = max((p[1] for p in best if math.isfinite(p[1])), default=middle) if best else middle
            bottom = float(values.min())
            ax.set_ylim(bottom - 0.02 * (top - bottom + 1e-9), top + 0.05 * (top - bottom + 1e-9))
        ax.set_title(f"{cell.key} ({len(cell.curves)} trials)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("eval loss")
        ax.grid(True, alpha=0.2)
        images.append((cell.key, _save(fig, out, f"curves-{i:03d}.png")))
    return images


def _flips_figure(curves: Sequence[results.CellCurves], out: Path) -> str | None:
    """One panel per (scale, multiple) with two or more optimizers: loss_a - loss_b of each pair's best trials
    against the fraction of training (sweep_service.ranking), a dot where the ranking settles."""
    by_cell: dict[tuple[str, float], dict[str, Any]] = {}
    for c in curves:
        if ranking.best_curve(c) is not None:
            by_cell.setdefault((c.scale, c.chinchilla), {})[c.optimizer] = c
    groups = sorted(key for key, cells in by_cell.items() if len(cells) >= 2)
    if not groups:
        return None
    fig = _figure(4.0 * min(len(groups), 3), 3.0 * math.ceil(len(groups) / 3))
    axes = np.atleast_1d(fig.subplots(math.ceil(len(groups) / 3), min(len(groups), 3))).ravel()
    drawn = False
    for ax, key in zip(axes, groups, strict=False):
        cells = by_cell[key]
        flips = ranking.ranking_flips(list(cells.values()))
        for r in flips.itertuples():
            a = ranking.best_curve(cells[r.optimizer_a])
            b = ranking.best_curve(cells[r.optimizer_b])
            if a is None or b is None:
                continue
            grid, diff = ranking.pair_difference(a, b)
            (line,) = ax.plot(grid, diff, lw=1.2, label=f"{r.optimizer_a} - {r.optimizer_b}")
            if math.isfinite(r.settled_at):
                ax.plot([r.settled_at], [0.0], "o", color=line.get_color(), ms=4)
            drawn = True
        ax.axhline(0.0, color="0.5", lw=0.7)
        ax.set_title(f"{key[0]} x{key[1]:g}", fontsize=9)
        ax.set_xlabel("fraction of training")
        ax.set_ylabel("eval loss difference")
        ax.legend(fontsize=6)
        ax.grid(True, alpha=0.2)
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    return _save(fig, out, "ranking-flips.png") if drawn else None


def _flips_section(flips: pd.DataFrame, image: str | None) -> str:
    if flips.empty:
        return (
            "<p class='note'>No ranking flips to show: they need eval curves of the best trials of two or more "
            "optimizers at one scale and multiple (imported results hold no curves).</p>"
        )
    body = [
        [
            _esc(r.scale),
            _num(r.chinchilla),
            _esc(f"{r.optimizer_a} vs {r.optimizer_b}"),
            _esc(r.final_leader or "tie"),
            _num(r.settled_at, 3),
            str(int(r.n_flips)),
            _num(r.final_gap, 3),
        ]
        for r in flips.itertuples()
    ]
    table = _table(
        ["scale", "D", "pair", "leader at the end", "settled after (fraction)", "flips", "final gap"],
        body,
        [False, True, False, False, True, True, True],
    )
    img = f'<img src="{_esc(image)}" alt="ranking flips">' if image else ""
    return img + table


def _sensitivity_figures(sens: pd.DataFrame, out: Path) -> list[tuple[str, str]]:
    """Per hyperparameter, horizontal bars: loss change from the cell's best for each one-at-a-time change;
    a diverged change is a hatched bar at the right edge."""
    images: list[tuple[str, str]] = []
    for i, (hparam, rows) in enumerate(sens.groupby("hparam", sort=True)):
        rows = rows.reset_index(drop=True)
        labels = [f"{r.optimizer}/{r.scale}/{r.chinchilla:g}: {_num(r.value)}" for r in rows.itertuples()]
        finite = rows["delta"][np.isfinite(rows["delta"].astype(float))].astype(float)
        cap = float(finite.max()) * 1.2 if not finite.empty and finite.max() > 0 else 0.1
        fig = _figure(7.0, 1.0 + 0.28 * len(rows), margins=(2.6, 0.2, 0.5, 0.35))
        ax = fig.subplots()
        # Bars in their optimizer's colour (the palette the dashboard uses too).
        for y, r in enumerate(rows.itertuples()):
            colour = palette.color_of(str(r.optimizer))
            if r.diverged or not math.isfinite(float(r.delta)):
                ax.barh(y, cap, color="white", edgecolor=colour, hatch="//")
                ax.annotate("diverged", (cap, y), fontsize=7, ha="right", va="center")
            else:
                ax.barh(y, float(r.delta), color=colour)
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.6)
        ax.set_xlabel("loss - best loss")
        ax.set_title(f"{hparam}: one-at-a-time changes from the best", fontsize=10)
        ax.grid(True, axis="x", alpha=0.2)
        images.append((str(hparam), _save(fig, out, f"sensitivity-{i:03d}.png")))
    return images


# ---- the page ---------------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top} td.n{text-align:right}
th{background:#f4f4f4} .note{color:#666;font-size:0.9em} img{max-width:100%}
.gallery{display:flex;flex-wrap:wrap;gap:8px} .gallery figure{margin:0}
figcaption{font-size:0.8em;color:#555}
table{display:block;overflow-x:auto;max-width:100%}
@media (prefers-color-scheme: dark){
body{background:#15171a;color:#e4e6ea} th{background:#23262b} th,td{border-color:#3a3e45}
.note,figcaption{color:#a9aeb6} a{color:#7fb6ff} img{background:#fff}
}
"""


def _best_section(best: pd.DataFrame) -> str:
    if best.empty:
        return "<p class='note'>No trials yet.</p>"
    parts = []
    for scale in _scale_order(best):
        rows = best[best["scale"] == scale].sort_values(["chinchilla", "best_loss", "optimizer"])
        digits = decimals_for(rows["best_loss"])
        n = rows["non_embedding_params"].iloc[0]
        title = f"{scale} (N = {_num(int(n)) if math.isfinite(n) else 'unknown'})"
        body = []
        for r in rows.itertuples():
            ci = ""
            if math.isfinite(r.best_loss_ci_low):
                ci = f" [{fixed(r.best_loss_ci_low, digits)}, {fixed(r.best_loss_ci_high, digits)}]"
            body.append(
                [
                    _esc(r.optimizer),
                    _num(r.chinchilla),
                    _esc(fixed(r.best_loss, digits) + ci),
                    _num(r.best_n_seeds),
                    _num(r.n_trials),
                    _num(r.n_diverged),
                    # analysis counts the best among its near-ties; the dashboard and this column count
                    # the other configs within the tolerance (so both say 0 where only the best is there)
                    _num(max(0, int(r.n_near_ties) - 1)),
                    _esc(_config_text(r.best_config)),
                ]
            )
        parts.append(
            f"<h3>{_esc(title)}</h3>"
            + _table(
                ["optimizer", "D", "best loss", "seeds", "trials", "diverged", "near-ties", "best config"],
                body,
                [False, True, True, True, True, True, True, False],
            )
        )
    return "".join(parts)


def _speedup_section(sp: pd.DataFrame, baseline: str, images: Sequence[str]) -> str:
    if sp.empty:
        return "<p class='note'>No trials yet.</p>"
    parts = [f'<img src="{_esc(name)}" alt="{_esc(name)}">' for name in images]
    if not images or "speedup-d-eff.png" not in images:
        parts.append(
            f"<p class='note'>No D_eff-against-D plot: the speedup needs {baseline}'s best loss at at least "
            f"{analysis.LOSS_FIT_PARAMS} data multiples of a scale (the paper fits 1, 2, 4 and 8x) to fit "
            "L(D) = alpha x D^-B + beta. The loss differences to the baseline below are measured directly.</p>"
        )
    fits = []
    for scale in _scale_order(sp):
        first = sp[sp["scale"] == scale].iloc[0]
        if math.isfinite(float(first["fit_alpha"])):
            text = (
                f"L(D) = {_num(first['fit_alpha'])} x D^-{_num(first['fit_B'])} + {_num(first['fit_beta'])} "
                f"from {int(first['fit_n_points'])} points"
            )
            if bool(first["fit_unphysical"]):
                text += (
                    " (UNRELIABLE: the unconstrained fit was unphysical, a negative asymptote or a non-falling "
                    "curve; refitted with alpha, B, beta >= 0)"
                )
            if bool(first["fit_underdetermined"]):
                text += " (underdetermined: as few points as parameters, no error estimate)"
            text += f"; measured D from {_num(first['fit_d_min'])} to {_num(first['fit_d_max'])}"
        else:
            text = "not fitted"
        fits.append([_esc(scale), _esc(text)])
    parts.append(f"<h3>{_esc(baseline)}'s fit per scale</h3>" + _table(["scale", "fit"], fits))
    body = []
    digits = decimals_for(sp["loss"])
    gap_digits = decimals_for(sp["loss_vs_baseline"])
    for r in sp.itertuples():
        ci = f" [{_num(r.speedup_ci_low, 3)}, {_num(r.speedup_ci_high, 3)}]" if math.isfinite(r.speedup_ci_low) else ""
        body.append(
            [
                _esc(r.scale),
                _esc(r.optimizer),
                _num(r.chinchilla),
                fixed(r.loss, digits),
                fixed(r.loss_vs_baseline, gap_digits),
                _num(r.d_eff, 3),
                _esc(_num(r.speedup, 3) + ci + _speedup_caveat(r, baseline)),
                _esc(r.note),
            ]
        )
    flags = ("extrapolated", "fit_unphysical", "beyond_asymptote")
    n_flagged = int(sp[list(flags)].astype(bool).any(axis=1).sum())
    caveat = ""
    if n_flagged:
        caveat = (
            f"<p class='note'>{n_flagged} of {len(sp)} speedups are not measurements: <b>extrapolated</b> ones "
            f"have a D_eff outside the data multiples {_esc(baseline)} was measured at (the factor says how far "
            f"beyond), so they rest on the fitted curve's form alone; <b>unreliable</b> ones come from a scale "
            f"where {_esc(baseline)}'s unconstrained fit was unphysical; a loss below {_esc(baseline)}'s asymptote "
            f"has no finite D_eff at all. The numbers are kept, flagged, in "
            f"{SPEEDUPS_CSV} (columns extrapolated, extrapolation_factor, fit_unphysical).</p>"
        )
    parts.append(
        "<h3>Speedup per cell</h3>"
        + caveat
        + _table(
            ["scale", "optimizer", "D", "loss", f"loss - {baseline}", "D_eff", "speedup D_eff/D", "note"],
            body,
            [False, False, True, True, True, True, True, False],
        )
    )
    return "".join(parts)


def _speedup_caveat(row: Any, baseline: str) -> str:
    """What the speedup column adds to a flagged number (analysis.speedups' extrapolated, fit_unphysical)."""
    words = []
    if bool(row.beyond_asymptote):  # loss below the baseline's asymptote: D_eff is infinite, said as such
        words.append(f"beyond {baseline}'s asymptote: no finite D_eff")
    elif bool(row.extrapolated):
        factor = float(row.extrapolation_factor)
        far = f" {_num(factor, 3)}x beyond {baseline}'s measured D" if math.isfinite(factor) else ""
        words.append(f"extrapolated{far}")
    if bool(row.fit_unphysical):
        words.append(f"unreliable: {baseline}'s fit unphysical")
    if bool(row.tied_within_noise):  # intervals overlap: no winner between these (analysis.speedups)
        words.append("tied within noise with " + ", ".join(str(o) for o in row.tied_with))
    return f" ({'; '.join(words)})" if words else ""


def _curves_section(data: SweepData, images: Sequence[tuple[str, str]]) -> str:
    if not images:
        if data.imported:
            return (
                "<p class='note'>No curves: this sweep was imported from released results, which hold each "
                "cell's final loss only.</p>"
            )
        return "<p class='note'>No eval-loss curve points are recorded for this sweep yet.</p>"
    figures = "".join(
        f'<figure><img src="{_esc(name)}" alt="{_esc(key)}"><figcaption>{_esc(key)}</figcaption></figure>'
        for key, name in images
    )
    return f"<div class='gallery'>{figures}</div>"


def _sensitivity_section(sens: pd.DataFrame, images: Sequence[tuple[str, str]]) -> str:
    if sens.empty:
        return (
            "<p class='note'>No one-at-a-time changes from a cell's best config are recorded (an imported sweep "
            "holds only what its file released; the paper's release has the best config of each cell only).</p>"
        )
    figures = "".join(f'<img src="{_esc(name)}" alt="sensitivity of {_esc(h)}">' for h, name in images)
    digits = decimals_for(sens["loss"])
    body = [
        [
            _esc(f"{r.optimizer}/{r.scale}/{r.chinchilla:g}"),
            _esc(r.hparam),
            _esc(_num(r.value)),
            _esc(_num(r.best_value)),
            fixed(r.loss, digits),
            "diverged" if r.diverged else fixed(r.delta, digits),
        ]
        for r in sens.itertuples()
    ]
    return figures + _table(
        ["cell", "hparam", "value", "best value", "loss", "loss - best"], body, [False, False, True, True, True, True]
    )


def _remove_old_images(out: Path) -> None:
    for path in out.glob("*.png"):
        if path.name.startswith(IMAGE_PREFIXES):
            path.unlink()


def write_report(
    database: Database,
    sweep_id: int,
    out_dir: str | Path,
    baseline: str = "adamw",
    n_boot: int = analysis.N_BOOT,
) -> Path:
    """Write the report of sweep `sweep_id` into `out_dir` (created if missing); returns index.html's path.

    Everything is read from the database: run it again any time to regenerate every file.
    """
    data = load_sweep(database, sweep_id)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    _remove_old_images(out)

    trials = data.trials
    best = analysis.best_per_cell(trials, n_boot=n_boot)
    sp = speedup_table(trials, baseline, n_boot, data.noise)
    sens = analysis.sensitivity(trials)

    best_csv = best.copy()
    for name in sorted({k for c in best["best_config"] if isinstance(c, dict) for k in c}):
        best_csv["config." + name] = [c.get(name) if isinstance(c, dict) else None for c in best["best_config"]]
    _csv_frame(best_csv).to_csv(out / BEST_CSV, index=False)
    _csv_frame(sp).to_csv(out / SPEEDUPS_CSV, index=False)
    _csv_frame(sens).to_csv(out / SENSITIVITY_CSV, index=False)

    speedup_images = [name for name in (_speedup_figure(sp, baseline, out), _loss_figure(sp, baseline, out)) if name]
    curve_images = _curve_figures(data.curves, out)
    sensitivity_images = _sensitivity_figures(sens, out)
    flips = ranking.ranking_flips(data.curves)
    _csv_frame(flips).to_csv(out / FLIPS_CSV, index=False)
    flips_image = _flips_figure(data.curves, out)

    source = data.spec.get("source") if data.imported else None
    about = ""
    if isinstance(source, dict):
        about = f"<p class='note'>Imported from {_esc(source.get('file'))}: {_esc(source.get('about') or '')}</p>"
    n_cells = len(best)
    n_trials = len(trials)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="color-scheme" content="light dark">
<title>sweep {data.sweep_id}: {_esc(data.name)}</title><style>{CSS}</style></head><body>
<h1>Sweep {data.sweep_id}: {_esc(data.name)}</h1>
<p>Status {_esc(data.status)}{" (imported)" if data.imported else ""}; {n_cells} cells, {n_trials} trials;
created {_esc(data.created_at.strftime("%Y-%m-%d %H:%M"))} UTC. Report generated {generated} from the database
alone (<code>sweep-service report {data.sweep_id} --out DIR</code>).
Tables as CSV: <a href="{BEST_CSV}">{BEST_CSV}</a>, <a href="{SPEEDUPS_CSV}">{SPEEDUPS_CSV}</a>,
<a href="{SENSITIVITY_CSV}">{SENSITIVITY_CSV}</a>.</p>
{about}
<h2>Speedup over {_esc(baseline)}</h2>
<p class="note">Per scale, {_esc(baseline)}'s best final loss is fitted against the data multiple D as
L(D) = alpha x D^-B + beta; an optimizer reaching loss L at D would need D_eff = ((L - beta) / alpha)^(-1/B) of
{_esc(baseline)} data, and its speedup is D_eff / D (Wen et al. 2025, section 5). The bands mark constant
speedups {", ".join(f"{k:g}x" for k in SPEEDUP_BANDS)}.</p>
{_speedup_section(sp, baseline, speedup_images)}
<h2>Best configs per scale</h2>
{_best_section(best)}
<h2>Eval-loss curves per cell</h2>
{_curves_section(data, curve_images)}
<h2>Ranking flips</h2>
<p class="note">Per pair of optimizers at one scale and multiple, the eval-loss difference of their best trials
along training (as a fraction of each trial's steps), and the fraction after which their ranking no longer
changes: rankings flip mid-training as learning rates decay, so only the end judges (Wen et al. 2025; table
as CSV: <a href="{FLIPS_CSV}">{FLIPS_CSV}</a>).</p>
{_flips_section(flips, flips_image)}
<h2>Sensitivity per hyperparameter</h2>
{_sensitivity_section(sens, sensitivity_images)}
</body></html>
"""
    index = out / INDEX
    index.write_text(page, encoding="utf-8")
    return index
