"""Analysis of sweep results: best configs, sensitivity, stable hyperparameters, speedups, hyperparameter laws.

The public facade (DESIGN.md "Interfaces that others build on"): it re-exports, unchanged, what lives by topic in
- `sweep_service.ranking`: the trials frame's checks and per-cell summaries, `best_per_cell`, `sensitivity`,
  `stable_hparams` (and the ranking flips along training);
- `sweep_service.speedups`: `fit_loss_vs_data`, `estimate_speedup`, `speedups` (bootstrap intervals, ties within
  noise, extrapolation flags);
- `sweep_service.scaling`: `fit_hparam_scaling`, `predict_hparam(s)`, `snap_to_grid` (Phase III laws);
- `sweep_service.bootstrap`: `N_BOOT`, `CI_LEVEL`.
Import from here (`from sweep_service.analysis import best_per_cell`) or from the topic module; both stay.

Pure functions on pandas DataFrames (no database, no torch): the API and the CLI read trials out of `db/`,
build a trials frame and call these. PAPER.md sections 4-6 hold the protocol they implement.

The trials frame (one row per trial)
------------------------------------
| column | type | meaning |
| --- | --- | --- |
| optimizer | str | registry name (`adamw`, `muon`, `soap`, ...) |
| scale | str | model scale preset (`130m`, `tiny-130k`, ...) |
| chinchilla | float | data-to-model multiple: tokens = chinchilla x 20 x N |
| config | dict[str, float or int or bool or str] | the resolved hyperparameters of the run |
| loss | float | final validation loss; +inf for a diverged run; NaN while unknown |
| status | str | `completed`, `diverged`, `failed`, `cancelled` (or `queued`/`running`) |
| seed | int | training seed; the same config under several seeds gives repeated measurements |
| trial_id | str or int | the trial's id |
| non_embedding_params | int | N, the non-embedding parameter count of the scale |
| tokens | int | training tokens of the run |
| device_seconds | float | compute used by the run; NaN when unknown |

The first six columns are required; the others may be missing (then treated as unknown). Extra columns are
ignored. There are no step-level rows: curves live elsewhere. A cell is the key (optimizer, scale,
chinchilla), `CELL_KEY`.

Ranking rules (PAPER.md section 4, Phase I step 2): only `completed` and `diverged` trials are results
(db.models.TRIAL_RANKED). A diverged trial, and a completed one whose loss is NaN, infinite or above 1e4, ranks as
+inf (coordinate_descent.ranking_loss); it is never dropped. A config (db.models.config_key: the database's own
identity) run under several seeds is ranked by the mean of its seeds' losses (one diverged seed makes the mean
+inf). Near-ties are coordinate_descent.near_tie. `failed`/`cancelled` trials count as trials and as compute
used, but not as results.

Uncertainty: where a config has repeated seeds, intervals are percentile bootstraps over its seeds (the
choice of the best config is taken as given, not re-made inside the bootstrap). A fit with as few points
as parameters is flagged `underdetermined` and reports no error estimate; with fewer it is not fitted.
"""

from __future__ import annotations

from sweep_service.bootstrap import CI_LEVEL, N_BOOT
from sweep_service.ranking import (
    CELL_KEY,
    DIVERGED_LOSS_ABOVE,
    FINISHED_STATUSES,
    NEAR_TIE_TOLERANCE,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    TRIAL_COLUMNS,
    Cell,
    best_per_cell,
    check_trials,
    config_key,
    sensitivity,
    stable_hparams,
)
from sweep_service.scaling import (
    HparamPrediction,
    HParamValue,
    ScalingFit,
    allowed_range,
    fit_hparam_scaling,
    predict_hparam,
    predict_hparams,
    scaling_fits_frame,
    snap_to_grid,
)
from sweep_service.speedups import (
    EXTRAPOLATION_SLACK,
    LOSS_FIT_LOWER,
    LOSS_FIT_PARAMS,
    LossFit,
    estimate_speedup,
    fit_loss_vs_data,
    speedups,
)

__all__ = [
    "CELL_KEY",
    "CI_LEVEL",
    "DIVERGED_LOSS_ABOVE",
    "EXTRAPOLATION_SLACK",
    "FINISHED_STATUSES",
    "LOSS_FIT_LOWER",
    "LOSS_FIT_PARAMS",
    "NEAR_TIE_TOLERANCE",
    "N_BOOT",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "TRIAL_COLUMNS",
    "Cell",
    "HParamValue",
    "HparamPrediction",
    "LossFit",
    "ScalingFit",
    "allowed_range",
    "best_per_cell",
    "check_trials",
    "config_key",
    "estimate_speedup",
    "fit_hparam_scaling",
    "fit_loss_vs_data",
    "predict_hparam",
    "predict_hparams",
    "scaling_fits_frame",
    "sensitivity",
    "snap_to_grid",
    "speedups",
    "stable_hparams",
]
