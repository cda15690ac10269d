"""The ``graftwatch`` command line (DESIGN.md, Contract: Commands).

Heavy imports (Prefect, flowkit, DuckDB) happen inside the command that needs them,
so ``graftwatch --help`` answers instantly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_USAGE = 0, 2
_STARTED = time.monotonic()  # the run's time as the technician waits for it, imports included


def _env_defaults() -> None:
    # No network here and no telemetry anywhere (DESIGN.md, Dependencies).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # Prefect's event sender says "Still processing items: 1 items remaining..." when a
    # run ends before its last event (the run-summary artifact's) is sent; it is sent at
    # exit all the same, so the warning only worries a technician.
    import logging

    logging.getLogger("EventsWorker").setLevel(logging.ERROR)


def _fail(message: str) -> int:
    print(f"graftwatch: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_run(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from assays.errors import ConfigError
    from flows.config import load_config
    from flows.runners import configured_api_url, keep_freed_memory

    keep_freed_memory()  # before any other thread allocates: worker threads then share one malloc arena
    console = Console(stderr=False)
    inbox = Path(args.inbox)
    if not inbox.is_dir():
        return _fail(f"inbox {inbox} is not a folder (create it, or pass --inbox DIR)")
    try:
        config = load_config(args.config)
        if args.template:
            from gating.templates import load_template

            load_template(Path(args.template))  # fail fast with exit 2, before any file moves
    except ConfigError as exc:
        return _fail(str(exc))
    # With a Prefect server configured, every run is a flow run on record there. Without
    # one, the same batch runs in this process: starting Prefect's temporary server costs
    # 5-20 s (and can miss its start-up deadline on a loaded machine) to record a run that
    # the store's ingest_log records anyway (docs/operations.md).
    on_server = configured_api_url() is not None
    if not on_server and args.task_runner == "dask":
        return _fail("--task-runner dask needs a Prefect server: set PREFECT_API_URL (see docs/operations.md)")

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # Transient: the bar shows while files are processed, the summary (with the time) stays.
    with Progress(*columns, console=console, transient=True) as bar:
        from flows import progress as prog

        task_id = bar.add_task("Processing files", total=None)

        def report(stage: str, done: int, total: int) -> None:
            bar.update(task_id, completed=done, total=total)

        try:
            with prog.reporting(report):
                if on_server:
                    summary = _run_on_server(args, inbox)
                else:
                    from flows.batch import run_in_process

                    summary = run_in_process(str(inbox), str(args.store), args.config, args.template)
        except ConfigError as exc:
            return _fail(str(exc))
    seconds = time.monotonic() - _STARTED
    if summary.files == 0:
        console.print(f"Inbox {inbox} is empty: nothing to do ({seconds:.1f} s).")
        return EXIT_OK
    _print_summary(console, summary, seconds)
    return EXIT_OK


def _run_on_server(args, inbox: Path):
    """The batch as a ``process-inbox`` flow run on the configured Prefect server."""
    from flows.pipeline import process_inbox
    from flows.runners import check_api, configured_api_url, make_task_runner, server_errors

    check_api(configured_api_url())
    runner = make_task_runner(args.task_runner, args.dask_address)
    with server_errors():
        return process_inbox.with_options(task_runner=runner)(str(inbox), str(args.store), args.config, args.template)


def _print_summary(console, summary, seconds: float) -> None:
    from rich.table import Table

    t = Table(title=f"graftwatch run ({seconds:.1f} s)", show_header=True)
    for col in ("files", "stored", "duplicates", "quarantined", "samples", "flagged", "chimerism rows"):
        t.add_column(col, justify="right")
    t.add_row(*map(str, (summary.files, summary.stored, summary.duplicates, len(summary.quarantined),
                         summary.samples, len(summary.flagged_samples), summary.chimerism_results)))
    console.print(t)
    for q in summary.quarantined:
        console.print(f"[red]quarantined[/red] {q.name}: {q.reason.splitlines()[0]}", highlight=False)
    # The technician's own terminal, like the quarantine lines above: sample IDs are named
    # (logs and Prefect artifacts name them only with [privacy] show_patient_ids).
    for f in summary.flagged:
        why = "; ".join(f.reasons) or "a QC check failed"
        console.print(f"[yellow]flagged for review[/yellow] {f.sample_id}: {why}", highlight=False)
    if summary.returned:
        console.print(f"{summary.returned} file(s) were still being written and stay in the inbox for the next run")


def cmd_query(args) -> int:
    from flows.query import run_query

    return run_query(args.sql, args.store, args.format, args.out)


def cmd_watch(args) -> int:
    from flows.runners import keep_freed_memory
    from flows.watch import watch

    keep_freed_memory()  # as for `run`: before the watcher's threads exist, so its batches share one arena
    return watch(Path(args.inbox), args.store, args.config, template_path=args.template)


def cmd_report(args) -> int:
    from flows.report import write_report

    return write_report(args.patient_id, args.store, Path(args.out))


def cmd_resolve(args) -> int:
    from flows.resolve import resolve

    return resolve(args)


def cmd_cohort(args) -> int:
    from flows.cohort import write_cohort

    return write_cohort(args.store, Path(args.out), args.config)


def cmd_serve(args) -> int:
    from flows.serve import serve

    return serve(args)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("graftwatch")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """``--version``: the installed version is looked up only when asked (importlib.metadata
    costs ~0.1 s, a fifth of a `graftwatch query`)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0,
                         help=help or "show program's version number and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"graftwatch {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="graftwatch",
        description="Transplant immune-monitoring pipeline: FCS gating, donor chimerism, Parquet timelines.",
    )
    p.add_argument("--version", action=_VersionAction)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="process every file now in the inbox once, then exit")
    r.add_argument("--inbox", required=True, help="folder the lab drops files into")
    r.add_argument("--store", required=True, help="store root (folder or URI such as file:///data/store)")
    r.add_argument("--config", help="TOML settings (see docs/configuration.md)")
    r.add_argument("--template", help="Gating-ML 2.0 .xml or FlowJo .wsp replacing the built-in T-cell panel")
    r.add_argument("--task-runner", choices=("thread", "dask"), default="thread",
                   help="where per-file work runs: threads here (default) or a Dask cluster")
    r.add_argument("--dask-address", help="Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a local cluster)")
    r.set_defaults(func=cmd_run)

    w = sub.add_parser("watch", help="keep watching the inbox; Ctrl-C stops")
    w.add_argument("--inbox", required=True, help="folder the lab drops files into")
    w.add_argument("--store", required=True, help="store root (folder or URI such as file:///data/store)")
    w.add_argument("--config", help="TOML settings (see docs/configuration.md)")
    w.add_argument("--template", help="Gating-ML 2.0 .xml or FlowJo .wsp replacing the built-in T-cell panel")
    w.set_defaults(func=cmd_watch)

    q = sub.add_parser("query", help="run SQL over the store's tables and views")
    q.add_argument("sql", help="a SQL query over the views, e.g. \"SELECT * FROM immune_timeline\"")
    q.add_argument("--store", required=True, help="store root written by `graftwatch run`")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (fits the terminal; default), csv or json")
    q.add_argument("--out", help="write the result to FILE.parquet (or .csv/.json) instead of printing")
    q.set_defaults(func=cmd_query)

    rep = sub.add_parser("report", help="write a patient's timeline report (HTML)")
    rep.add_argument("patient_id", help="the patient_id of the sample sheet / registry")
    rep.add_argument("--store", required=True, help="store root written by `graftwatch run`")
    rep.add_argument("--out", required=True, help="the HTML file to write (self-contained)")
    rep.set_defaults(func=cmd_report)

    res = sub.add_parser("resolve", help="settle an identity conflict: say which sample a quarantined file is, "
                                         "or that it supersedes the stored one")
    res.add_argument("file", help="the quarantined file (its .error.txt note says why)")
    res.add_argument("--inbox", required=True, help="the inbox the file goes back to")
    res.add_argument("--store", required=True, help="store root (the decision is recorded there)")
    res.add_argument("--sample-id", help="this file is this sample (a file holding one sample)")
    res.add_argument("--rename", action="append", metavar="OLD=NEW",
                     help="in this file, sample OLD is NEW (repeatable; for exports holding several samples)")
    res.add_argument("--supersede", action="store_true",
                     help="this file replaces what is stored for its sample(s) (re-acquisition, corrected export)")
    res.add_argument("--reason", required=True, help="a few words for the record")
    res.set_defaults(func=cmd_resolve)

    c = sub.add_parser("cohort", help="write the cohort analysis (HTML) and print its statistics table")
    c.add_argument("--store", required=True, help="store root written by `graftwatch run`")
    c.add_argument("--out", required=True, help="the HTML file to write (self-contained), e.g. cohort.html")
    c.add_argument("--config", help="TOML settings ([cohort] windows, min_pairs, specimens)")
    c.set_defaults(func=cmd_cohort)

    s = sub.add_parser("serve", help="serve the deployments of prefect.yaml to a Prefect server")
    s.add_argument("--prefect-yaml", default="prefect.yaml", help="the deployments file (default: prefect.yaml)")
    s.add_argument("--deployment", action="append", help="serve only this deployment (repeatable)")
    s.add_argument("--limit", type=int, help="at most N flow runs at once")
    s.add_argument("--config", help="TOML settings ([prefect] port of the local server when PREFECT_API_URL is unset)")
    s.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _env_defaults()
    from assays.errors import ConfigError

    try:
        return args.func(args)
    except ConfigError as exc:  # e.g. a Prefect server that cannot be reached or started
        return _fail(str(exc))
    except KeyboardInterrupt:
        # Claimed files went back to the inbox and committed chunks stay: nothing is lost.
        print("graftwatch: stopped by Ctrl-C; files not yet processed are back in the inbox", file=sys.stderr)
        return 130


def entry() -> int:
    """The ``graftwatch`` console script: :func:`main`, then a quick interpreter exit.

    Tearing down an interpreter holding Prefect, pyarrow and DuckDB takes ~0.5 s, most of
    it garbage collection passes over objects that are freed anyway when the process
    ends: frozen, they are skipped (``gc.freeze``). Exit handlers still run.
    """
    import gc

    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(entry())
