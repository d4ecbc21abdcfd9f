"""The `sweep-service` command line.

Errors in what the user typed (an unknown scale, optimizer or hyperparameter, a malformed value) end in one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sweep_service import signals

if TYPE_CHECKING:  # workers.optimizers imports torch and every optimizer: seconds that --help and status skip
    from workers.optimizers.base import HParam


class UsageError(Exception):
    """A mistake in the command line: printed as one line, exit status 2."""


class NoDatabase(UsageError):
    """A read-only command found no database file: never made by it (a mistyped path must not become one).
    `named`: DATABASE_URL named the file (else it is the default under SWEEP_HOME)."""

    def __init__(self, message: str, named: bool) -> None:
        super().__init__(message)
        self.named = named


def parse_value(text: str) -> HParam:
    """A --set value: int, then float, then true/false, else the string itself."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return text


def parse_assignments(items: Sequence[str]) -> dict[str, HParam]:
    out: dict[str, HParam] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def _json_safe(value: Any) -> Any:
    """JSON has no infinity: a diverged run's loss is written as the string "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class Progress:
    """Training progress on stderr: a tqdm bar (step, loss, tokens/s, ETA) on a terminal, else one line per eval."""

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label, self.enabled = label, enabled
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.last: dict[str, Any] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if event["kind"] == "train":
            self.last = event
        if self.tty:
            self._bar(event)
        elif event["kind"] == "eval":
            self._line(event)

    def _bar(self, event: dict[str, Any]) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=event["total_steps"], unit="step", desc=self.label, file=sys.stderr)
        if event["kind"] == "train":
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{event['train_loss']:.3f}", tok_s=f"{event['tokens_per_second']:,.0f}")
        elif event["step"] > 0:
            self.bar.write(f"step {event['step']:>6}  eval loss {event['eval_loss']:.4f}")

    def _line(self, event: dict[str, Any]) -> None:
        step, total = event["step"], event["total_steps"]
        tps = self.last.get("tokens_per_second", 0.0)
        tokens_left = (total - step) * (self.last["tokens"] / step) if step else 0.0
        eta = f"{tokens_left / tps:,.0f}s" if tps > 0 else "?"
        print(
            f"{self.label}: step {step}/{total}  eval loss {event['eval_loss']:.4f}  {tps:,.0f} tok/s  ETA {eta}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_chinchilla(value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(
            f"--chinchilla must be a finite number > 0 (tokens = X x 20 x non-embedding params), got {value:g}"
        )


def check_train_args(args: argparse.Namespace) -> None:
    """Numbers no run can use, named by their flag (workers.trainer.check_config names the RunConfig fields)."""
    check_chinchilla(args.chinchilla)
    for flag, value in (("--threads", args.threads), ("--max-steps", args.max_steps)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.micro_batch_size is not None and args.micro_batch_size < 1:
        raise UsageError(f"--micro-batch-size must be at least 1, got {args.micro_batch_size}")
    for flag, value in (("--eval-every", args.eval_every), ("--checkpoint-every", args.checkpoint_every)):
        if value < 0:
            raise UsageError(f"{flag} must be >= 0 (0: the default), got {value}")
    if args.checkpoint_every and not args.checkpoint_dir:
        raise UsageError("--checkpoint-every needs --checkpoint-dir (the directory to write checkpoints to)")
    if not args.max_loss > 0:  # also NaN, which no loss would ever exceed
        raise UsageError(f"--max-loss must be a number > 0, got {args.max_loss:g}")


def cmd_train(args: argparse.Namespace) -> int:
    check_train_args(args)
    hparams = parse_assignments(args.set)
    # Imported here so that `sweep-service --help` does not pay for importing torch.
    from workers.optimizers.base import HParamTypeError
    from workers.trainer import DivergenceRule, RunConfig, train

    config = RunConfig(
        scale=args.scale,
        optimizer=args.optimizer,
        chinchilla=args.chinchilla,
        hparams=hparams,
        seed=args.seed,
        data=args.data,
        vocab_size=args.vocab_size,
        eval_every=args.eval_every,
        micro_batch_size=args.micro_batch_size,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        divergence=DivergenceRule(max_loss=args.max_loss),
        device=args.device,
        compile=args.compile,
        threads=args.threads,
        max_steps=args.max_steps,
    )
    progress = Progress(f"{args.optimizer} {args.scale}", enabled=not args.quiet)
    try:
        result = train(config, report=progress)
    except HParamTypeError as exc:  # name the --set that gave it, as typed
        typed = {k.strip(): v.strip() for k, _, v in (item.partition("=") for item in args.set)}
        raise UsageError(f"--set {exc.name}={typed.get(exc.name, exc.value)}: expected {exc.expected}") from None
    finally:
        progress.close()
    if args.json:
        payload = result.to_dict()
        print(json.dumps(_json_safe(payload), sort_keys=True))
    else:
        print(f"status            {result.status}" + (f" ({result.reason})" if result.reason else ""))
        print(f"eval loss         {result.initial_eval_loss:.4f} -> {result.final_eval_loss:.4f}")
        print(f"steps             {result.steps} of {result.total_steps}")
        print(f"tokens            {result.tokens:,}")
        print(f"tokens/s          {result.tokens_per_second:,.0f}")
        if result.mfu is not None:
            print(f"MFU               {result.mfu:.1%}")
    return 0


def masked_url(url: str) -> str:
    """db.session.masked_url, imported when called: `--help` does not pay for importing SQLAlchemy."""
    from db.session import masked_url as mask

    return mask(url)


IN_MEMORY_SQLITE = (
    "is an in-memory SQLite database, which every connection sees empty (the CLI migrates on one and reads on "
    "another): name a file, e.g. sqlite:///path/to.db"
)


def _database(create: bool = True) -> Any:
    """Open (and migrate) the configured database; a bad URL or an unreachable server is one UsageError line.

    With create=False (the read-only commands: status, best, export, report), a SQLite file that does not exist,
    whether DATABASE_URL names it or it is the default under SWEEP_HOME, is NoDatabase: a typo in the path must not
    read as a new, empty database, nor make its directories (`status` under SWEEP_HOME says "no sweeps yet" and
    where it looked).
    The other commands make it.
    """
    from sqlalchemy.exc import ArgumentError, DBAPIError

    from db.migrate import upgrade
    from db.session import Database, scrub_password, sqlite_file, sqlite_in_memory
    from sweep_service.settings import get_settings

    settings = get_settings()
    url = settings.db_url()
    where = f"{masked_url(url)!r} ({'DATABASE_URL' if settings.database_url else 'under SWEEP_HOME'})"
    try:
        if sqlite_in_memory(url):
            raise UsageError(f"{where} {IN_MEMORY_SQLITE}")
        path = sqlite_file(url)
        if not create and path is not None and not path.exists():
            raise NoDatabase(
                f"no database at {where}: the file does not exist (sweep-service db upgrade, run, serve or "
                "import-results makes one)",
                named=bool(settings.database_url),
            )
        upgrade(url)
        return Database(url)
    except ArgumentError:  # also NoSuchModuleError: an unknown dialect
        raise UsageError(
            f"{where} is not a database URL SQLAlchemy knows; e.g. sqlite:///path/to.db or "
            "postgresql+psycopg2://user@host:5432/db"
        ) from None
    except ValueError as exc:  # e.g. a port that is not a number, a SQLite timeout= that is not one
        raise UsageError(f"{where} is not a valid database URL: {scrub_password(str(exc), url)}") from None
    except ImportError as exc:  # the dialect is known but its driver is not installed
        raise UsageError(f"{where}: its database driver is not installed ({exc.name or exc})") from None
    except DBAPIError as exc:  # connection refused, no such database, bad password, an option libpq lacks, ...
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        raise UsageError(f"cannot open the database {where}: {scrub_password(reason, url)}") from None
    except OSError as exc:  # e.g. SWEEP_HOME where no directory can be made
        raise UsageError(f"cannot open the database {where}: {exc.strerror or exc}") from None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_best_table(rows: list[dict[str, Any]]) -> None:
    """One row per cell: key, status, trials, best loss (± its std over seeds, how many), the pooled seed noise of
    its confirmed configs, the near-tie tolerance, best config (sweep_service/noise.py fills the noise columns)."""
    head = f"{'cell':<28} {'status':<10} {'trials':>6} {'best loss':>10}"
    print(f"{head} {'± seed std':>16} {'noise':>7} {'tol':>7}  best config")
    for r in rows:
        loss = f"{r['best_loss']:.4f}" if r["best_loss"] is not None else "-"
        n = r["noise"]
        spread = f"{n['best_std']:.4f} ({n['seeds']} seeds)" if n["best_std"] is not None else "-"
        noise_std = f"{n['noise_std']:.4f}" if n["noise_std"] is not None else "-"
        tol = (
            "auto?"
            if n["tolerance_auto"] == "pending"
            else f"{n['tolerance']:.4g}"
            if n["tolerance"] is not None
            else "-"
        )
        config = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((r["best_config"] or {}).items()))
        head = f"{r['key']:<28} {r['status']:<10} {r['trials']:>6} {loss:>10}"
        print(f"{head} {spread:>16} {noise_std:>7} {tol:>7}  {config}")


def _cell_rows(db: Any, sweep_id: int) -> list[dict[str, Any]]:
    """The rows of print_best_table for a sweep's cells (sweep_service.service.sweeps.cells)."""
    from sweep_service.service import sweeps

    return _table_rows(sweeps.cells(db, sweep_id))


