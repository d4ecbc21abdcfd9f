from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from db import repository as repo
from db.migrate import upgrade
from db.session import Database, scrub_password
from sweep_service.cli import main, masked_url, near_tie_text, parse_value
from sweep_service.settings import get_settings


def test_parse_value() -> None:
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("1e-3") == 1e-3
    assert parse_value("true") is True
    assert parse_value("cosine") == "cosine"


def test_train_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--scale", "tiny-130k", "--chinchilla", "0.05", "--set", "warmup=4", "--json", "--quiet"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("final_eval_loss", "initial_eval_loss", "status", "steps", "tokens", "tokens_per_second"):
        assert key in out
    assert out["status"] == "completed" and out["steps"] == 32 and out["tokens"] == 32 * 32 * 128
    assert out["final_eval_loss"] < out["initial_eval_loss"]
    assert out["hparams"]["warmup"] == 4


def test_diverged_json_is_valid_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--scale", "tiny-130k", "--chinchilla", "0.05", "--set", "lr=1000", "--set", "warmup=0"]
    assert main([*args, "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "diverged" and out["final_eval_loss"] == "inf"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale", "7b"], "unknown scale '7b'; valid scales: 130m"),
        (["--scale", "tiny-130k", "--optimizer", "sgd"], "unknown optimizer 'sgd'; valid optimizers: "),
        (["--scale", "tiny-130k", "--set", "lrr=1"], "unknown hyperparameter 'lrr' for optimizer 'adamw'; valid:"),
        (["--scale", "tiny-130k", "--set", "lr"], "--set expects key=value"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


# ---- bad input to train: one line, exit status 2, before any training ----------------------------------------

TINY = ["train", "--scale", "tiny-130k", "--chinchilla", "0.02", "--set", "warmup=2", "--quiet"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "unknown device 'tpu'; valid: auto, cpu, cuda, cuda:N"),
        (["--device", "cuda:x"], "unknown device 'cuda:x'; valid: auto, cpu, cuda, cuda:N"),
        (["--chinchilla", "-1"], "--chinchilla must be a finite number > 0"),
        (["--chinchilla", "0"], "--chinchilla must be a finite number > 0"),
        (["--chinchilla", "nan"], "--chinchilla must be a finite number > 0"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--max-steps", "0"], "--max-steps must be at least 1, got 0"),
        (["--checkpoint-every", "5"], "--checkpoint-every needs --checkpoint-dir"),
        (["--set", "lr=abc"], "--set lr=abc: expected a float"),
        (["--set", "lr=true"], "--set lr=true: expected a float"),
        (["--set", "batch_size=abc"], "--set batch_size=abc: expected an integer"),
        (["--set", "warmup=2.5"], "--set warmup=2.5: expected an integer"),
    ],
)
def test_bad_train_numbers_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sweep-service: error: ") and message in err, err
    assert err.count("\n") == 1


