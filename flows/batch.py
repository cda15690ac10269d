"""One batch: every file now in the inbox, once (the body of the ``process-inbox`` flow).

Per-file work is independent and goes to a pool (``submit``): Prefect tasks on its task
runner when the batch is a Prefect flow run (:mod:`flows.pipeline`), or a plain thread
pool in this process (:func:`run_in_process`, what a one-shot ``graftwatch run`` uses when
no Prefect server is configured: the store's ``ingest_log`` is then the record).
Results are committed in chunks (``[inbox] chunk_files``) so a crash loses at most one
chunk of work and never a file: originals leave the inbox only after the chunk's rows
are committed. This module imports no Prefect.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Protocol

from assays.errors import ConfigError
from flows import progress
from flows.backfill import backfill_population_roles
from flows.config import Config, load_config
from flows.inbox import (ClaimSession, InboxFile, archive, archive_target, file_signature, list_inbox, mark_resolved,
                         quarantine, take_back_leftovers)
from flows.identity import IdentityBook
from flows.process import FileOutcome, GatingSetup, process_file, quarantine_unexpected
from storage.store import Batch, Store, new_id, utcnow

log = logging.getLogger("graftwatch")

SHEET_KINDS = ("sample_sheet", "registry")


@dataclass
class QuarantinedFile:
    name: str
    reason: str


@dataclass
class FlaggedSample:
    sample_id: str
    reasons: list[str]  # the failed QC checks, in words where the check gives them


@dataclass
class RunSummary:
    """What one run did; printed by the CLI and published as a Prefect artifact."""

    stored: int = 0
    duplicates: int = 0
    quarantined: list[QuarantinedFile] = field(default_factory=list)
    samples: int = 0
    flagged_samples: list[str] = field(default_factory=list)
    flagged: list[FlaggedSample] = field(default_factory=list)  # the same samples, with why
    returned: int = 0  # files still being written when read: back in the inbox for the next run
    chimerism_results: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed over files; "write" = commits
    worker_seconds: dict[str, float] = field(default_factory=dict)  # per-file work by worker thread/process
    chimerism_inputs: int = 0  # stored files that can change chimerism (exports, sheets, registries)

    def add_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    @property
    def files(self) -> int:
        return self.stored + self.duplicates + len(self.quarantined)


class _Result(Protocol):
    def result(self) -> list[FileOutcome]: ...


# submit(files, setup, known) -> a future of process_files(files, setup, known)
Submit = Callable[[list[InboxFile], GatingSetup, dict[str, str]], _Result]


def process_files(files: list[InboxFile], setup: GatingSetup, known: dict[str, str]) -> list[FileOutcome]:
    """Process one work unit of files (one pool job): their outcomes, rows as Arrow tables."""
    outcomes = [process_file(f, setup, known) for f in files]
    for out in outcomes:
        out.worker = f"{os.getpid()}-{threading.get_ident()}"
        try:
            out.convert_rows()
        except Exception as exc:  # a value no table holds: that file is quarantined, the batch goes on
            quarantine_unexpected(out, exc)
    return outcomes


def _size(f: InboxFile) -> int:
    try:
        return f.path.lstat().st_size
    except OSError:
        return 0


def pack(files: list[InboxFile], max_files: int, max_bytes: float) -> list[list[InboxFile]]:
    """Consecutive groups of at most ``max_files`` files and about ``max_bytes`` bytes
    (a single larger file makes a group of its own)."""
    groups: list[list[InboxFile]] = []
    current: list[InboxFile] = []
    held = 0
    for f in files:
        n = _size(f)
        if current and (len(current) >= max(1, max_files) or held + n > max_bytes):
            groups.append(current)
            current, held = [], 0
        current.append(f)
        held += n
    if current:
        groups.append(current)
    return groups


def work_units(files: list[InboxFile], workers: int, max_bytes: int = 64 * 2**20) -> list[list[InboxFile]]:
    """Group files into Prefect tasks: big files alone, small files together.

    A task costs Prefect ~20-30 ms of bookkeeping, more than gating a 10k-event tube; so
    consecutive files share a task up to ``total / (2 x workers)`` bytes (at most
    ``max_bytes``), leaving every worker about two units.
    """
    target = min(max_bytes, max(1, sum(_size(f) for f in files) // max(1, 2 * workers)))
    return pack(files, len(files) or 1, target)


def known_sha256(store: Store) -> dict[str, str]:
    """Every file already stored (committed ``ingest_log`` rows with status stored):
    sha256 -> its archived name (or its inbox name)."""
    committed = store.committed_batches()
    log_t = store.read_table("ingest_log").to_pylist()
    return {r["source_sha256"]: r["archived_as"] or r["source_name"] for r in log_t
            if r["status"] == "stored" and r["batch_id"] in committed}


def build_setup(config: Config, template_path: str | None) -> GatingSetup:
    if template_path:
        from gating.templates import load_template

        template = load_template(Path(template_path))
        from gating.compiled_strategy import compile_strategy

        from flows.process import export_gatingml

        # Compiled and exported once per run: the gate tree walk and the stored
        # Gating-ML are the same for every file.
        template.compiled = compile_strategy(template.strategy)
        template.exported = export_gatingml(template.strategy, {})
        return GatingSetup(template=template)
    from gating.panel import load_panel

    return GatingSetup(panel=load_panel(config.panel) if config.panel else load_panel())


@dataclass
class _Run:
    """What the chunks of one run share."""

    store: Store
    inbox: Path
    config: Config
    setup: GatingSetup
    claims: ClaimSession
    known: dict[str, str]  # sha256 of stored files -> archived name
    book: IdentityBook
    summary: RunSummary
    counter: "_Counter"
    submit: Submit


def _still_written(out: FileOutcome) -> bool:
    """True when the file changed after it was hashed: a writer is still at it (a paused
    copy), so neither its rows nor a quarantine note about its bytes would be true."""
    return out.signature is not None and file_signature(out.file.path) not in (out.signature, None)


_CUT_OFF = ("truncated", "cut off")


def _recheck_truncated(outcomes: list[FileOutcome], seconds: float) -> None:
    """Give files that read as cut off one more look before they are quarantined: a
    paused copy resumes (the file then changed: :func:`_still_written`), a truly
    truncated file stays as it is. One wait for the whole chunk."""
    if any(o.status == "quarantined" and o.error and any(w in o.error for w in _CUT_OFF) for o in outcomes):
        time.sleep(seconds)


def _flag_reasons(out: FileOutcome) -> list[str]:
    """The failed QC checks of a flagged FCS outcome, in words where the check has them."""
    t = out.tables.get("flow_qc")
    if t is None:
        return []
    rows = t.to_pylist()
    return [r.get("message") or r["check"] for r in rows if r.get("passed") is False]


def _commit_chunk(run: _Run, outcomes: list[FileOutcome]) -> None:
    summary, inbox = run.summary, run.inbox
    returned = [o for o in outcomes if _still_written(o)]
    outcomes = [o for o in outcomes if o not in returned]
    batch = Batch(run.store, "ingest")
    now = utcnow()
    targets: dict[int, Path] = {}
    for i, out in enumerate(outcomes):
        for table, rows in [*out.rows.items(), *out.tables.items()]:
            batch.add(table, rows)
        if out.status != "quarantined":
            dup_of = run.known.get(out.sha256) if out.status == "duplicate" else None
            if dup_of and os.path.isabs(dup_of) and not os.path.lexists(dup_of):
                # Stored, but its run was killed before the original reached the archive:
                # this is that original, and it goes where the store says it is.
                targets[i] = Path(dup_of)
            else:
                targets[i] = archive_target(inbox, out.file, out.sha256, duplicate_of=dup_of)
        batch.add("ingest_log", [{
            "source_sha256": out.sha256 or None, "source_name": out.file.name, "assay": out.kind,
            "status": out.status, "error": out.error, "seen_at": now, "n_samples": len(out.sample_ids),
            "archived_as": str(targets[i]) if i in targets else None,
        }])
    batch.n_files = len(outcomes)
    t0 = time.perf_counter()
    batch.commit()
    summary.add_stage("write", time.perf_counter() - t0)
    # Originals leave the inbox only once their rows are committed. A file still being
    # written stays claimed and goes back to the inbox when the run ends.
    summary.returned += len(returned)
    for i, out in enumerate(outcomes):
        if out.status == "quarantined":
            quarantine(inbox, out.file, out.error or "rejected")
            summary.quarantined.append(QuarantinedFile(out.file.name, out.error or ""))
        else:
            archive(out.file, targets[i])
            mark_resolved(inbox, out.file.name, f"a file of this name was {out.status} on "
                          f"{now:%Y-%m-%d %H:%M} UTC (archived as {targets[i].name})")
            if out.status == "duplicate":
                summary.duplicates += 1
            else:
                run.known[out.sha256] = str(targets[i])
                summary.stored += 1
                summary.samples += len(out.sample_ids)
                if out.kind != "fcs":
                    summary.chimerism_inputs += 1
                if out.review:
                    summary.flagged_samples.extend(out.sample_ids)
                    reasons = _flag_reasons(out)
                    summary.flagged.extend(FlaggedSample(sid, reasons) for sid in out.sample_ids)
        for stage, sec in out.stage_seconds.items():
            summary.add_stage(stage, sec)
        summary.worker_seconds[out.worker] = summary.worker_seconds.get(out.worker, 0.0) + out.seconds


def _with_kind(f: InboxFile) -> InboxFile:
    """``f`` with its detected kind, so the file is sniffed once per run; an undetectable
    file keeps kind None and gets its reason when it is processed."""
    from assays.detect import detect_kind

    if f.refused:
        return f
    try:
        return dataclasses.replace(f, kind=detect_kind(f.path))
    except Exception:
        return f


def run_inbox(inbox: Path, store: Store, config: Config, setup: GatingSetup, submit: Submit,
              progress_artifact: bool = False) -> RunSummary:
    """Process every file now in ``inbox`` into ``store``; per-file work goes to ``submit``.

    ``progress_artifact``: inside a Prefect flow run, long runs also show a progress
    artifact in the UI.
    """
    summary = RunSummary()
    take_back_leftovers(inbox)
    files = list_inbox(inbox)
    # Sheets first: they name roles and unstimulated controls the other files need.
    if not files:  # nothing to read the store for (an empty scheduled check stays cheap)
        return summary
    files = [_with_kind(f) for f in files]
    sheets = [f for f in files if f.kind in SHEET_KINDS]
    rest = [f for f in files if f not in sheets]
    backfill_population_roles(store)  # once per store: rows stored before flow_populations.role
    from storage.identity import identity_decisions, reference_samples, stored_samples
    from storage.views import connect

    con = connect(store)  # one snapshot for the three identity readers
    book = IdentityBook(stored_samples(store, con), identity_decisions(store, con), reference_samples(store, con))
    run = _Run(store, inbox, config, setup, ClaimSession(inbox, new_id()), known_sha256(store), book, summary,
               _Counter(len(files), progress_artifact), submit)
    try:
        _run_group(run, sheets)
        if sheets:  # this drop's sheet may name references the exports below carry
            book.references = reference_samples(store, connect(store))
        if setup.template is None and rest:
            from flows.controls import control_pairs, find_controls, split_controls

            pairs = control_pairs(store)
            controls, rest = split_controls(rest, pairs)
            _run_group(run, controls)
            setup.controls = find_controls(store, pairs)
        _run_group(run, rest)
    finally:
        run.claims.close()
    if summary.chimerism_inputs:
        from flows.chimerism_update import update_chimerism

        summary.chimerism_results = update_chimerism(store, config)
    return summary


class _Counter:
    """Files done: to the CLI's progress bar and, in long flow runs, a Prefect progress artifact."""

    def __init__(self, total: int, artifact: bool):
        self.done, self.total = 0, total
        self.artifact = None
        if artifact:
            from flows.artifacts import RunProgress

            self.artifact = RunProgress(total)
        progress.report("files", 0, total)

    def step(self) -> None:
        self.done += 1
        progress.report("files", self.done, self.total)
        if self.artifact is not None:
            self.artifact.update(self.done)


