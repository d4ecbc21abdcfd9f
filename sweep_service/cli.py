"""The `sweep-service` command line.

Errors in what the user typed (an unknown scale, optimizer or hyperparameter, a malformed value) end in one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from workers.optimizers.base import HParam


class UsageError(Exception):
    """A mistake in the command line: printed as one line, exit status 2."""


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


def cmd_train(args: argparse.Namespace) -> int:
    # Imported here so that `sweep-service --help` does not pay for importing torch.
    from workers.trainer import DivergenceRule, RunConfig, train

    config = RunConfig(
        scale=args.scale,
        optimizer=args.optimizer,
        chinchilla=args.chinchilla,
        hparams=parse_assignments(args.set),
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


def _database() -> Any:
    from db.migrate import upgrade
    from db.session import Database
    from sweep_service.settings import get_settings

    url = get_settings().db_url()
    upgrade(url)
    return Database(url)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_best_table(rows: list[dict[str, Any]]) -> None:
    """One row per cell: key, status, trials, best loss, best config."""
    print(f"{'cell':<28} {'status':<10} {'trials':>6} {'best loss':>10}  best config")
    for r in rows:
        loss = f"{r['best_loss']:.4f}" if r["best_loss"] is not None else "-"
        config = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((r["best_config"] or {}).items()))
        print(f"{r['key']:<28} {r['status']:<10} {r['trials']:>6} {loss:>10}  {config}")


def _cell_rows(db: Any, sweep_id: int) -> list[dict[str, Any]]:
    from db import repository as repo

    with db.session() as s:
        return [
            {
                "key": c.key,
                "status": c.status,
                "trials": len(c.trials),
                "best_loss": c.best_loss,
                "best_config": c.best_config,
            }
            for c in repo.cells_of(s, sweep_id)
        ]


def cmd_run(args: argparse.Namespace) -> int:
    import hashlib

    from db import repository as repo
    from sweep_service.engine import run_sweep
    from sweep_service.settings import get_settings
    from sweep_service.spec import SpecError, load_spec_file, plan_document

    doc = load_spec_file(args.spec)
    try:
        plan = plan_document(doc)
    except SpecError as exc:
        raise UsageError(f"{args.spec}: {exc}") from None
    settings = get_settings()
    db = _database()
    key = None if args.new else "spec:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    with db.session() as s:
        sweep = repo.sweep_by_idempotency_key(s, key) if key else None
        if sweep is None:
            sweep = repo.create_sweep(s, plan.name, doc, idempotency_key=key)
            print(f"sweep {sweep.id} '{plan.name}': {len(plan.cells)} cells, strategy {plan.strategy}", file=sys.stderr)
        elif sweep.status in ("completed", "failed", "cancelled"):
            print(
                f"sweep {sweep.id} with this spec already {sweep.status} (use --new to run it again)", file=sys.stderr
            )
        else:
            print(f"resuming sweep {sweep.id} '{plan.name}'", file=sys.stderr)
        sweep_id, status = sweep.id, sweep.status
    print(f"database: {db.url}", file=sys.stderr)
    if status in ("queued", "running"):
        run_sweep(
            db,
            sweep_id,
            settings.sweep_home / "ray_results",
            progress=lambda line: print(line, file=sys.stderr, flush=True),
            ray_address=settings.ray_address,
            ray_num_cpus=settings.ray_num_cpus,
        )
    print()
    print_best_table(_cell_rows(db, sweep_id))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from db import repository as repo

    db = _database()
    with db.session() as s:
        sweeps = [repo.get_sweep(s, args.sweep_id)] if args.sweep_id else repo.list_sweeps(s, limit=20)
        rows = [
            (sw.id, sw.name, sw.status, repo.count_trials_by_status(s, sw.id), len(sw.cells))
            for sw in sweeps
            if sw is not None
        ]
    if not rows:
        print("no sweeps yet" if not args.sweep_id else f"no sweep {args.sweep_id}")
        return 0 if not args.sweep_id else 2
    for sweep_id, name, status, counts, n_cells in rows:
        trials = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no trials"
        print(f"sweep {sweep_id:<4} {name:<24} {status:<10} {n_cells} cells; trials: {trials}")
    if args.sweep_id:
        print()
        print_best_table(_cell_rows(db, args.sweep_id))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    from db import repository as repo

    db = _database()
    with db.session() as s:
        cells = [c for c in repo.find_cells(s, args.optimizer, args.scale, args.chinchilla) if c.best_loss is not None]
        if not cells:
            print("no finished cell matches", file=sys.stderr)
            return 1
        best = min(cells, key=lambda c: c.best_loss if c.best_loss is not None else math.inf)
        out: dict[str, Any] = {
            "optimizer": best.optimizer,
            "scale": best.scale,
            "chinchilla": best.chinchilla,
            "loss": best.best_loss,
            "config": best.best_config,
            "near_ties": best.near_ties or [],
            "sweep_id": best.sweep_id,
            "trial_id": best.best_trial_id,
            "cells_considered": len(cells),
        }
    if args.json:
        print(json.dumps(_json_safe(out), sort_keys=True))
        return 0
    print(f"{out['optimizer']} at {out['scale']}, {out['chinchilla']:g}x Chinchilla: loss {out['loss']:.4f}")
    print(f"  from sweep {out['sweep_id']}, trial {out['trial_id']} ({len(out['near_ties'])} near-tie configs)")
    for k, v in sorted((out["config"] or {}).items()):
        print(f"  {k:<20} {_fmt(v)}")
    return 0


def cmd_import_results(args: argparse.Namespace) -> int:
    """Load released results (`paper`: the shipped paper_results.json) as a finished, imported sweep."""
    from sweep_service.importer import import_file

    outcome = import_file(_database(), args.file)
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


def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML report of a sweep (figures as PNG, tables as CSV) from the database."""
    from sweep_service.report import write_report
    from sweep_service.settings import get_settings

    out = args.out if args.out is not None else get_settings().sweep_home / "reports" / f"sweep-{args.sweep_id}"
    try:
        index = write_report(_database(), args.sweep_id, out)
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
    )


