"""The answer `sweep-service run` prints at the end: per scale, which optimizer trains fastest and by how much.

Per scale and optimizer, one row per data multiple D: the best loss +- the std over its seeds (confirm_seeds),
the speedup over AdamW (PAPER.md section 5) with its bootstrap interval over seeds (`analysis.speedups`, through
`service.analysis.speedup_table`, which picks the multiples AdamW's L(D) is fitted on), and a verdict. Next to it, the
same table from the paper's released results (the shipped file, no compute), scales paired by
size (the sweep's smallest with the paper's 130m, ...) and rows by the rank of D within each optimizer.

Verdicts (issue 12 item 4: where two optimizers' intervals overlap the answer is "tied within noise", never a
winner): at each (scale, D) where two or more optimizers ran, a row whose speedup interval overlaps another's is "tied
within noise (with ...)"; the largest speedup is "fastest" only when its interval overlaps no other. A row
without an interval (one seed: the paper's results) gets no verdict. `tied_within_noise` is the hook: it uses
the analysis's own `tied_with` column (the same overlap rule) when `analysis.speedups` provides one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import IO

import pandas as pd

from db.session import Database
from sweep_service import analysis
from sweep_service.service.analysis import speedup_table
from sweep_service.service.sweep_data import load_sweep
from sweep_service.speedups import intervals_overlap

BASELINE = "adamw"
N_BOOT = analysis.N_BOOT
TIED = "tied within noise"


@dataclass(frozen=True)
class Row:
    optimizer: str
    multiple: float
    loss: float
    loss_std: float  # NaN with one seed
    n_seeds: int
    speedup: float
    ci_low: float
    ci_high: float
    extrapolated: bool
    verdict: str
    tied_with: tuple[str, ...] | None = None  # analysis.speedups' own `tied_with`, where it has that column


def _overlap(a: Row, b: Row) -> bool:
    return intervals_overlap(a.ci_low, a.ci_high, b.ci_low, b.ci_high)


def _has_interval(row: Row) -> bool:
    return math.isfinite(row.ci_low) and math.isfinite(row.ci_high)


def tied_within_noise(rows: list[Row]) -> dict[int, str]:
    """Verdict per row index at one (scale, D): "fastest", "tied within noise (with ...)", or nothing.

    The hook for the analysis's rule: `answer_rows` prefers its `tied_within_noise` column when present."""
    with_ci = [(i, r) for i, r in enumerate(rows) if _has_interval(r) and math.isfinite(r.speedup)]
    if len(with_ci) < 2:
        return {}
    top_i = max(with_ci, key=lambda item: item[1].speedup)[0]
    out: dict[int, str] = {}
    for i, r in with_ci:
        if r.tied_with is not None:  # the analysis's rule (analysis.speedups `tied_with`)
            tied = list(r.tied_with)
        else:
            tied = [o.optimizer for j, o in with_ci if j != i and _overlap(r, o)]
        if tied:
            out[i] = f"{TIED} (with {', '.join(tied)})"
        elif i == top_i:
            out[i] = "fastest"
    return out


def answer_rows(
    trials: pd.DataFrame, n_boot: int = N_BOOT, noise: dict[tuple[str, str, float], float] | None = None
) -> dict[str, list[Row]]:
    """Per scale (in the frame's order), the rows of the answer table, sorted by optimizer then D. `noise`: the
    cells' recorded seed noise (load_sweep's), so a best run under one seed still gets the interval the
    report and GET /speedups give it."""
    if trials.empty:
        return {}
    sp = speedup_table(trials, BASELINE, n_boot, noise)
    best = analysis.best_per_cell(trials, n_boot=0)
    std = {(r.optimizer, r.scale, float(r.chinchilla)): float(r.best_loss_std) for r in best.itertuples()}
    out: dict[str, list[Row]] = {}
    for scale, group in sp.groupby("scale", sort=False):
        rows = []
        for r in group.sort_values(["optimizer", "chinchilla"]).itertuples():
            column = getattr(r, "tied_with", None)  # the analysis's own ties, where it has them
            tied_with = tuple(str(x) for x in column) if isinstance(column, list | tuple) else None
            rows.append(
                Row(
                    optimizer=str(r.optimizer),
                    multiple=float(r.chinchilla),
                    loss=float(r.loss),
                    loss_std=std.get((str(r.optimizer), str(scale), float(r.chinchilla)), math.nan),
                    n_seeds=int(r.n_seeds),
                    speedup=float(r.speedup),
                    ci_low=float(r.speedup_ci_low),
                    ci_high=float(r.speedup_ci_high),
                    extrapolated=bool(r.extrapolated),
                    verdict="",
                    tied_with=tied_with,
                )
            )
        for multiple in sorted({r.multiple for r in rows}):
            at = [i for i, r in enumerate(rows) if r.multiple == multiple]
            for j, verdict in tied_within_noise([rows[i] for i in at]).items():
                rows[at[j]] = _with_verdict(rows[at[j]], verdict)
        out[str(scale)] = rows
    return out


