"""The Ray Tune trainable: one trial = one `workers.trainer.train` call, its evaluations streamed by tune.report.

The config Tune hands over is {"trial_id": <database id>, "run": <RunConfig fields>}. Every report carries
`final_eval_loss` (the loss so far) so that Tune's metric check passes, and `kind` ("eval" or "final").
The final report names the worker (host:pid) and carries the reproducibility record as one JSON string,
`info_json`: Ray Tune flattens nested dicts in a result into "info/torch", "info/data/sha256", ... keys before
a Searcher sees it, so a nested `info` would not arrive as one value; the resolved hyperparameters come as
`hparams_json` for the same reason.
A configuration error (ValueError) is a recorded failure with its message, not a crash to retry; any other
exception propagates, so Tune retries the trial on a fresh worker up to its failure limit.
"""

from __future__ import annotations

import json
import math
import os
import socket
from typing import Any

from ray import tune

from workers.trainer import DivergenceRule, RunConfig, train


def run_config_from(d: dict[str, Any]) -> RunConfig:
    fields = dict(d)
    fields["divergence"] = DivergenceRule(**fields.get("divergence", {}))
    return RunConfig(**fields)


def worker_name() -> str:
    """host:pid of this process: which machine and worker ran a trial (the trial's `worker` column)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def trainable(config: dict[str, Any]) -> None:
    run = run_config_from(config["run"])

    def report(event: dict[str, Any]) -> None:
        if event["kind"] == "eval":
            tune.report(
                {
                    "kind": "eval",
                    "step": event["step"],
                    "eval_loss": event["eval_loss"],
                    "train_loss": event.get("train_loss", math.nan),
                    "final_eval_loss": event["eval_loss"],
                }
            )

    try:
        result = train(run, report=report)
    except ValueError as exc:
        tune.report(
            {
                "kind": "final",
                "status": "failed",
                "reason": str(exc),
                "final_eval_loss": math.inf,
                "worker": worker_name(),
            }
        )
        return
    tune.report(
        {
            "kind": "final",
            "status": result.status,
            "reason": result.reason,
            "final_eval_loss": result.final_eval_loss,
            "initial_eval_loss": result.initial_eval_loss,
            "steps": result.steps,
            "total_steps": result.total_steps,
            "tokens": result.tokens,
            "tokens_per_second": result.tokens_per_second,
            "wall_seconds": result.wall_seconds,
            "info_json": json.dumps(result.info),
            "worker": worker_name(),
            # The hyperparameters the trainer resolved (defaults merged), as one string for the same reason.
            "hparams_json": json.dumps(result.hparams),
        }
    )
