"""The `pause`, `resume` and `delete` commands: thin adapters over sweep_service.service, the same use cases as
`POST /sweeps/{id}/pause`, `/resume` and `DELETE /sweeps/{id}`. A missing sweep or a status that forbids the
change is one error line (exit 2), like every other usage error of the CLI."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from sweep_service import service


def add_parsers(sub: Any, database: Callable[[], Any], usage_error: type[Exception]) -> None:
    """Register the commands; `database` opens the configured database, `usage_error` is the CLI's error line."""

    def run(action: Callable[[Any, int], str]) -> Callable[[argparse.Namespace], int]:
        def command(args: argparse.Namespace) -> int:
            try:
                print(action(database(), args.sweep_id))
            except (service.NotFound, service.Conflict) as exc:
                raise usage_error(str(exc)) from None
            return 0

        return command

    def pause(db: Any, sweep_id: int) -> str:
        service.pause(db, sweep_id)
        return f"sweep {sweep_id} paused: trials in flight go back to pending; `sweep-service resume {sweep_id}`"

    def resume(db: Any, sweep_id: int) -> str:
        state = service.resume(db, sweep_id)
        return f"sweep {sweep_id} {state.status}: a dispatcher resumes it where it stopped"

    def delete(db: Any, sweep_id: int) -> str:
        gone = service.delete(db, sweep_id)
        return f"sweep {sweep_id} deleted: {gone.cells} cell(s), {gone.trials} trial(s), {gone.studies} Optuna studies"

    for name, action, text in (
        ("pause", pause, "stop a sweep resumably (trials in flight back to pending); no dispatcher claims it"),
        ("resume", resume, "make a paused sweep claimable again"),
        ("delete", delete, "delete a sweep that is not running, with its trials, curves and Optuna studies"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("sweep_id", type=int)
        p.set_defaults(func=run(action))