def _with_verdict(row: Row, verdict: str) -> Row:
    return Row(**{**row.__dict__, "verdict": verdict})


def _num(x: float, fmt: str) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return format(x, fmt)


def _cells(row: Row | None) -> list[str]:
    if row is None:
        return ["", "", "", "", ""]
    loss = _num(row.loss, ".4f") + (f" ± {_num(row.loss_std, '.4f')}" if math.isfinite(row.loss_std) else "")
    speedup = _num(row.speedup, ".2f") + ("x" if not math.isnan(row.speedup) else "")
    if _has_interval(row):
        speedup += f" [{_num(row.ci_low, '.2f')}, {_num(row.ci_high, '.2f')}]"
    if row.extrapolated:
        speedup += " (extrapolated)"
    return [row.optimizer, f"{row.multiple:g}", f"{loss} ({row.n_seeds})", speedup, row.verdict]


HEADER = ["optimizer", "D", "best loss ± std (seeds)", "speedup [95% CI]", "verdict"]


def _paired(ours: list[Row], theirs: list[Row]) -> list[tuple[Row | None, Row | None]]:
    """Rows of both tables, per optimizer (ours first), paired by the rank of D."""
    names = list(dict.fromkeys([r.optimizer for r in ours] + [r.optimizer for r in theirs]))
    pairs: list[tuple[Row | None, Row | None]] = []
    for name in names:
        a = [r for r in ours if r.optimizer == name]
        b = [r for r in theirs if r.optimizer == name]
        for i in range(max(len(a), len(b))):
            pairs.append((a[i] if i < len(a) else None, b[i] if i < len(b) else None))
    return pairs


def _table(lines: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]


def render(ours: dict[str, list[Row]], paper: dict[str, list[Row]]) -> list[str]:
    """The printed answer: each of our scales next to the paper's scale of the same rank, then the paper's rest."""
    out: list[str] = []
    paper_scales = list(paper)
    for k, (scale, rows) in enumerate(ours.items()):
        their_scale = paper_scales[k] if k < len(paper_scales) else None
        names = {r.optimizer for r in rows}
        theirs = [r for r in paper.get(their_scale or "", []) if r.optimizer in names]
        lines = [[*HEADER, "|", *HEADER[:4]]]
        for a, b in _paired(rows, theirs):
            lines.append([*_cells(a), "|", *_cells(b)[:4]])
        table = _table(lines)
        bar = table[0].index("|")
        right = f"| {their_scale} (paper, released results)" if their_scale else "|"
        out += [f"{scale} (this sweep)".ljust(bar) + right, *table, ""]
    names = {r.optimizer for rows in ours.values() for r in rows}
    for their_scale in paper_scales[len(ours) :]:
        theirs = [r for r in paper[their_scale] if r.optimizer in names]
        if theirs:
            table = _table([HEADER[:4], *[_cells(r)[:4] for r in theirs]])
            out += [f"{their_scale} (paper, released results)", *table, ""]
    return out


def print_answer(database: Database, sweep_id: int, out: IO[str], n_boot: int = N_BOOT) -> None:
    """Print the answer for `sweep_id` next to the paper's released results (read from the shipped file, no
    compute, nothing written: `sweep-service import-results paper` puts them in the database for the API)."""
    from sweep_service.importer import PAPER_RESULTS
    from sweep_service.paper_results import load_paper_results

    data = load_sweep(database, sweep_id, with_curves=False)
    ours = answer_rows(data.trials, n_boot, data.noise)
    paper = answer_rows(load_paper_results(PAPER_RESULTS), n_boot=0)
    print(f"Which optimizer trains fastest: speedup over {BASELINE} = D_eff / D (docs/PAPER.md section 5);", file=out)
    print("± is the std of the best config's loss over its seeds, [..] a 95% bootstrap interval over seeds;", file=out)
    print("the paper's released results have one seed per cell, so no interval.", file=out)
    print(file=out)
    if not ours:
        print(f"sweep {sweep_id} has no trials yet: nothing to compare", file=out)
        return
    for line in render(ours, paper):
        print(line, file=out)
