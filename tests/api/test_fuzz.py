"""Schema fuzzing: schemathesis generates requests from the app's own OpenAPI schema, valid ones and invalid
ones, and every answer must be a non-5xx whose status code, media type and body are documented.
SQLite only, a bounded budget.

One test per (operation, mode), listed from the app's schema at collection, so a new endpoint is fuzzed
without a new test (schemathesis' own pytest loader does not run under pytest 9, so the operations are
driven through `APIOperation.as_strategy` and Hypothesis directly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from api_builders import T, make_settings, store_sweep
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from db.session import Database

EXAMPLES = 25  # per operation and mode: the whole file stays well under a minute on 2 cores
# The event stream of a queued sweep stays open by design (a fuzzer would wait forever); its one input, the
# sweep id, has the same type as every other id and is covered by test_events.py.
SKIP = ("/events",)


def _cases() -> list[Any]:
    """(method, path, mode) for every operation; invalid requests only where there is an input to spoil."""
    app = create_app("sqlite:///:memory:", make_settings(Path("unused")))
    paths: dict[str, Any] = app.openapi()["paths"]
    app.state.db.dispose()
    cases = []
    for path, item in paths.items():
        for method, operation in item.items():
            if path.endswith(SKIP):
                continue
            modes = [GenerationMode.POSITIVE]
            if operation.get("parameters") or operation.get("requestBody"):
                modes.append(GenerationMode.NEGATIVE)
            for mode in modes:
                label = "valid" if mode == GenerationMode.POSITIVE else "invalid"
                cases.append(pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {label}"))
    return cases


@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_no_request_is_a_server_error(tmp_path: Path, method: str, path: str, mode: GenerationMode) -> None:
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    app = create_app(url, make_settings(tmp_path, SWEEP_DATA_ROOTS=str(tmp_path), SWEEP_MAX_BODY_BYTES=20_000))
    db = Database(url)
    store_sweep(db, {"adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.0, curve=[(0, 5.0, 5.1)]), T({"lr": 2e-3})]})
    db.dispose()
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        # Every answer documented: its status code, its media type (problem+json for errors) and its body.
        case.call_and_validate(
            checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
        )

    try:
        run()
    finally:
        app.state.db.dispose()