def _run_group(run: _Run, group: list[InboxFile]) -> None:
    """Claim, process and commit ``group`` in chunks (``[inbox] chunk_files`` / ``chunk_mb``)."""
    # A chunk is the unit of commit: a crash redoes at most one chunk's work.
    for part in pack(group, run.config.inbox.chunk_files, run.config.inbox.chunk_mb * 2**20):
        chunk = [c for c in (run.claims.claim(f) for f in part) if c is not None]
        futures = [run.submit(unit, run.setup, run.known) for unit in work_units(chunk, default_workers())]
        outcomes = []
        seen_now: set[str] = set()
        for fut in futures:
            for out in fut.result():
                # The same bytes twice in one chunk: the second copy is a duplicate.
                if out.status == "stored" and out.sha256 in seen_now:
                    out.status, out.rows, out.tables, out.sample_ids = "duplicate", {}, {}, []
                seen_now.add(out.sha256)
                outcomes.append(out)
                run.counter.step()
        if outcomes:
            _recheck_truncated(outcomes, run.config.inbox.truncated_recheck_seconds)
            run.book.check([o for o in outcomes if not _still_written(o)], utcnow())
            _commit_chunk(run, outcomes)
            run.book.committed()


# What the flow body imports on first use: ~1.4 s together (flowkit ~1 s, pyarrow's
# dataset layer ~0.25 s, which loads pandas). `graftwatch watch` imports them while its
# local Prefect server starts, when it would otherwise only wait. A one-shot run does not:
# it would pay them even on an empty inbox.
FIRST_USE_IMPORTS = ("pyarrow.dataset", "duckdb", "sklearn.mixture", "gating.panel", "gating.adaptive",
                     "gating.sample_gating", "gating.statistics", "flows.chimerism_update", "flows.controls", "storage.views")