def _table_rows(cells: Any) -> list[dict[str, Any]]:
    """print_best_table's rows from the use cases' CellProgress, the cells GET /sweeps/{id} shows."""
    from dataclasses import asdict

    return [
        {
            "key": c.key,
            "status": c.status,
            "trials": c.trials.total,
            "best_loss": c.best_loss,
            "best_config": c.best_config,
            "noise": asdict(c.noise),
        }
        for c in cells
    ]


def cmd_run(args: argparse.Namespace) -> int:
    import hashlib
    from pathlib import Path

    from sweep_service import feasibility, preflight
    from sweep_service.engine import run_sweep
    from sweep_service.resources import local_problem
    from sweep_service.service import sweeps
    from sweep_service.settings import get_settings
    from sweep_service.spec import SpecError, load_spec_file, plan_document

    doc = load_spec_file(args.spec)
    settings = get_settings()
    try:
        plan = plan_document(doc, max_cells=settings.max_cells)
    except SpecError as exc:
        raise UsageError(f"{args.spec}: {exc}") from None
    # What the spec needs from this machine, then what run writes: all before the sweep is written.
    # An external sweep's trials run on outside workers: neither our data path nor this machine's Ray matters.
    external = plan.executor == "external"
    problems = [None if external else feasibility.data_problem(plan.data)]
    local = not (settings.ray_address or external)
    short = local_problem(plan.cpu, plan.gpu, settings.ray_num_cpus) if local else None
    problems.append(("resources", short) if short else None)
    for problem in problems:
        if problem is not None:
            raise UsageError(f"{args.spec}: {problem[0]}: {problem[1]}")
    if not external and plan.data != "builtin" and not Path(plan.data).is_absolute():
        doc = {**doc, "data": str(Path(plan.data).resolve())}  # trials run in Tune's directories, not here
    preflight.check_directory(settings.sweep_home / "ray_results", "Ray Tune's results under SWEEP_HOME,")
    db = _database()
    preflight.check_database_writable(db)
    key = None if args.new else "spec:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    # The key is the spec file's hash: a stored spec that differs was updated since (PATCH budget), same sweep.
    sweep = sweeps.submit(db, plan.name, doc, idempotency_key=key, same_spec_only=False)
    sweep_id, status = sweep.id, sweep.status
    if sweep.created:
        print(f"sweep {sweep_id} '{plan.name}': {len(plan.cells)} cells, strategy {plan.strategy}", file=sys.stderr)
    elif status in sweeps.FINISHED_SWEEP_STATUSES:
        print(f"sweep {sweep_id} with this spec already {status} (use --new to run it again)", file=sys.stderr)
    elif status == "paused":
        print(f"sweep {sweep_id} is paused; `sweep-service resume {sweep_id}` makes it runnable", file=sys.stderr)
    else:
        print(f"resuming sweep {sweep_id} '{plan.name}'", file=sys.stderr)
    print(f"database: {masked_url(db.url)}", file=sys.stderr)
    if plan.executor == "external":  # outside workers run it (sweep_service.external): nothing runs here
        print(f"sweep {sweep_id} waits for outside workers: sweep-service agent {sweep_id} -- CMD ARGS...")
        return 0
    if status in ("queued", "running"):
        from sweep_service import lease as leases

        def say(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

        # `run` claims the sweep's lease like a dispatcher: the two never run one sweep at once.
        try:
            lease = leases.claim_or_raise(db, sweep_id, leases.default_owner(), settings.lease_seconds)
        except leases.LeaseHeld as exc:
            print(f"sweep-service: {exc}; not started (it resumes here once that process stops)", file=sys.stderr)
            return 1
        try:
            with leases.kept(db, lease, say):
                run_sweep(
                    db,
                    sweep_id,
                    settings.sweep_home / "ray_results",
                    progress=say,
                    ray_address=settings.ray_address,
                    ray_num_cpus=settings.ray_num_cpus,
                    stop=signals.STOP,
                    lease=lease,
                )
        except leases.LeaseLost as exc:
            print(f"sweep-service: {exc}", file=sys.stderr)
            return 1
    print()
    print_best_table(_cell_rows(db, sweep_id))
    from sweep_service.answer import print_answer

    print()
    print_answer(db, sweep_id, sys.stdout)
    final = sweeps.progress(db, sweep_id).summary
    if final.status == "failed":
        print(f"sweep {sweep_id} failed: {final.error or 'no reason recorded'}", file=sys.stderr)
        return 1
    return 0


STATUS_LIMIT = 20  # sweeps `status` lists without --all, newest first
NAME_WIDTH = 40  # a longer sweep name is cut, with "...", to keep the columns


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_status(args: argparse.Namespace) -> int:
    """The sweeps (newest first) with their cells and trials, or one sweep and its cells' table: the use cases of
    GET /sweeps and GET /sweeps/{id} (sweep_service.service.sweeps)."""
    from sweep_service.service import NotFound, sweeps

    try:
        db = _database(create=False)
    except NoDatabase as exc:
        if args.sweep_id is not None or exc.named:  # asked for a sweep, or for a file DATABASE_URL names
            raise
        print(f"no sweeps yet ({exc})")  # a fresh machine, or a mistyped SWEEP_HOME: says where it looked
        return 0
    if args.sweep_id is not None:
        try:
            progress = sweeps.progress(db, args.sweep_id)
        except NotFound:
            raise UsageError(f"no sweep {args.sweep_id} (sweep-service status lists them)") from None
        rows = [(progress.summary, len(progress.cells))]
        total = 1
    else:
        page = sweeps.list_sweeps(db, limit=None if args.all else STATUS_LIMIT, count_cells=True)
        rows = [(sw, sw.cells or 0) for sw in page.items]
        total = page.total
    if not rows:
        print("no sweeps yet")
        return 0
    width = min(max(len(sw.name) for sw, _ in rows), NAME_WIDTH)
    for sw, n_cells in rows:
        trials = ", ".join(f"{k} {v}" for k, v in sorted(sw.trials.present().items())) or "no trials"
        print(f"sweep {sw.id:<4} {_clip(sw.name, width):<{width}} {sw.status:<10} {n_cells} cells; trials: {trials}")
        if sw.error:  # why it failed, or what it waits for (e.g. "waiting for resources: ...")
            print(f"  {sw.error}")
    if len(rows) < total:
        print(f"showing the newest {len(rows)} of {total} sweeps; sweep-service status --all lists every one")
    if args.sweep_id is not None:
        print()
        print_best_table(_table_rows(progress.cells))
        decided = [c for c in progress.cells if c.decision]
        if decided:
            print("\nphase decisions (docs/PAPER.md section 4; GET /sweeps/ID has them as each cell's `decision`):")
            for c in decided:
                print(f"  {c.key}: {decision_text(c.phase, c.decision or {})}")
    return 0


def decision_text(phase: int, decision: dict[str, Any]) -> str:
    """One line for a Phase II or III cell's decision (sweep_service.service.sweeps.decision_of)."""
    if phase == 2 or "unstable" in decision:
        stable = ", ".join(f"{k} in {v}" for k, v in sorted((decision.get("stable") or {}).items()))
        return f"phase 2: re-tunes {', '.join(decision.get('unstable') or []) or 'nothing'}; stable: {stable or '-'}"
    config = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((decision.get("prediction") or {}).items()))
    fits = []
    for name, fit in sorted((decision.get("fits") or {}).items()):
        error = fit.get("error")
        text = f"{name} {fit.get('form')}" + (f" (error {error:.2g})" if isinstance(error, float) else "")
        fits.append(text + (" [fallback]" if fit.get("fallback") else ""))
    return f"phase 3 ({decision.get('method')}): runs {config}; fits: {', '.join(fits) or '-'}"


