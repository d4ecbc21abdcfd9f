"""Pydantic models of the REST API: what goes over the wire, nothing else (STYLE.md rule 1).

The request body of `POST /sweeps` is the sweep spec itself (sweep_service.spec.SweepSpec); these are the
responses. Losses that are not finite (a diverged run) are sent as null: JSON has no infinity, and the trial's
`status` says why. Times are UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

HParamValue = bool | int | float | str
ExportFormat = Literal["csv", "parquet", "json"]


class TrialCounts(BaseModel):
    """Trials by status (db.models.TRIAL_STATUSES)."""

    pending: int = 0
    running: int = 0
    completed: int = 0
    diverged: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


# ---- sweeps -------------------------------------------------------------------------------------------


class CellNoise(BaseModel):
    """Seed noise of a cell (sweep_service/noise.py): filled in by `confirm_seeds` and `tolerance: auto`."""

    seeds: int | None = Field(description="seeds the best config ran under (null before confirmation)")
    best_mean: float | None = Field(description="the best config's mean loss over those seeds")
    best_std: float | None = Field(description="their std (ddof 1); null below two seeds")
    noise_std: float | None = Field(description="pooled std over the confirmed configs (best and near-ties)")
    tolerance: float | None = Field(description="the cell's near-tie tolerance")
    tolerance_auto: str | None = Field(description='"pending" or "measured" with `tolerance: auto`, else null')


class CellProgress(BaseModel):
    id: int
    key: str = Field(description='"optimizer/scale/chinchilla"')
    optimizer: str
    scale: str
    chinchilla: float
    strategy: str
    status: str
    round: int = Field(description="coordinate-descent round (or proposals made, for Optuna strategies)")
    trials: TrialCounts
    best_loss: float | None
    best_config: dict[str, Any] | None
    best_trial_id: int | None
    near_ties: list[dict[str, Any]] = Field(description="configs within the tolerance of the best (paper: 3e-3)")
    noise: CellNoise | None = None
    phase: int = Field(1, description="1, 2 or 3: the paper's phases (docs/PAPER.md section 4)")
    decision: dict[str, Any] | None = Field(
        None,
        description="a Phase II/III cell's decision once made, else null. Phase II: `unstable` (the hyperparameters "
        "it re-tunes), `stable` (the others, with the values every source cell's near-best set shares), `start` "
        "(the config it starts from). Phase III: `prediction` (the config it runs), `method` (robust or paper) and "
        "per hyperparameter `fits` (form, n_points, held-out error, raw value, fallback, note)",
    )


class BestSoFar(BaseModel):
    cell: str
    optimizer: str
    scale: str
    chinchilla: float
    loss: float
    config: dict[str, Any] | None
    trial_id: int | None


class SweepSummary(BaseModel):
    id: int
    name: str
    status: str
    imported: bool
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    trials: TrialCounts


class SweepProgress(SweepSummary):
    """Status, per-cell progress, best so far, compute used and time left (also the `events` payload)."""

    cells: list[CellProgress]
    best: BestSoFar | None = Field(description="the lowest-loss cell best of the sweep so far")
    device_hours: float = Field(description="compute used: the sum of the trials' device seconds / 3600")
    max_concurrent: int
    eta_seconds: float | None = Field(
        description="mean finished-trial duration x (pending + running) / max_concurrent; null when no trial "
        "has finished yet"
    )


class SweepDetail(SweepProgress):
    spec: dict[str, Any] = Field(description="the submitted sweep spec")
    claimed_by: str | None = Field(description="the dispatcher running the sweep")


class SweepPage(BaseModel):
    items: list[SweepSummary]
    total: int
    limit: int
    offset: int


# ---- trials -------------------------------------------------------------------------------------------


class TrialSummary(BaseModel):
    id: int
    sweep_id: int
    cell: str
    optimizer: str
    scale: str
    chinchilla: float
    seed: int
    round: int
    status: str
    final_loss: float | None = Field(description="final eval loss; null unless completed")
    reason: str | None = Field(description="why it diverged, failed or was cancelled")
    config: dict[str, Any]
    steps: int | None
    total_steps: int | None
    device_seconds: float | None
    started_at: datetime | None
    finished_at: datetime | None


class TrialTimings(BaseModel):
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None = Field(description="finished_at - started_at")
    device_seconds: float | None = Field(description="compute used (wall x devices)")
    tokens_per_second: float | None


class TrialDetail(TrialSummary):
    initial_loss: float | None
    attempts: int
    tokens: int | None
    worker: str | None
    optuna_trial: int | None = Field(description="the trial's number in its cell's Optuna study")
    repro: dict[str, Any] | None = Field(
        description="reproducibility record: code and library versions, device, corpus hash, token budget"
    )
    timings: TrialTimings


class TrialPage(BaseModel):
    items: list[TrialSummary]
    total: int
    limit: int
    offset: int


class CurvePointOut(BaseModel):
    step: int
    eval_loss: float | None
    train_loss: float | None


class TrialMetrics(BaseModel):
    trial_id: int
    status: str
    points: list[CurvePointOut]


# ---- best ---------------------------------------------------------------------------------------------


class BestResult(BaseModel):
    optimizer: str
    scale: str
    chinchilla: float
    non_embedding_params: int | None
    loss: float
    config: dict[str, Any] | None
    near_ties: list[dict[str, Any]]
    sweep_id: int
    sweep_name: str
    imported: bool
    cell: str
    trial_id: int | None
    cells_considered: int = Field(description="cells (over all sweeps) of this optimizer, scale and multiple")


class BestResponse(BaseModel):
    results: list[BestResult] = Field(description="one per (optimizer, scale, chinchilla), smallest scale first")


# ---- catalog ------------------------------------------------------------------------------------------


class SearchSpaceOut(BaseModel):
    grid: dict[str, list[HParamValue]]
    baseline: dict[str, HParamValue]
    fixed: dict[str, HParamValue]


class OptimizerOut(BaseModel):
    name: str
    routing: str = Field(description="which parameters get which rule, and which are decayed")
    schedule: str = Field(description="default learning-rate schedule")
    clips_itself: bool
    reference: str
    defaults: dict[str, HParamValue] = Field(description="the optimizer's own hyperparameters and defaults")
    hparams: dict[str, dict[str, HParamValue]] = Field(description="fully resolved defaults per model family")
    spaces: dict[str, SearchSpaceOut] = Field(description="default search space per model family (paper, tiny)")


class ScaleOut(BaseModel):
    name: str
    family: str
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    seq_len: int
    vocab_size: int
    non_embedding_params: int
    tokens_at_1x_chinchilla: int = Field(description="20 x non-embedding parameters")


# ---- operations ---------------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]


# ---- analysis (api/routers/analysis.py) ---------------------------------------------------------------


class SpeedupRow(BaseModel):
    """One cell's speedup over the baseline (sweep_service.analysis.speedups; PAPER.md section 5)."""

    scale: str
    optimizer: str
    chinchilla: float
    non_embedding_params: int | None
    loss: float | None = Field(description="the cell's best final loss (mean over seeds); null if none finite")
    loss_vs_baseline: float | None = Field(description="loss minus the baseline's best loss at the same scale and D")
    n_seeds: int
    d_eff: float | None = Field(description="baseline data multiple reaching the same loss; null when not finite")
    speedup: float | None = Field(description="d_eff / chinchilla; null when not finite (see beyond_asymptote)")
    speedup_ci_low: float | None
    speedup_ci_high: float | None
    loss_ci_low: float | None
    loss_ci_high: float | None
    interval_source: str = Field(
        "",
        description="where the speedup interval comes from: seeds (bootstrap over the best config's seeds), "
        "noise_estimate (the cell's measured seed noise), baseline_fit (only the baseline's points resampled), "
        "or empty (no interval)",
    )
    tied_within_noise: bool = Field(
        False,
        description="this speedup's interval overlaps another optimizer's at the same scale and multiple: "
        "tied within noise, no winner",
    )
    tied_with: list[str] = Field(default_factory=list, description="the optimizers whose intervals overlap")
    beyond_asymptote: bool = Field(description="loss at or below the baseline's beta: the speedup is infinite")
    fit_alpha: float | None = Field(description="the baseline's L(D) = fit_alpha x D^-fit_B + fit_beta at this scale")
    fit_B: float | None
    fit_beta: float | None
    fit_n_points: int
    fit_underdetermined: bool
    fit_unphysical: bool = Field(
        False,
        description="the baseline's unconstrained fit had a negative asymptote (or alpha, B <= 0); fit_* are from "
        "the fit bounded to alpha, B, beta >= 0 and the speedup is unreliable",
    )
    fit_d_min: float | None = Field(None, description="the smallest baseline multiple fitted at this scale")
    fit_d_max: float | None = Field(None, description="the largest baseline multiple fitted at this scale")
    extrapolated: bool = Field(
        False,
        description="d_eff lies outside [fit_d_min, fit_d_max] (by more than 5%): the speedup is read off the "
        "fitted curve beyond the baseline's data, an extrapolation",
    )
    extrapolation_factor: float | None = Field(
        None,
        description="d_eff / fit_d_max above the range, fit_d_min / d_eff below it, 1 inside; null when infinite "
        "(beyond_asymptote) or unknown",
    )
    note: str


