"""scipy's curve_fit, quiet: the one wrapper the loss-vs-data fit (speedups) and the hyperparameter laws (scaling)
share. curve_fit raises or warns where a fit fails or is poorly conditioned; the callers say so in their notes
instead, so its warnings and floating-point errors are ours to report, not the user's terminal's."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

__all__ = ["quiet_curve_fit"]


def quiet_curve_fit(
    func: Callable[..., Any],
    x: Any,
    y: np.ndarray,
    p0: Sequence[float],
    maxfev: int,
    bounds: Any = (-math.inf, math.inf),
) -> tuple[np.ndarray, np.ndarray] | None:
    """(parameters, their standard errors) of curve_fit(func, x, y, p0, maxfev, bounds), or None when it fails or a
    parameter is not finite. Bounded: curve_fit's 'trf' method; unbounded: Levenberg-Marquardt. The standard errors
    are sqrt(|diag(covariance)|): +inf or NaN where curve_fit could not estimate the covariance."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, pcov = curve_fit(func, x, y, p0=list(p0), maxfev=maxfev, bounds=bounds)
    except (RuntimeError, ValueError, TypeError, FloatingPointError):
        return None
    params = np.asarray(popt, np.float64)
    if not np.all(np.isfinite(params)):
        return None
    return params, np.sqrt(np.abs(np.diag(np.asarray(pcov, np.float64))))