def cmd_dispatcher(args: argparse.Namespace) -> int:
    """Claim queued sweeps and run them until interrupted."""
    _dispatcher(_database()).run_forever(poll_seconds=args.poll)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The embedded default: the REST API and a dispatcher in one process."""
    import threading

    import uvicorn

    from api.app import create_app  # the composition root: the one import from the CLI up into the API

    db = _database()
    app = create_app(db.url)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info"))
    if args.no_dispatcher:
        server.run()
        return 0
    # The API serves from a thread; the dispatcher keeps the main thread, where Ray Tune wants to run.
    api = threading.Thread(target=server.run, name="api", daemon=True)
    api.start()
    print(f"API on http://{args.host}:{args.port} (docs at /docs); database {db.url}", file=sys.stderr)
    dispatcher = _dispatcher(db)
    try:
        dispatcher.run_forever(poll_seconds=args.poll)
    finally:
        server.should_exit = True
        api.join(timeout=10)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    db = _database()
    print(f"database at the latest schema: {db.url}")
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
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
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

    p = sub.add_parser("status", help="list sweeps, or one sweep's cells")
    p.add_argument("sweep_id", nargs="?", type=int, default=None)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("best", help="best hyperparameters and loss across all finished work")
    p.add_argument("--optimizer", default=None)
    p.add_argument("--scale", default=None)
    p.add_argument("--chinchilla", type=float, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("import-results", help="load released results (e.g. the paper's) as a finished sweep")
    p.add_argument("file", help="results JSON file, or `paper` for the shipped paper_results.json")
    p.set_defaults(func=cmd_import_results)

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

    p = sub.add_parser("db", help="database maintenance")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    q = dbsub.add_parser("upgrade", help="apply the schema migrations (also done on every start)")
    q.set_defaults(func=cmd_db_upgrade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (UsageError, ValueError) as exc:
        print(f"sweep-service: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
    except KeyboardInterrupt:
        print("sweep-service: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