def near_tie_text(n: int) -> str:
    """How many configs came within the near-tie tolerance; the count includes the best config itself."""
    if n <= 1:
        return "1 config within tolerance (the best itself)"
    return f"{n} configs within tolerance of the best, itself included"


def cmd_best(args: argparse.Namespace) -> int:
    """One answer when --scale and --chinchilla are both given (the lowest loss there, across optimizers unless
    --optimizer names one); otherwise one row per (optimizer, scale, chinchilla) cell, as GET /best answers:
    losses of different scales or token budgets are not comparable (more data always gives a lower loss).
    The rows are GET /best's (sweep_service.service.best): a cell still running is ranked from its finished trials."""
    from sweep_service.service import best as use_case

    check_chinchilla(args.chinchilla)
    db = _database(create=False)
    try:
        results = use_case.best(db, args.optimizer, args.scale, args.chinchilla)
    except use_case.UnknownName as exc:
        raise UsageError(f"unknown {exc.field} {exc.name!r}; valid {exc.field}s: {', '.join(exc.valid)}") from None
    single = use_case.lowest(results) if args.scale is not None and args.chinchilla is not None else None
    if not results:
        print("no finished cell matches", file=sys.stderr)
        return 1
    if single is not None:
        if args.json:
            print(json.dumps(_json_safe(dataclasses.asdict(single)), sort_keys=True))
            return 0
        print(f"{single.optimizer} at {single.scale}, {single.chinchilla:g}x Chinchilla: loss {single.loss:.4f}")
        ties = f"; {near_tie_text(len(single.near_ties))}" if single.near_ties else ""
        print(f"  from sweep {single.sweep_id}, trial {single.trial_id}{ties}")
        for k, v in sorted((single.config or {}).items()):
            print(f"  {k:<20} {_fmt(v)}")
        return 0
    rows = [dataclasses.asdict(r) for r in results]
    if args.json:
        print(json.dumps(_json_safe(rows), sort_keys=True))
        return 0
    print_best_results(rows)
    return 0


