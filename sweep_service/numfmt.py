"""Numbers printed to the precision their differences need: losses that differ by 1e-3 are all printed with
enough decimals to tell them apart, and with the same number of decimals (no "2.9" beside "2.899").

The dashboard does the same in JavaScript (api/dashboard/app.js, decimalsFor).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

MIN_DECIMALS = 3  # losses near 3 nats: three decimals is the paper's own precision (PAPER.md tables)
MAX_DECIMALS = 6  # below 1e-6 a gap is float noise from the bootstrap, not a difference worth printing


def decimals_for(values: Iterable[object]) -> int:
    """The number of decimals at which every two distinct neighbouring values print differently (at least
    MIN_DECIMALS, at most MAX_DECIMALS)."""
    xs = sorted({float(v) for v in values if isinstance(v, int | float) and math.isfinite(float(v))})
    for decimals in range(MIN_DECIMALS, MAX_DECIMALS + 1):
        if len({f"{x:.{decimals}f}" for x in xs}) == len(xs):
            return decimals
    return MAX_DECIMALS


def fixed(value: object, decimals: int) -> str:
    """`value` with `decimals` decimals; "–" for a missing or non-finite number."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(float(value)):
        return "–"
    return f"{float(value):.{decimals}f}"
