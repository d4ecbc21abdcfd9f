"""Reading a submitted sweep spec: strict JSON, the spec's own validation, and the data-source rule.

Every refusal is a 422 whose `detail` lists one entry per problem, shaped like FastAPI's validation errors
(`loc`, `msg`, `type`) plus `field`, the spec's dotted field path (sweep_service.spec.SpecError).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from sweep_service.spec import SpecError, SweepPlan, parse_spec, plan

BUILTIN_DATA = "builtin"
# "s3://...", "http:...", "file:/..." : a scheme is two or more letters then a colon (a Windows drive is one).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")


def spec_errors(errors: list[tuple[str, str]]) -> HTTPException:
    """A 422 naming each field: `field` is the spec's dotted path, `loc` the same as FastAPI writes it."""
    detail = []
    for field, message in errors:
        parts: list[str | int] = [int(p) if p.isdigit() else p for p in field.split(".") if p and field != "spec"]
        detail.append({"loc": ["body", *parts], "field": field, "msg": message, "type": "value_error"})
    return HTTPException(422, detail=detail)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf, which no database column or JSON response can carry
        raise ValueError(f"number {text[:32]} is out of range")
    return value


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Strict JSON: no NaN/Infinity, no number that overflows a float, an object at the top."""
    if not body.strip():
        raise spec_errors([("spec", "the request body must be a sweep spec (a JSON object)")])
    try:
        doc = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise spec_errors([("spec", f"not valid JSON: {str(exc)[:200]}")]) from None
    if not isinstance(doc, dict):
        raise spec_errors([("spec", "a sweep spec is a JSON object (name, optimizers, scales, ...)")])
    return doc


def string_problems(doc: Any) -> list[tuple[str, str]]:
    """Strings (keys and values) no database can store: NUL characters (PostgreSQL text) and lone surrogates
    (not UTF-8). Walked without recursion, so a deeply nested document cannot exhaust the stack."""
    problems: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        path, value = stack.pop()
        items: list[tuple[str, Any]] = []
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else str(key)
                if _bad_string(str(key)):
                    problems.append((path or "spec", f"key {key!r} contains a NUL character or a lone surrogate"))
                items.append((where, item))
        elif isinstance(value, list):
            items = [(f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value)]
        elif isinstance(value, str) and _bad_string(value):
            problems.append((path or "spec", "text contains a NUL character or a lone surrogate"))
        stack.extend(items)
    return sorted(problems)


def _bad_string(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_data_source(value: str, roots: list[Path]) -> str:
    """The `data` of a sweep submitted over REST: "builtin", or a path inside one of the data roots.

    Returns what to store: "builtin" or the resolved absolute path. A relative path is taken relative to each
    root in turn (the first root that holds it wins), so a worker sees the same file whatever its working
    directory. Refused: URLs, absolute paths outside the roots, relative paths that escape with `..`, and
    symlinks that point out of a root (the path is resolved before the check).
    """
    if value == BUILTIN_DATA:
        return value
    if not value.strip():
        raise spec_errors([("data", "empty; use 'builtin' or a path under the data roots")])
    if _URL.match(value):
        raise spec_errors([("data", "URLs are not accepted; use 'builtin' or a path under the data roots")])
    if not roots:
        raise spec_errors([("data", "this server accepts only 'builtin' (no data roots: SWEEP_DATA_ROOTS is empty)")])
    path = Path(value)
    candidates = [path] if path.is_absolute() else [root / path for root in roots]
    inside: list[Path] = []
    for candidate in candidates:
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if any(resolved == root or resolved.is_relative_to(root) for root in roots):
            inside.append(resolved)
    # A relative path is taken from the first root that holds it (else the first root it stays inside).
    for resolved in inside:
        try:
            if resolved.exists():
                return str(resolved)
        except OSError:
            continue
    if inside:
        return str(inside[0])
    shown = ", ".join(str(r) for r in roots)
    raise spec_errors([("data", f"{value[:200]!r} is outside the data roots ({shown})")])


def name_problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Unknown optimizer and scale names in a raw document, located as sweep_service.spec.plan locates them;
    for a document that fails the spec's own validation first (whose names plan() never sees)."""
    from workers.model import SCALES
    from workers.optimizers import REGISTRY

    def unknown(field: str, value: Any, valid: Any, kind: str) -> list[tuple[str, str]]:
        if isinstance(value, str) and value not in valid:
            return [(field, f"unknown {kind} {value!r}; valid: {', '.join(valid)}")]
        return []

    problems: list[tuple[str, str]] = []
    for key, valid, kind in (("optimizers", REGISTRY, "optimizer"), ("scales", SCALES, "scale")):
        values = doc.get(key)
        if isinstance(values, list):
            for i, name in enumerate(values):
                problems += unknown(f"{key}.{i}", name, valid, kind)
    cells = doc.get("cells")
    if isinstance(cells, list):
        for i, cell in enumerate(cells):
            if isinstance(cell, dict):
                problems += unknown(f"cells.{i}.optimizer", cell.get("optimizer"), REGISTRY, "optimizer")
                problems += unknown(f"cells.{i}.scale", cell.get("scale"), SCALES, "scale")
    search = doc.get("search")
    if isinstance(search, dict):
        for name in search:
            problems += unknown(f"search.{name}", name, REGISTRY, "optimizer")
    return problems


def validate_spec(doc: dict[str, Any], data_roots: list[Path]) -> tuple[dict[str, Any], SweepPlan]:
    """The document as it will be stored (data normalized) and its plan; a 422 listing every problem if not valid."""
    problems = string_problems(doc)
    if problems:
        raise spec_errors(problems)
    try:
        spec = parse_spec(doc)
    except SpecError as exc:
        # The names plan() would refuse are checked now too, so every problem arrives in one answer (an
        # unknown optimizer is not held back until the field errors are fixed).
        known = {field for field, _ in exc.errors}
        raise spec_errors([*exc.errors, *(e for e in name_problems(doc) if e[0] not in known)]) from None
    try:
        sweep_plan = plan(spec)
    except SpecError as exc:
        raise spec_errors(exc.errors) from None
    except (KeyError, TypeError, ValueError) as exc:  # a spec the planner could not expand: still the input's fault
        raise spec_errors([("spec", f"cannot plan this spec: {str(exc)[:200]}")]) from None
    stored = dict(doc)
    data = check_data_source(sweep_plan.data, data_roots)
    if data != sweep_plan.data:
        stored["data"] = data
    return stored, sweep_plan


async def read_spec_document(request: Request) -> dict[str, Any]:
    """The request body as a JSON object. A dependency, so it runs after the auth check (an unauthenticated
    caller learns nothing about the body), and under the body-size limit (api.middleware)."""
    return parse_json_object(await request.body())
