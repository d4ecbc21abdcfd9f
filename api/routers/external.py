"""External trials: outside workers pull leased trials of an `executor: external` sweep and report results.

    POST /sweeps/{id}/suggestions  {"worker", "count"}            -> {"trials": [...], "done": bool}
    POST /trials/{id}/heartbeat    {"worker"}                     -> {"lease_expires_at"}
    POST /trials/{id}/metrics      {"worker", "points": [...]}    -> {"accepted", "stop", "status", "reason"}
    POST /trials/{id}/complete     {"worker", "final_loss"} or {"worker", "status", "reason"}

Every write needs a write token (a read-only token gets 403, api.deps.authorize). 409 when the sweep is not
external, or when the trial's lease is no longer the worker's (it expired and was handed to another). The
use cases are sweep_service.external; this module only parses and renders.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import DatabaseDep, Guarded, IdPath, SettingsDep
from sweep_service import external

router = APIRouter(tags=["external"], dependencies=Guarded)

# Names of workers are stored in sweep_trials.worker, String(200); printable, no control characters.
Worker = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
# A worker asks for at most this many trials at once (a node's worth of slots; larger asks hoard leases).
MAX_COUNT = 256
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x20-\x7e]+$",
        description="a retry with the same key returns the trials the first request leased",
    ),
]
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "not an external sweep, or the trial's lease is no longer this worker's"}
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SuggestIn(_Body):
    worker: Worker
    count: int = Field(default=1, ge=1, le=MAX_COUNT)


class SuggestedTrial(BaseModel):
    id: int
    cell: str
    optimizer: str
    scale: str
    chinchilla: float
    config: dict[str, float | int | bool | str]
    seed: int
    round: int
    lease_expires_at: str
    lease_seconds: float


class SuggestOut(BaseModel):
    trials: list[SuggestedTrial]
    done: bool


class HeartbeatIn(_Body):
    worker: Worker


class HeartbeatOut(BaseModel):
    lease_expires_at: str


class Point(_Body):
    step: int = Field(ge=0, le=2**31 - 1)  # curve_points.step is a 32-bit INTEGER
    loss: float  # NaN/inf allowed: the divergence rule judges them


class MetricsIn(_Body):
    worker: Worker
    points: list[Point] = Field(min_length=1, max_length=10_000)


class TrialOutcome(BaseModel):
    trial_id: int
    status: str
    final_loss: float | None
    reason: str | None


class MetricsOut(BaseModel):
    accepted: int
    stop: bool  # the divergence rule ended the trial: stop training
    status: str
    reason: str | None


class CompleteIn(_Body):
    worker: Worker
    final_loss: float | None = None
    status: Literal["diverged", "failed"] | None = None
    reason: str | None = Field(default=None, max_length=5000)

    @model_validator(mode="after")
    def _one_outcome(self) -> CompleteIn:
        if (self.final_loss is None) == (self.status is None):
            raise ValueError("give `final_loss`, or `status` (diverged or failed) with a `reason`")
        return self


def _http(exc: Exception) -> HTTPException:
    if isinstance(exc, external.NotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))
    return HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))


@router.post("/sweeps/{sweep_id}/suggestions", response_model=SuggestOut, responses=CONFLICT)
def suggestions(
    sweep_id: IdPath,
    body: SuggestIn,
    db: DatabaseDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> SuggestOut:
    """Lease up to `count` runnable trials to `worker` (coordinate descent: nothing from a cell's next round until
    its current one has finished, so the list may be empty); `done` once the sweep is complete."""
    try:
        answer = external.suggest(
            db, sweep_id, body.worker, body.count, settings.trial_lease_seconds, key=idempotency_key
        )
    except (external.NotFound, external.Conflict) as exc:
        raise _http(exc) from None
    return SuggestOut.model_validate(answer)


@router.post("/trials/{trial_id}/heartbeat", response_model=HeartbeatOut, responses=CONFLICT)
def heartbeat(trial_id: IdPath, body: HeartbeatIn, db: DatabaseDep, settings: SettingsDep) -> HeartbeatOut:
    """Extend the worker's lease by SWEEP_TRIAL_LEASE_SECONDS."""
    try:
        until = external.heartbeat(db, trial_id, body.worker, settings.trial_lease_seconds)
    except (external.NotFound, external.Conflict) as exc:
        raise _http(exc) from None
    return HeartbeatOut(lease_expires_at=until.isoformat() + "Z")


@router.post("/trials/{trial_id}/metrics", response_model=MetricsOut, responses=CONFLICT)
def metrics(trial_id: IdPath, body: MetricsIn, db: DatabaseDep) -> MetricsOut:
    """Append (step, loss) points to the trial's curve; `stop` when one broke the divergence rule."""
    try:
        outcome = external.report(db, trial_id, body.worker, [(p.step, p.loss) for p in body.points])
    except (external.NotFound, external.Conflict) as exc:
        raise _http(exc) from None
    if outcome is None:
        return MetricsOut(accepted=len(body.points), stop=False, status="running", reason=None)
    return MetricsOut(accepted=len(body.points), stop=True, status=outcome.status, reason=outcome.reason)


@router.post("/trials/{trial_id}/complete", response_model=TrialOutcome, responses=CONFLICT)
def complete(trial_id: IdPath, body: CompleteIn, db: DatabaseDep) -> TrialOutcome:
    """Record the result (a repeat of the same result is answered 200 again)."""
    try:
        outcome = external.complete(
            db, trial_id, body.worker, final_loss=body.final_loss, status=body.status, reason=body.reason
        )
    except (external.NotFound, external.Conflict) as exc:
        raise _http(exc) from None
    return TrialOutcome(
        trial_id=outcome.trial_id, status=outcome.status, final_loss=outcome.final_loss, reason=outcome.reason
    )