def print_best_results(results: list[dict[str, Any]]) -> None:
    """One row per (optimizer, scale, chinchilla): loss, where it came from, near-ties, config."""
    w_opt = max(len("optimizer"), *(len(r["optimizer"]) for r in results))
    w_scale = max(len("scale"), *(len(r["scale"]) for r in results))
    head = f"{'optimizer':<{w_opt}} {'scale':<{w_scale}} {'chinchilla':>10}"
    print(f"{head} {'loss':>8} {'sweep':>5} {'trial':>7} {'ties':>4}  config")
    for r in results:
        config = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((r["config"] or {}).items()))
        trial = "-" if r["trial_id"] is None else str(r["trial_id"])
        print(
            f"{r['optimizer']:<{w_opt}} {r['scale']:<{w_scale}} {r['chinchilla']:>9g}x {r['loss']:>8.4f} "
            f"{r['sweep_id']:>5} {trial:>7} {len(r['near_ties']):>4}  {config}"
        )
    print("ties: configs within the near-tie tolerance of the cell's best, the best included")


def cmd_import_results(args: argparse.Namespace) -> int:
    """Load released results (`paper`: the shipped paper_results.json) as a finished, imported sweep."""
    from sweep_service.service import errors, imports

    try:
        outcome = imports.import_results(_database(), args.file)
    except errors.Invalid as exc:  # the file: unreadable, or an entry malformed (the message names it)
        raise UsageError(exc.message) from None
    verb = "imported" if outcome.created else "already imported (same content): nothing written;"
    print(
        f"sweep {outcome.sweep_id} '{outcome.name}': {verb} {outcome.n_cells} cells, {outcome.n_trials} trials",
        file=sys.stderr,
    )
    print(
        f"  optimizers {', '.join(outcome.optimizers)}; scales {', '.join(outcome.scales)}; "
        f"chinchilla {', '.join(f'{c:g}' for c in outcome.chinchilla)}",
        file=sys.stderr,
    )
    if outcome.unknown_scales:
        print(
            f"  scales not in the catalog (imported all the same): {', '.join(outcome.unknown_scales)}", file=sys.stderr
        )
    if outcome.unknown_params:
        print(
            f"  no parameter count for {', '.join(outcome.unknown_params)}: left out of /predict fits",
            file=sys.stderr,
        )
    print(outcome.sweep_id)  # stdout: the id alone, for scripts (ID=$(sweep-service import-results paper))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a sweep's trials as CSV, Parquet or JSON (sweep_service.service.exports, GET /sweeps/{id}/export's
    bytes): to --out, else to stdout."""
    from pathlib import Path

    from sweep_service.service import errors, exports

    try:
        out = exports.export(_database(create=False), args.sweep_id, args.format)
    except errors.NotFound as exc:
        raise UsageError(f"{exc} (sweep-service status lists them)") from None
    if args.out is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(out.body)
        sys.stdout.buffer.flush()
        return 0
    try:
        Path(args.out).write_bytes(out.body)
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"sweep {args.sweep_id}: {out.format} written to {args.out}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML report of a sweep (figures as PNG, tables as CSV) from the database."""
    from sweep_service.report import write_report
    from sweep_service.settings import get_settings

    out = args.out if args.out is not None else get_settings().sweep_home / "reports" / f"sweep-{args.sweep_id}"
    try:
        index = write_report(_database(create=False), args.sweep_id, out)
    except OSError as exc:  # e.g. a directory we may not write to
        raise UsageError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    print(index)
    return 0


