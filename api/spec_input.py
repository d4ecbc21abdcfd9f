"""Reading a submitted sweep spec: strict JSON or YAML by Content-Type, the spec's own validation, what the
sweep needs (cells under SWEEP_MAX_CELLS, resources the embedded Ray can give), and the data-source rule.

Every refusal is a 422 whose `detail` lists one entry per problem, shaped like FastAPI's validation errors
(`loc`, `msg`, `type`) plus `field`, the spec's dotted field path (sweep_service.spec.SpecError).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml
from fastapi import HTTPException, Request

from sweep_service.resources import local_problem
from sweep_service.settings import Settings
from sweep_service.spec import SpecError, SweepPlan, parse_spec, plan

BUILTIN_DATA = "builtin"
# "s3://...", "http:...", "file:/..." : a scheme is two or more letters then a colon (a Windows drive is one).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")


def spec_errors(errors: list[tuple[str, str]]) -> HTTPException:
    """A 422 naming each field: `field` is the spec's dotted path, `loc` the same as FastAPI writes it."""
    detail = []
    for field, message in errors:
        parts: list[str | int] = [
            int(p) if p.isascii() and p.isdigit() else p for p in field.split(".") if p and field != "spec"
        ]
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
        raise spec_errors([("data", f"{value[:200]!r} does not exist under the data roots")])
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

    custom = doc.get("custom_scales")
    scales = [*SCALES, *(custom if isinstance(custom, dict) else {})]  # an external sweep's own scales are known
    problems: list[tuple[str, str]] = []
    for key, valid, kind in (("optimizers", REGISTRY, "optimizer"), ("scales", scales, "scale")):
        values = doc.get(key)
        if isinstance(values, list):
            for i, name in enumerate(values):
                problems += unknown(f"{key}.{i}", name, valid, kind)
    cells = doc.get("cells")
    if isinstance(cells, list):
        for i, cell in enumerate(cells):
            if isinstance(cell, dict):
                problems += unknown(f"cells.{i}.optimizer", cell.get("optimizer"), REGISTRY, "optimizer")
                problems += unknown(f"cells.{i}.scale", cell.get("scale"), scales, "scale")
    search = doc.get("search")
    if isinstance(search, dict):
        for name in search:
            problems += unknown(f"search.{name}", name, REGISTRY, "optimizer")
    return problems


def validate_spec(doc: dict[str, Any], settings: Settings, local_ray: bool = False) -> tuple[dict[str, Any], SweepPlan]:
    """The document as it will be stored (data normalized) and its plan; a 422 listing every problem if not valid.

    `local_ray`: the sweep will run on a Ray this server starts (`serve` with its dispatcher, no RAY_ADDRESS), so
    resources this machine lacks are refused now rather than waited for forever (sweep_service/resources.py).
    """
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
        sweep_plan = plan(spec, max_cells=settings.max_cells)
    except SpecError as exc:
        raise spec_errors(exc.errors) from None
    except (KeyError, TypeError, ValueError) as exc:  # a spec the planner could not expand: still the input's fault
        raise spec_errors([("spec", f"cannot plan this spec: {str(exc)[:200]}")]) from None
    if local_ray and sweep_plan.executor != "external":  # outside workers run an external sweep's trials
        short = local_problem(sweep_plan.cpu, sweep_plan.gpu, settings.ray_num_cpus)
        if short is not None:
            raise spec_errors([("resources", short)])
    stored = dict(doc)
    data = check_data_source(sweep_plan.data, settings.data_root_paths())
    if data != sweep_plan.data:
        stored["data"] = data
    return stored, sweep_plan


# Media types of a spec body (RFC 8259 for JSON; RFC 9512 registers application/yaml, the others are in use).
JSON_TYPES = frozenset({"application/json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


def parse_yaml_object(body: bytes) -> dict[str, Any]:
    """A YAML mapping, without anchors or aliases: an alias repeats a node without copying it, so a small body
    could stand for billions of nodes to walk ("billion laughs")."""
    if not body.strip():
        raise spec_errors([("spec", "the request body must be a sweep spec (a YAML mapping)")])
    try:
        text = body.decode("utf-8")
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise spec_errors([("spec", "YAML anchors and aliases (&, *) are not accepted; write the values out")])
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise spec_errors([("spec", f"not valid YAML: {' '.join(str(exc).split())[:200]}")]) from None
    if not isinstance(doc, dict):
        raise spec_errors([("spec", "a sweep spec is a YAML mapping (name, optimizers, scales, ...)")])
    return doc


async def read_spec_document(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (Content-Type application/json, or none) or a YAML mapping
    (application/yaml and the like); any other Content-Type is a 415. A dependency, so it runs after the auth
    check (an unauthenticated caller learns nothing about the body), and under the body-size limit
    (api.middleware)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in YAML_TYPES:
        return parse_yaml_object(await request.body())
    if media_type and media_type not in JSON_TYPES:
        shown = ", ".join(sorted(JSON_TYPES | YAML_TYPES))
        raise HTTPException(415, detail=f"Content-Type {media_type[:100]!r} is not a sweep spec; send one of {shown}")
    return parse_json_object(await request.body())
