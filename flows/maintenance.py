"""Scheduled and manual store maintenance, as Prefect flows (deployments in prefect.yaml).

* :func:`nightly_maintenance`: compact small Parquet files (:mod:`storage.compaction`),
  refresh chimerism from the committed measurements (a no-op when nothing changed), and
  check that every table and analyst view still builds and answers.
* :func:`reprocess`: re-gate archived FCS originals with a new template (or the current
  built-in panel). Each sample gets a NEW ``analysis_id``; the views show the latest
  analysis of each sample (``analyses.created_at``), so older results stay queryable
  but out of the way. Originals in ``archive/`` are only read, never modified.

Per-file work reuses :func:`flows.process.process_file` (the same reading, validation,
gating and statistics as the inbox flow); only the ``samples`` row is left out, since
the sample itself is already stored.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.config import load_config
from flows.runners import make_task_runner
from storage.store import Batch, Store

log = logging.getLogger("graftwatch")


# --- nightly maintenance -------------------------------------------------------------

@task(name="compact-store", cache_policy=NO_CACHE)
def compact_task(store: str, orphan_minutes: float, small_mb: float) -> dict:
    from storage.compaction import compact

    report = compact(Store(store), orphan_minutes=orphan_minutes, small_bytes=int(small_mb * 2**20))
    log.info(report.summary())
    return asdict(report)


@task(name="refresh-chimerism", cache_policy=NO_CACHE)
def chimerism_task(store: str, config_path: str | None) -> int:
    from flows.chimerism_update import update_chimerism

    return update_chimerism(Store(store), load_config(config_path))


@task(name="check-views", cache_policy=NO_CACHE)
def check_views_task(store: str) -> dict[str, int]:
    """Row count of every table and contract view; raises when one does not build."""
    from storage.schemas import TABLES
    from storage.views import CONTRACT_VIEWS, connect

    con = connect(Store(store))
    counts = {}
    for name in [*TABLES, *CONTRACT_VIEWS]:
        counts[name] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    return counts


@flow(name="nightly-maintenance", validate_parameters=False)
def nightly_maintenance(store: str, config_path: str | None = None, orphan_minutes: float = 60.0,
                        small_mb: float = 32.0) -> dict:
    """Compact the store, refresh chimerism, check the views; returns what was done.

    ``orphan_minutes``: uncommitted files younger than this are kept (an ingest may be
    writing them right now). ``small_mb``: files under this size are merged.
    """
    from flows.backfill import backfill_population_roles

    backfill_population_roles(Store(store))  # once per store; a no-op afterwards
    compaction = compact_task(store, orphan_minutes, small_mb)
    chimerism_rows = chimerism_task(store, config_path)
    counts = check_views_task(store)
    result = {"compaction": compaction, "chimerism_rows_written": chimerism_rows, "row_counts": counts}
    _artifact("nightly-maintenance", _maintenance_markdown(result), "Compaction and view check")
    return result


def _maintenance_markdown(result: dict) -> str:
    c = result["compaction"]
    lines = ["# graftwatch nightly maintenance", "",
             f"- batches merged: {c['batches_merged']} into {len(c['merged'])} files "
             f"({c['files_before']} -> {c['files_after']} data files)",
             f"- orphan files removed: {c['orphan_files_removed']} ({c['orphan_rows_removed']} rows); "
             f"temporary files removed: {c['tmp_files_removed']}",
             f"- chimerism rows written: {result['chimerism_rows_written']}", "",
             "| table or view | rows |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result["row_counts"].items()]
    return "\n".join(lines)


# --- reprocessing --------------------------------------------------------------------

@dataclass
class ReprocessSummary:
    """What a reprocessing run did. Names appear only in ``failed`` and only as reasons."""

    files: int = 0
    samples: int = 0
    analyses: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # plain reasons (the files stay in archive/)
    missing: int = 0  # stored FCS whose original was not found under archive_dir


@task(name="regate-file", cache_policy=NO_CACHE, retries=0)
def regate_task(path: str, name: str, setup):
    from flows.inbox import InboxFile
    from flows.process import process_file

    out = process_file(InboxFile(Path(path), name), setup, set())
    out.rows.pop("samples", None)  # the sample is already stored; only the analysis is new
    return out


def _sniff_fcs(path: Path) -> bool:
    from assays.fcs import sniff

    try:
        with open(path, "rb") as fh:
            return sniff(fh.read(6))
    except OSError:
        return False


def archived_fcs(store: Store, archive_dir: Path, sample_ids: list[str] | None = None) -> tuple[list[tuple[Path, str]], int]:
    """(path, original file name) of one archived original per stored FCS file, and how
    many stored FCS files have no original under ``archive_dir``.

    The archive is searched by content (sha256 of each FCS file found under
    ``archive_dir``), not by the path recorded at ingest, so a moved archive still works.
    The name is the one the file had in the inbox: an FCS file without ``SAMPLE ID`` or
    ``$SMNO`` takes its sample id from it, and the archive may have renamed the copy.
    Symbolic links are not followed.
    """
    from assays.hashing import sha256_of
    from storage.views import connect

    con = connect(store)
    sql = ("SELECT DISTINCT l.source_sha256 FROM ingest_log l WHERE l.status = 'stored' AND l.assay = 'fcs'")
    params: list = []
    if sample_ids:
        sql += (" AND l.source_sha256 IN (SELECT source_sha256 FROM samples WHERE sample_id IN "
                f"({', '.join('?' for _ in sample_ids)}))")
        params = list(sample_ids)
    wanted = {r[0] for r in con.execute(sql, params).fetchall()}
    names = dict(con.execute("SELECT source_sha256, min(source_name) FROM samples WHERE assay = 'flow' "
                             "GROUP BY 1").fetchall())
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(archive_dir, followlinks=False):
        dirnames.sort()
        for fname in sorted(filenames):
            p = Path(dirpath) / fname
            if p.is_symlink() or not p.is_file() or not _sniff_fcs(p):
                continue
            sha = sha256_of(p)
            if sha in wanted and sha not in found:
                found[sha] = p
    out = [(p, names.get(s) or p.name) for s, p in found.items()]
    return sorted(out, key=lambda x: str(x[0])), len(wanted - set(found))


# Bounded like the inbox flow (flows.runners.make_task_runner): Prefect's default pool
# runs min(32, cores + 4) files at once, and every 1M-event file in flight holds ~0.5 GB.
@flow(name="reprocess", validate_parameters=False, task_runner=make_task_runner("thread"))
def reprocess(store: str, archive_dir: str, template_path: str | None = None, config_path: str | None = None,
              sample_ids: list[str] | None = None) -> ReprocessSummary:
    """Re-gate archived FCS originals into new analyses (all stored FCS, or ``sample_ids``).

    ``template_path``: Gating-ML 2.0 ``.xml`` or FlowJo ``.wsp``; None re-runs the built-in
    adaptive panel (e.g. after the panel changed). Results are committed in chunks of
    ``[inbox] chunk_files``; a crash keeps what was committed, and a rerun simply writes
    newer analyses (the views show the latest), so nothing is ever doubled in the views.
    """
    from flows.batch import build_setup, default_workers
    from flows.runners import blas_threads_per_worker, keep_freed_memory

    config = load_config(config_path)
    setup = build_setup(config, template_path)
    st = Store(store)
    files, missing = archived_fcs(st, Path(archive_dir), sample_ids)
    if template_path is None and files:
        from flows.controls import find_controls
        from flows.inbox import InboxFile

        setup.controls = find_controls(st, Path(archive_dir), [InboxFile(p, name) for p, name in files])
    summary = ReprocessSummary(files=len(files), missing=missing)
    keep_freed_memory()
    with blas_threads_per_worker(default_workers()):
        _regate_chunks(st, files, setup, max(1, config.inbox.chunk_files), summary)
    _artifact("reprocess-summary", (
        f"# graftwatch reprocessing\n\n- template: {Path(template_path).name if template_path else 'built-in panel'}\n"
        f"- archived FCS files: {summary.files} ({summary.missing} stored files not found in the archive)\n"
        f"- samples re-gated: {summary.samples}\n- failed: {len(summary.failed)}"), "Reprocessing")
    return summary


def _regate_chunks(st: Store, files: list, setup, size: int, summary: ReprocessSummary) -> None:
    """Re-gate ``files`` in chunks of ``size``, one committed batch per chunk."""
    for start in range(0, len(files), size):
        futures = [regate_task.submit(str(p), name, setup) for p, name in files[start:start + size]]
        batch = Batch(st, "reprocess")
        for fut in futures:
            out = fut.result()
            if out.status != "stored":
                summary.failed.append(out.error or "not readable")
                continue
            for table, rows in out.rows.items():
                batch.add(table, rows)
            summary.samples += len(out.sample_ids)
            summary.analyses += [r["analysis_id"] for r in out.rows.get("analyses", [])]
            batch.n_files += 1
        if not batch.empty:
            batch.commit()


def _artifact(key: str, markdown: str, description: str) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key=key, markdown=markdown, description=description)
    except Exception as exc:  # a convenience only
        log.debug("artifact not published: %s", exc)
