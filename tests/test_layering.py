"""DESIGN.md's layering holds in the code: dependencies point `api -> sweep_service -> db`; `workers/` (shipped to
Ray workers) imports none of the service; `db/` imports neither the domain nor the API; the REST routers and the
CLI are adapters over sweep_service.service and touch no ORM model, query or repository; and ORM objects stay
inside `db/`: no code outside it names a mapped class of db.models (db/ hands out records, db/records.py) (issue 15).

Read from the source with ast (every import, also the lazy ones inside functions), so a new import that breaks
a rule fails here, with the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from db.models import Base

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


# Every declarative class of db.models, read from its registry so that a new model is covered: Base and the mapped
# classes (Sweep, Cell, Trial, CurvePoint, SuggestionRequest, ...). Its plain names (status tuples, config_key,
# utcnow) stay importable everywhere.
ORM_CLASSES = frozenset({Base.__name__, *(mapper.class_.__name__ for mapper in Base.registry.mappers)})
MODELS = "db.models"
# The code outside db/ that must hold no ORM object (tests may build rows and schemas with the models).
OUTSIDE_DB = ("api", "sweep_service", "workers", "bench", "examples")


def _orm_uses(source: str, name: str) -> list[str]:
    """Where the module `name` (its `source`) names an ORM class of db.models: `from db.models import Cell` (or
    `*`), or `models.Cell` / `db.models.Cell` through a module import (`from db import models`, `import db.models
    as m`)."""
    tree = ast.parse(source, filename=name)
    aliases: set[str] = set()  # names bound to the db.models module, dotted for `import db.models`
    bad: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == MODELS:
            bad += [(node.lineno, a.name) for a in node.names if a.name in ORM_CLASSES or a.name == "*"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "db":
            aliases.update(a.asname or a.name for a in node.names if a.name == "models")
        elif isinstance(node, ast.Import):
            aliases.update(a.asname or a.name for a in node.names if a.name == MODELS)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ORM_CLASSES and ast.unparse(node.value) in aliases:
            bad.append((node.lineno, node.attr))
    return [f"{name}:{line}: uses {MODELS}.{cls}" for line, cls in sorted(bad)]


def test_the_orm_classes_are_read_from_the_models() -> None:
    assert {"Base", "Sweep", "Cell", "Trial", "CurvePoint", "SuggestionRequest"} <= ORM_CLASSES


def test_the_orm_check_finds_each_way_of_naming_a_model() -> None:
    sample = (
        "from db.models import TRIAL_ENDED, Cell, config_key\n"
        "from db import models\n"
        "import db.models\n"
        "import db.models as m\n"
        "def f():\n    from db.models import Base\n"
        "x = models.Trial\ny = db.models.Sweep\nz = m.CurvePoint\nok = models.config_key\n"
    )
    assert _orm_uses(sample, "sample.py") == [
        "sample.py:1: uses db.models.Cell",
        "sample.py:6: uses db.models.Base",
        "sample.py:7: uses db.models.Trial",
        "sample.py:8: uses db.models.Sweep",
        "sample.py:9: uses db.models.CurvePoint",
    ]


def test_no_orm_class_outside_db() -> None:
    """db/ returns records (db/records.py) and exposes compare-and-set transitions (db/transitions.py, db.repository);
    an ORM object outside it could be changed behind them, or read detached or stale."""
    outside = [p for folder in OUTSIDE_DB for p in _py(folder)]
    assert outside, "no source found: the folder list is stale"
    found = [bad for path in outside for bad in _orm_uses(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == [], "read and write through db functions, which return records (db/records.py)"