def import_first_use(template: bool) -> None:
    """Import :data:`FIRST_USE_IMPORTS` (and flowkit when ``template``: only templates use
    it) now rather than inside the first flow run, then freeze every object allocated so
    far (``gc.freeze``).

    Without the freeze, the garbage collector's full passes during the run scan the
    millions of objects these modules and Prefect allocate at import: measured on 100
    10k-event files, the run went from 0.94 to 1.1 s; frozen, they are skipped (they
    live as long as the process anyway).
    """
    import gc
    import importlib

    for name in FIRST_USE_IMPORTS:
        importlib.import_module(name)
    if template:  # flowkit is a lazy module once gating is imported: a name loads it
        importlib.import_module("flowkit").Sample  # noqa: B018
    gc.freeze()


# What the workers need only when a file's rows become Arrow tables (pyarrow's pa.array
# imports pandas, ~0.5 s): imported by a thread of its own as the first file starts, so
# the import overlaps the files' numpy work instead of stalling both workers at the end
# of their first file (or, imported up front, delaying the first file).
ROW_CONVERSION_IMPORTS = ("pandas",)


def import_in_background(names: tuple[str, ...]) -> threading.Thread | None:
    """Import ``names`` (those not yet imported) in a daemon thread; returns it, or None.

    The import system's per-module locks make a worker that needs one of them meanwhile
    wait for that import instead of starting a second one.
    """
    import importlib
    import sys

    todo = [name for name in names if name not in sys.modules]
    if not todo:
        return None

    def run() -> None:
        for name in todo:
            try:
                importlib.import_module(name)
            except ImportError:  # optional for pyarrow: its own import will say so
                pass

    thread = threading.Thread(target=run, name="graftwatch-imports", daemon=True)
    thread.start()
    return thread