def test_cuda_where_there_is_none_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    device, message = (
        ("cuda:99", "no such CUDA device") if torch.cuda.is_available() else ("cuda", "CUDA is not available")
    )
    assert main([*TINY, "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sweep-service: error: ") and message in err and err.count("\n") == 1, err


def test_spec_that_is_a_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"sweep-service: error: {tmp_path}: is a directory, not a spec file (e.g. examples/quickstart.yaml)\n"


def test_help_and_status_do_not_import_torch() -> None:
    code = (
        "import sys, sweep_service.cli; print(sorted(m for m in ('torch', 'workers.optimizers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- the database commands -------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """The CLI's default database (SQLite under SWEEP_HOME), migrated; settings are read once, so re-read."""
    monkeypatch.setenv("SWEEP_HOME", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    get_settings.cache_clear()
    url = get_settings().db_url()
    upgrade(url)
    db = Database(url)
    yield db
    db.dispose()
    get_settings.cache_clear()


def add_sweep(db: Database, name: str, cells: dict[str, tuple[float, int]] | None = None) -> int:
    """A finished sweep whose cells ("optimizer/scale/chinchilla": (best loss, near-ties)) have a recorded best."""
    with db.session() as s:
        sweep = repo.create_sweep(s, name, {"name": name})
        for key, (loss, ties) in (cells or {}).items():
            optimizer, scale, multiple = key.split("/")
            config = {"lr": loss / 1000}
            repo.add_cell(
                s,
                sweep.id,
                key=key,
                optimizer=optimizer,
                scale=scale,
                chinchilla=float(multiple),
                strategy="coordinate_descent",
                space={},
                status="converged",
                best_loss=loss,
                best_config=config,
                best_trial_id=None,
                near_ties=[config] + [{"lr": i} for i in range(1, ties)],
            )
        return int(sweep.id)


CELLS = {
    "muon/130m/1": (3.46, 1),
    "muon/130m/16": (3.19, 3),  # more data, lower loss: it must not hide the 1x cell
    "muon/tiny-130k/1": (4.5, 1),
    "adamw/130m/1": (3.5, 1),
    "muon2/1.3b/1": (3.0, 1),  # imported names the catalog lacks
}


def best(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["best", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_best_fully_specified_is_one_answer(home: Database, capsys: pytest.CaptureFixture[str]) -> None:
    sweep_id = add_sweep(home, "paper", CELLS)
    code, out, _ = best(capsys, "--optimizer", "muon", "--scale", "130m", "--chinchilla", "16", "--json")
    assert code == 0
    answer = json.loads(out)
    assert answer["loss"] == 3.19 and answer["chinchilla"] == 16 and answer["sweep_id"] == sweep_id
    code, out, _ = best(capsys, "--optimizer", "muon", "--scale", "130m", "--chinchilla", "16")
    assert code == 0 and out.startswith("muon at 130m, 16x Chinchilla: loss 3.1900\n")
    assert "3 configs within tolerance of the best, itself included" in out
    code, out, _ = best(capsys, "--optimizer", "muon", "--scale", "130m", "--chinchilla", "1")
    assert "1 config within tolerance (the best itself)" in out and "near-tie configs" not in out
    # --scale and --chinchilla without --optimizer: the winner there, across optimizers (comparable losses).
    code, out, _ = best(capsys, "--scale", "130m", "--chinchilla", "1", "--json")
    assert code == 0 and json.loads(out)["optimizer"] == "muon" and json.loads(out)["cells_considered"] == 2


def test_best_without_a_multiple_is_one_row_per_cell(home: Database, capsys: pytest.CaptureFixture[str]) -> None:
    add_sweep(home, "paper", CELLS)
    code, out, _ = best(capsys, "--optimizer", "muon", "--scale", "130m", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["scale"], r["chinchilla"], r["loss"]) for r in rows] == [("130m", 1, 3.46), ("130m", 16, 3.19)]
    code, out, _ = best(capsys, "--optimizer", "muon", "--json")  # tiny and paper scales apart, smallest first
    assert [(r["scale"], r["chinchilla"]) for r in json.loads(out)] == [("tiny-130k", 1), ("130m", 1), ("130m", 16)]
    code, out, _ = best(capsys, "--optimizer", "muon", "--scale", "130m")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["optimizer", "scale", "chinchilla", "loss"]
    assert [line.split()[2:4] for line in lines[1:3]] == [["1x", "3.4600"], ["16x", "3.1900"]]


def test_best_names_unknown_to_catalog_and_database(home: Database, capsys: pytest.CaptureFixture[str]) -> None:
    add_sweep(home, "paper", CELLS)
    code, _, err = best(capsys, "--optimizer", "muonn")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("sweep-service: error: unknown optimizer 'muonn'; valid optimizers: adam")
    assert "muon," in err and err.rstrip().endswith("muon2")  # the catalog's, then the database's own
    code, _, err = best(capsys, "--scale", "7b")
    assert code == 2 and "unknown scale '7b'; valid scales: 130m" in err and "1.3b" in err
    code, out, _ = best(capsys, "--optimizer", "muon2", "--scale", "1.3b", "--chinchilla", "1", "--json")
    assert code == 0 and json.loads(out)["loss"] == 3.0  # a name only the database holds is valid
    code, _, err = best(capsys, "--optimizer", "adamw", "--scale", "tiny-130k")  # valid names, no results
    assert code == 1 and err == "no finished cell matches\n"
    code, _, err = best(capsys, "--chinchilla", "0")
    assert code == 2 and "--chinchilla must be a finite number > 0" in err


def test_status_of_a_missing_sweep_is_an_error_on_stderr(home: Database, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "99"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("sweep-service: error: no sweep 99")
    assert main(["status"]) == 0 and capsys.readouterr().out == "no sweeps yet\n"


def test_status_counts_each_sweep_s_cells(home: Database, capsys: pytest.CaptureFixture[str]) -> None:
    add_sweep(home, "two", {"adamw/tiny-130k/1": (3.0, 1), "muon/tiny-130k/1": (2.9, 1)})
    add_sweep(home, "none")
    assert main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert " 0 cells; " in lines[0] and " 2 cells; " in lines[1], lines


def test_status_says_when_it_lists_only_the_newest(home: Database, capsys: pytest.CaptureFixture[str]) -> None:
    long_name = "paper results (arXiv 2509.02046) " + "x" * 40
    for i in range(22):
        add_sweep(home, long_name if i == 21 else f"sweep {i}")
    assert main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        len(lines) == 21
        and lines[-1] == "showing the newest 20 of 22 sweeps; sweep-service status --all lists every one"
    )
    newest = lines[0]
    assert newest.startswith("sweep 22   paper results (arXiv 2509.02046) xxxx... ") and long_name not in newest
    # Columns line up: the status column starts at the same place on every line.
    assert len({line.index("queued") for line in lines[:-1]}) == 1
    assert main(["status", "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 22 and lines[-1].startswith("sweep 1 ")


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Sets DATABASE_URL (SWEEP_HOME in tmp_path); settings are read once, so re-read."""
    monkeypatch.setenv("SWEEP_HOME", str(tmp_path))

    def set_url(url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)
        get_settings.cache_clear()

    yield set_url
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("bogus", "'bogus' (DATABASE_URL) is not a database URL"),
        ("foo://user:secret@host/db", "'foo://user:***@host/db' (DATABASE_URL) is not a database URL"),
        (
            "postgresql+psycopg2://postgres:secret@127.0.0.1:1/x",
            "cannot open the database 'postgresql+psycopg2://postgres:***@127.0.0.1:1/x' (DATABASE_URL): ",
        ),
        (  # a "/" in the password
            "postgresql+psycopg2://postgres:pa/secret@127.0.0.1:1/x",
            "cannot open the database 'postgresql+psycopg2://postgres:***@127.0.0.1:1/x' (DATABASE_URL): ",
        ),
        (  # libpq refuses the option: ProgrammingError, not OperationalError
            "postgresql+psycopg2://u:secret@127.0.0.1:1/x?foo=bar",
            "cannot open the database 'postgresql+psycopg2://u:***@127.0.0.1:1/x?foo=bar' (DATABASE_URL): invalid dsn",
        ),
        (
            "postgresql+psycopg2://u@127.0.0.1:1/x?password=secret",
            "cannot open the database 'postgresql+psycopg2://u@127.0.0.1:1/x?password=***' (DATABASE_URL): ",
        ),
        (
            "postgresql+psycopg2://u:secret@h:abc/x",
            "'postgresql+psycopg2://u:***@h:abc/x' (DATABASE_URL) is not a valid database URL: invalid literal for int",
        ),
        ("sqlite://", "'sqlite://' (DATABASE_URL) is an in-memory SQLite database"),
        ("sqlite:///", "'sqlite:///' (DATABASE_URL) is an in-memory SQLite database"),
        ("sqlite:///:memory:", "'sqlite:///:memory:' (DATABASE_URL) is an in-memory SQLite database"),
    ],
)
@pytest.mark.parametrize("command", ["status", "run"])
def test_a_bad_database_url_is_one_line_without_the_password(
    url: str,
    words: str,
    command: str,
    database_url: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    database_url(url)
    args = ["status"] if command == "status" else ["run", str(Path(__file__).parents[2] / "examples/quickstart.yaml")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("sweep-service: error: ") and words in err, err
    assert err.count("\n") == 1 and "secret" not in err


def test_read_only_commands_make_no_database_that_database_url_names(
    tmp_path: Path, database_url: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"
    url = f"sqlite:///{missing / 'x' / 'y.db'}"
    database_url(url)
    for args in (["status"], ["best"], ["report", "1"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err == f"sweep-service: error: no database at '{url}' (DATABASE_URL): the file does not exist " + (
            "(sweep-service db upgrade, run, serve or import-results makes one)\n"
        )
        assert not missing.exists()
    assert main(["db", "upgrade"]) == 0 and (missing / "x" / "y.db").is_file()
    assert main(["status"]) == 0 and capsys.readouterr().out.endswith("no sweeps yet\n")


def test_read_only_commands_never_make_the_default_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A fresh machine, or a mistyped SWEEP_HOME: status says where it looked; the others are errors; none makes
    # the file or its directory. `db upgrade` (or run, serve, import-results) does.
    home = tmp_path / "home"
    monkeypatch.setenv("SWEEP_HOME", str(home))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        assert main(["status"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("no sweeps yet (no database at ") and "(under SWEEP_HOME)" in out, out
        assert str(home / "sweep-service.db") in out
        for args in (["status", "1"], ["best"], ["export", "1"], ["report", "1"]):
            assert main(args) == 2
            assert capsys.readouterr().err.startswith("sweep-service: error: no database at "), args
        assert not home.exists()
        assert main(["db", "upgrade"]) == 0 and (home / "sweep-service.db").is_file()
        capsys.readouterr()
        assert main(["status"]) == 0 and capsys.readouterr().out == "no sweeps yet\n"
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg2://u:pw@h:5432/db", "postgresql+psycopg2://u:***@h:5432/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),  # an unescaped "@" in the password
        ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db"),  # an unescaped "/"
        ("postgresql://u:pa@s/s@h/db", "postgresql://u:***@h/db"),  # both
        ("postgresql://u:p:a@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p?w@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p%40w@h/db", "postgresql://u:***@h/db"),
        ("postgresql://:pw@h/db", "postgresql://:***@h/db"),
        ("postgresql://u:p@h/db?options=a@b", "postgresql://u:***@h/db?options=a@b"),
        ("postgresql://u:p@h/db?password=secret&a=1", "postgresql://u:***@h/db?password=***&a=1"),
        ("postgresql://h/db?sslmode=require&PASSWORD=s%26t", "postgresql://h/db?sslmode=require&PASSWORD=***"),
        ("postgresql://u:p@h/db@x", "postgresql://u:***@x"),  # an "@" in a database name: hidden, not leaked
        ("foo-bar://u:secret@h/db", "foo-bar://u:***@h/db"),  # a scheme SQLAlchemy cannot parse
        ("postgresql:/u:secret@h/db", "***@h/db"),  # nor this
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h:5432/db", "postgresql://h:5432/db"),
        ("postgresql:///db", "postgresql:///db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("sqlite:////tmp/a@b/x.db", "sqlite:////tmp/a@b/x.db"),
        ("sqlite:////tmp/a:b@c/x.db", "sqlite:////tmp/a:b@c/x.db"),
        ("sqlite:///a:b@c.db", "sqlite:///a:b@c.db"),
        ("sqlite://", "sqlite://"),
        ("bogus", "bogus"),
    ],
)
def test_masked_url(url: str, masked: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    assert masked_url(url) == masked
    try:
        parsed = make_url(url)
    except ArgumentError:
        return
    hidden = make_url(masked)  # SQLAlchemy's own reading of what is printed finds no password
    assert hidden.password in (None, "***") and hidden.query.get("password", "***") == "***"
    # SQLAlchemy's own masking, where its password is the whole one and it re-quotes nothing (it would a query)
    if parsed.password is not None and not parsed.query and "@" not in f"{parsed.host}{parsed.database}":
        assert masked == parsed.render_as_string(hide_password=True)


@pytest.mark.parametrize(
    ("text", "url", "scrubbed"),
    [
        (  # SQLAlchemy gave the host the tail of a password with an unescaped "@"
            'could not translate host name "t0pass@h" to address',
            "postgresql://u:s3cr@t0pass@h/db",
            'could not translate host name "***@h" to address',
        ),
        ('database "ghi@h/db" does not exist', "postgresql://u:abc@def/ghi@h/db", 'database "***@h/db" does not exist'),
        ("password for p@ssw0rd refused", "postgresql://u:p%40ssw0rd@h/db", "password for *** refused"),
        ("no hunter2 here", "postgresql://u@h/db?sslmode=require&password=hunter2", "no *** here"),
        ("sqlite:////tmp/a@b/x.db: no such file", "sqlite:////tmp/a@b/x.db", "sqlite:////tmp/a@b/x.db: no such file"),
    ],
)
def test_scrub_password(text: str, url: str, scrubbed: str) -> None:
    assert scrub_password(text, url) == scrubbed


def test_near_tie_wording() -> None:
    assert near_tie_text(1) == "1 config within tolerance (the best itself)"
    assert near_tie_text(3) == "3 configs within tolerance of the best, itself included"