class SpeedupsResponse(BaseModel):
    sweep_id: int
    baseline: str
    fit_multiples: list[float] | None = Field(description="the baseline multiples fitted; null: every one it has")
    rows: list[SpeedupRow]


class FlipRow(BaseModel):
    """One pair of optimizers at one scale and multiple (sweep_service.ranking.ranking_flips)."""

    scale: str
    chinchilla: float
    optimizer_a: str
    optimizer_b: str
    final_leader: str = Field(description="the one with the lower final eval loss; empty on an exact tie")
    settled_at: float | None = Field(
        description="fraction of training after which the pair's ranking no longer changes (0: never changed; "
        "null: tied at the end)"
    )
    n_flips: int = Field(description="sign changes of loss_a - loss_b along training")
    n_points: int
    final_gap: float | None = Field(description="loss_a - loss_b at the end of training")
    note: str


class FlipsResponse(BaseModel):
    sweep_id: int
    rows: list[FlipRow]
    note: str


class SensitivityRow(BaseModel):
    """One one-at-a-time change from a cell's best config (sweep_service.analysis.sensitivity)."""

    optimizer: str
    scale: str
    chinchilla: float
    hparam: str
    value: HParamValue | None
    best_value: HParamValue | None
    loss: float | None = Field(description="mean over seeds; null when diverged")
    best_loss: float
    delta: float | None = Field(description="loss - best_loss; null when diverged")
    diverged: bool
    n_seeds: int