def _dispatcher(db: Any) -> Any:
    from sweep_service.dispatcher import Dispatcher
    from sweep_service.settings import get_settings

    settings = get_settings()
    return Dispatcher(
        db,
        settings.sweep_home / "ray_results",
        lease_seconds=settings.lease_seconds,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        ray_address=settings.ray_address,
        ray_num_cpus=settings.ray_num_cpus,
        stop=signals.STOP,
    )


def cmd_dispatcher(args: argparse.Namespace) -> int:
    """Claim queued sweeps and run them until SIGINT/SIGTERM (then exit 130/143, the sweep resumable)."""
    _dispatcher(_database()).run_forever(poll_seconds=args.poll)
    return signals.exit_code() if signals.STOP.is_set() else 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The embedded default: the REST API and a dispatcher in one process."""
    import threading

    from api.app import create_app  # the composition root: the imports from the CLI up into the API
    from api.server import make_server
    from sweep_service.settings import get_settings

    settings = get_settings()
    db = _database()
    # With its own dispatcher and no RAY_ADDRESS, sweeps run on the local Ray: POST /sweeps checks its resources.
    app = create_app(db.url, local_ray=not args.no_dispatcher and not settings.ray_address)
    server = make_server(app, args.host, args.port, settings)
    if args.no_dispatcher:
        api = threading.Thread(target=server.run, name="api", daemon=True)
        api.start()
        # uvicorn installs its signal handlers only on the main thread: off it, ours decide.
        while api.is_alive() and not signals.STOP.wait(0.5):
            pass
        server.should_exit = True
        api.join(timeout=10)
        return signals.exit_code() if signals.STOP.is_set() else 1
    # The API serves from a thread; the dispatcher keeps the main thread, where Ray Tune wants to run.
    api = threading.Thread(target=server.run, name="api", daemon=True)
    api.start()
    print(f"API on http://{args.host}:{args.port} (docs at /docs); database {masked_url(db.url)}", file=sys.stderr)
    dispatcher = _dispatcher(db)
    try:
        dispatcher.run_forever(poll_seconds=args.poll)
    finally:
        server.should_exit = True
        api.join(timeout=10)
    return signals.exit_code() if signals.STOP.is_set() else 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    db = _database()
    print(f"database at the latest schema: {masked_url(db.url)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweep-service",
        description="Fair optimizer benchmarking for language-model pretraining.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="run one training run and print its result")
    p.add_argument("--scale", required=True, help="model scale preset, e.g. tiny-130k or 130m")
    p.add_argument("--optimizer", default="adamw", help="optimizer name (default adamw)")
    p.add_argument("--chinchilla", type=float, default=1.0, help="tokens = X x 20 x non-embedding params")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="hyperparameter (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="token files (dir with train.bin/val.bin, or a .bin); default builtin")
    p.add_argument("--vocab-size", type=int, default=None, help="vocabulary of token files without meta.json")
    p.add_argument("--eval-every", type=int, default=0, help="steps between evaluations (0: ~10 per run)")
    p.add_argument("--micro-batch-size", type=int, default=None, help="accumulate gradients over micro-batches")
    p.add_argument("--checkpoint-dir", default=None, help="save checkpoints here and resume from one")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: none)")
    p.add_argument("--max-loss", type=float, default=1e4, help="a loss above this is divergence (paper: 1e4)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (schedule unchanged)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="run a sweep spec (YAML/JSON) embedded: SQLite + local Ray + CPU")
    p.add_argument("spec", help="sweep spec file, e.g. examples/quickstart.yaml")
    p.add_argument("--new", action="store_true", help="start a new sweep even if this spec ran before")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="list sweeps (the newest 20), or one sweep's cells")
    p.add_argument("sweep_id", nargs="?", type=int, default=None)
    p.add_argument("--all", action="store_true", help="list every sweep, not only the newest 20")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "best",
        help="best hyperparameters and loss across all finished work",
        description="With --scale and --chinchilla: the one best cell there. Otherwise one row per matching "
        "(optimizer, scale, chinchilla) cell, like GET /best (--json: a list).",
    )
    p.add_argument("--optimizer", default=None)
    p.add_argument("--scale", default=None)
    p.add_argument("--chinchilla", type=float, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("import-results", help="load released results (e.g. the paper's) as a finished sweep")
    p.add_argument("file", help="results JSON file, or `paper` for the shipped paper_results.json")
    p.set_defaults(func=cmd_import_results)

    p = sub.add_parser("export", help="a sweep's trials as CSV, Parquet or JSON (like GET /sweeps/ID/export)")
    p.add_argument("sweep_id", type=int)
    p.add_argument("--format", choices=("csv", "parquet", "json"), default="csv")
    p.add_argument("--out", default=None, help="file to write (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="write a sweep's HTML report (plots as PNG, tables as CSV)")
    p.add_argument("sweep_id", type=int)
    p.add_argument("--out", default=None, help="output directory (default: SWEEP_HOME/reports/sweep-ID)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("dispatcher", help="claim queued sweeps from the database and run them")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between looks for queued sweeps")
    p.set_defaults(func=cmd_dispatcher)

    p = sub.add_parser("serve", help="run the REST API and a dispatcher in one process (embedded default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--poll", type=float, default=2.0, help="seconds between looks for queued sweeps")
    p.add_argument("--no-dispatcher", action="store_true", help="serve the API only (dispatchers run elsewhere)")
    p.set_defaults(func=cmd_serve)

    from sweep_service import agent  # the `agent` command (external sweeps); imports no httpx until it runs

    agent.add_parser(sub)

    from sweep_service import cli_lifecycle  # pause, resume, delete (sweep_service.service)

    cli_lifecycle.add_parsers(sub, _database, UsageError)

    p = sub.add_parser("db", help="database maintenance")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    q = dbsub.add_parser("upgrade", help="apply the schema migrations (also done on every start)")
    q.set_defaults(func=cmd_db_upgrade)
    return parser


# Commands that run sweeps stop them resumably on SIGINT/SIGTERM (sweep_service/signals.py).
SIGNAL_COMMANDS = ("run", "dispatcher", "serve")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    restore = signals.install() if args.command in SIGNAL_COMMANDS else None
    try:
        return int(args.func(args))
    except signals.Interrupted as exc:
        print("sweep-service: stopped; run the same command again to resume the sweep", file=sys.stderr)
        return signals.exit_code(exc.signum)
    except (UsageError, ValueError) as exc:
        print(f"sweep-service: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
    except KeyboardInterrupt:
        print("sweep-service: interrupted", file=sys.stderr)
        return 130
    finally:
        if restore is not None:  # main() called in-process (tests): leave the caller's handlers as they were
            restore()


if __name__ == "__main__":
    sys.exit(main())