def default_workers() -> int:
    """Files gated at once: one per core, at most 4 (each 1M-event file holds ~0.5 GB)."""
    return max(1, min(4, os.cpu_count() or 1))


def prepare(inbox: str, store: str, config_path: str | None, template_path: str | None
            ) -> tuple[Path, Store, Config, GatingSetup]:
    """Validate a batch's arguments and build what every file needs (``ConfigError`` on bad ones)."""
    from flows.runners import keep_freed_memory

    keep_freed_memory()
    config = load_config(config_path)
    setup = build_setup(config, template_path)
    if config.flow.gating_pictures != "none":
        setup.pictures_store, setup.pictures = store, config.flow.gating_pictures
    inbox_p = Path(inbox)
    if not inbox_p.is_dir():
        raise ConfigError(f"inbox {inbox}: no such folder")
    return inbox_p, Store(store), config, setup


def run_in_process(inbox: str, store: str, config_path: str | None = None, template_path: str | None = None,
                   workers: int | None = None) -> RunSummary:
    """Process every file in ``inbox`` into the store at ``store``, once, without Prefect.

    The same batch as the ``process-inbox`` flow (:func:`run_inbox`), on a bounded thread
    pool in this process: nothing to start, no server to wait for. The store's
    ``ingest_log`` records every file.
    """
    from flows.runners import blas_threads_per_worker

    inbox_p, store_o, config, setup = prepare(inbox, store, config_path, template_path)
    n = workers or default_workers()
    # Bounded: every 1M-event file in flight holds its events, their compensated copy and
    # the transformed columns in memory. The BLAS limit (a scan of the loaded libraries)
    # is set at the first file, so an empty inbox does not pay for it.
    with contextlib.ExitStack() as limits, \
            ThreadPoolExecutor(max_workers=n, thread_name_prefix="graftwatch-file") as pool:
        limited = False

        def submit(files, setup_, known) -> Future:
            nonlocal limited
            first = not limited
            if first:
                limits.enter_context(blas_threads_per_worker(n, scipy_blas=setup.template is None))
                limited = True
            future = pool.submit(process_files, files, setup_, known)
            if first:
                import_in_background(ROW_CONVERSION_IMPORTS)
            return future

        return run_inbox(inbox_p, store_o, config, setup, submit)