class SensitivityResponse(BaseModel):
    sweep_id: int
    rows: list[SensitivityRow]


class HeldOutCell(BaseModel):
    scale: str
    chinchilla: float


class HparamFitOut(BaseModel):
    """How one hyperparameter was predicted (sweep_service/scaling.py; PAPER.md section 4, Phase III)."""

    name: str
    method: Literal["robust", "paper"]
    form: str = Field(
        description="paper: power_law, constant, not_fitted or failed; robust: constant, nearest_cell, log_linear, "
        "bounded_power_law or not_fitted (the form used; nearest_cell after a fallback)"
    )
    params: list[float] = Field(
        description="power laws: (A, a, b, B) of A x N^a x C^b + B, N raw; log_linear: (c0, cN, cC) of "
        "log h = c0 + cN log N + cC log C; empty otherwise"
    )
    error: float | None = Field(
        description="robust: the form's mean leave-one-cell-out error (|log(pred/actual)| for positive values, "
        "else relative); paper: the held-out cell's relative error"
    )
    form_errors: dict[str, float | None] = Field(description="robust: each candidate form's leave-one-out error")
    n_points: int = Field(description="cells fitted (paper: the 12 cells, of which the 10 middle ones are fitted)")
    holdout: HeldOutCell | None = Field(description="paper: the held-out cell (the largest)")
    holdout_actual: HParamValue | None
    holdout_predicted: HParamValue | None
    raw: HParamValue | None = Field(description="the form's value at the target: unrounded, before guard and snap")
    predicted: HParamValue | None = Field(description="the prediction at the target (snapped when asked)")
    low: float | None = Field(None, description="robust: interval from the leave-one-out residuals, low end")
    high: float | None = Field(None, description="robust: interval from the leave-one-out residuals, high end")
    fallback: bool = Field(
        False,
        description="robust: raw was outside [min/2, 2 x max] of the cells' values (or not finite): predicted is "
        "the nearest cell's value",
    )
    note: str


class PredictResponse(BaseModel):
    optimizer: str
    non_embedding_params: int
    chinchilla: float
    family: str = Field(
        description='model family whose cells were fitted (and whose grid snaps); "custom" for one sweep\'s cells '
        "(`sweep`) that are not one catalog family's presets: nothing snaps, every name in their configs is fitted"
    )
    snap: bool
    config: dict[str, HParamValue | None] = Field(description="the predicted hyperparameters")
    fits: list[HparamFitOut]
    cells_used: int
    scales_used: dict[str, int] = Field(description="scale -> non-embedding parameters of the fitted cells")
    sweeps_used: list[int]
    note: str
    dropped: list[str] = Field(
        default_factory=list,
        description="names in the fitted configs that the trainer does not take for this optimizer: not predicted",
    )
    fallbacks: list[str] = Field(default_factory=list, description="hyperparameters whose fit has fallback true")
    method: Literal["robust", "paper"] = Field("robust", description="how the hyperparameters were fitted")


class SweepUpdate(BaseModel):
    """PATCH /sweeps/{id}: the fields to change; the others stay. Bounds are the spec's (sweep_service/spec.py)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"
    )
    budget: int | None = Field(default=None, ge=1, le=100_000, description="most trials per cell")
    max_concurrent: int | None = Field(default=None, ge=1, le=10_000, description="trials running at once")
