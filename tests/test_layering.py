"""DESIGN.md's layering holds in the code: dependencies point `api -> sweep_service -> db`; `workers/` (shipped to
Ray workers) imports none of the service; `db/` imports neither the domain nor the API; the REST routers and the
CLI are adapters over sweep_service.service and touch no ORM model, query or repository (issue 15).

Read from the source with ast (every import, also the lazy ones inside functions), so a new import that breaks
a rule fails here, with the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The db modules an adapter must not import: it calls a use case instead (db.session's Database, handed to the
# use cases, and db.migrate, run at start-up, are the composition root's business and stay allowed).
DB_INTERNALS = ("db.models", "db.queries", "db.repository", "db.results", "db.transitions")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in `path`; `from pkg import mod` counts as pkg.mod too."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return out


def _offending(paths: list[Path], banned: tuple[str, ...]) -> list[str]:
    bad = []
    for path in paths:
        for line, module in _imports(path):
            if any(module == b or module.startswith(b + ".") for b in banned):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    return sorted(set(bad))


def _py(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_workers_import_nothing_of_the_service() -> None:
    assert _offending(_py("workers"), ("api", "db", "sweep_service", "fastapi", "sqlalchemy", "alembic")) == []


def test_db_imports_neither_the_domain_nor_the_api_nor_the_workers() -> None:
    assert _offending(_py("db"), ("api", "sweep_service", "workers", "fastapi")) == []


def test_the_domain_imports_the_api_only_in_the_composition_root() -> None:
    domain = [p for p in _py("sweep_service") if p.name != "cli.py"]  # cli.py's `serve` imports the app, lazily
    assert _offending(domain, ("api", "fastapi")) == []


def _adapters() -> list[Path]:
    routers = [p for p in _py("api/routers") if p.name != "__init__.py"]
    cli = sorted((ROOT / "sweep_service").glob("cli*.py"))
    return [*routers, ROOT / "api" / "views.py", *cli]


@pytest.mark.parametrize("path", _adapters(), ids=lambda p: str(p.relative_to(ROOT)))
def test_adapters_touch_no_orm_query_or_repository(path: Path) -> None:
    assert _offending([path], DB_INTERNALS) == [], "call a use case of sweep_service.service instead"
