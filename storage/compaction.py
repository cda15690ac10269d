"""Compaction: merge small Parquet files per table and month, drop crash orphans.

Every ingest chunk writes one small file per table plus one ``commits`` row
(:mod:`storage.store`). After months of polling the store holds thousands of tiny
files; :func:`compact` rewrites them as one file per table and month partition,
removes rows of batches that were never committed (a crash between writing data and
writing the commit row) and removes forgotten ``.tmp-*`` files.

Protocol (why it is safe for readers)
-------------------------------------
Readers (:func:`storage.views.connect`) show a row when its file is listed (not
``.tmp-*``) and its ``batch_id`` is in ``commits``. Files of a batch span several
tables, and removing N old files is N separate steps, so "write merged file, then
delete old files" would show rows twice in between, and "delete, then write" would
lose them. Instead the switch from old to new is ONE atomic rename of one commit file:

1. choose the batches ``S`` to merge: committed batches all of whose files are small;
   ``S`` is closed over commit files (a commit file holding a row of ``S`` holds only
   rows of ``S``), so after step 4 no other file still commits a batch of ``S``;
2. for each table and month, stream the rows of ``S`` into ONE merged file whose rows
   carry a NEW batch id ``M`` (written to ``.tmp-*`` and renamed into place). ``M`` is
   not committed yet, so no reader shows these rows;
3. write a commit file ``G`` holding the commit rows of ``S`` (copies), then delete the
   commit files they came from. Data visibility does not change: ``S`` is committed
   throughout (by ``G`` and, until deleted, by the old files too; the ``commits`` table
   is a set for readers);
4. replace ``G`` by a file holding only the commit row of ``M`` (temp name + rename,
   atomic): at this instant ``S`` stops being committed and ``M`` starts, so every
   reader sees each row exactly once, either from the old files or from the merged file;
5. wait ``settle_seconds`` (readers that read ``commits`` just before step 4 finish
   listing files), then delete the old data files of ``S``: they are now orphans.

A crash at any step leaves a state readers see correctly: before step 4 the merged
files are uncommitted orphans; after it the old files are. Both are removed by the next
compaction once older than ``orphan_minutes``. That age guard matters: a batch being
written by a running ingest has data files and, for a moment, no commit row yet;
deleting them would lose its rows when its commit lands.

Trade-offs, chosen deliberately: merged rows get a new ``batch_id`` (nothing in the
store uses batch ids except visibility), and the commit rows of ``S`` (kind, time,
n_files) are replaced by one ``compaction`` commit whose ``n_files`` is the number of
batches merged. Between steps 3 and 4 (milliseconds, or after a crash there) the raw
``commits`` table holds some batch ids twice; data views are unaffected (``IN``), and a
``SELECT DISTINCT`` in the ``commits`` view hides it from anyone counting commits.

One compaction at a time: a local store takes an exclusive ``flock`` on
``<root>/.compaction.lock``; on an object store, run compaction from one scheduled
deployment only (prefect.yaml gives it a concurrency limit of 1).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.schemas import TABLES
from storage.store import TMP_PREFIX, Store, new_id, utcnow

log = logging.getLogger("graftwatch")

# A file at or above this size is left alone: it is already "large" and rewriting it
# every night would cost more than it saves.
DEFAULT_SMALL_BYTES = 32 * 2**20


@dataclass
class PartitionMerge:
    """One merged file: ``files_in`` small files of ``table``/``month`` became one."""

    table: str
    month: str
    files_in: int
    rows: int
    path: str


@dataclass
class CompactionReport:
    """What :func:`compact` did (also returned by the nightly maintenance flow)."""

    new_batch_id: str | None = None
    batches_merged: int = 0
    merged: list[PartitionMerge] = field(default_factory=list)
    files_before: int = 0
    files_after: int = 0
    orphan_files_removed: int = 0
    orphan_rows_removed: int = 0
    tmp_files_removed: int = 0
    young_orphans_kept: int = 0  # uncommitted files newer than the age guard (maybe in flight)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"compaction: {self.batches_merged} batches merged into {len(self.merged)} files, "
                f"{self.files_before} -> {self.files_after} data files, {self.orphan_files_removed} orphan files "
                f"({self.orphan_rows_removed} rows) and {self.tmp_files_removed} temporary files removed, "
                f"{self.seconds:.1f} s")


@dataclass
class _File:
    table: str
    month: str
    path: str
    size: int
    mtime: float  # POSIX seconds
    batches: frozenset[str] = frozenset()
    rows: int = 0


def _month_of(table_dir: str, path: str) -> str | None:
    rel = path[len(table_dir) + 1:]
    first = rel.split("/", 1)[0]
    return first[len("month="):] if first.startswith("month=") else None


def _scan(store: Store, table: str) -> tuple[list[_File], list[_File]]:
    """(visible Parquet files, ``.tmp-*`` files) of ``table`` with size and mtime."""
    table_dir = store.table_dir(table)
    sel = pafs.FileSelector(table_dir, recursive=True, allow_not_found=True)
    files, tmps = [], []
    for info in store.fs.get_file_info(sel):
        if info.type != pafs.FileType.File:
            continue
        mtime = info.mtime.timestamp() if info.mtime is not None else time.time()
        f = _File(table, _month_of(table_dir, info.path) or "", info.path, info.size or 0, mtime)
        if info.base_name.startswith(TMP_PREFIX):
            tmps.append(f)
        elif info.path.endswith(".parquet"):
            files.append(f)
    return sorted(files, key=lambda f: f.path), tmps


def _read_batches(store: Store, f: _File) -> _File:
    t = pq.read_table(f.path, columns=["batch_id"], filesystem=store.fs)
    f.batches = frozenset(t.column("batch_id").unique().to_pylist())
    f.rows = t.num_rows
    return f


def _unified_schema(store: Store, table: str, paths: list[str]) -> pa.Schema:
    """The table's schema plus any extra column found in the files (nothing is dropped)."""
    schemas = [TABLES[table]] + [pq.read_schema(p, filesystem=store.fs) for p in paths]
    return pa.unify_schemas(schemas, promote_options="permissive")


def _align(t: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = []
    for fld in schema:
        if fld.name in t.column_names:
            col = t.column(fld.name)
            cols.append(col if col.type == fld.type else col.cast(fld.type))
        else:
            cols.append(pa.nulls(t.num_rows, fld.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _write_merged(store: Store, table: str, month: str, sources: list[_File], keep: set[str],
                  batch_id: str) -> tuple[str, int]:
    """Stream the rows of ``keep`` batches from ``sources`` into one file of batch ``batch_id``.

    One source file is in memory at a time, so memory is bounded by the largest small
    file, not by the partition.
    """
    schema = _unified_schema(store, table, [s.path for s in sources])
    folder = f"{store.table_dir(table)}/month={month}"
    final = f"{folder}/{batch_id}.parquet"
    tmp = f"{folder}/{TMP_PREFIX}{batch_id}-{uuid.uuid4().hex[:6]}.parquet"
    rows = 0
    with pq.ParquetWriter(tmp, schema, filesystem=store.fs, compression="zstd") as writer:
        for src in sources:
            t = pq.read_table(src.path, filesystem=store.fs)
            if not src.batches <= keep:
                mask = pc.is_in(t.column("batch_id"), value_set=pa.array(sorted(keep), pa.string()))
                t = t.filter(mask)
            t = _align(t, schema)
            t = t.set_column(schema.get_field_index("batch_id"), schema.field("batch_id"),
                             pa.array([batch_id] * t.num_rows, pa.string()))
            writer.write_table(t)
            rows += t.num_rows
    store.fs.move(tmp, final)
    return final, rows


def _commit_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=TABLES["commits"])


def _write_atomic(store: Store, path: str, data: pa.Table) -> None:
    folder = path.rsplit("/", 1)[0]
    store.fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/{TMP_PREFIX}{uuid.uuid4().hex}.parquet"
    pq.write_table(data, tmp, filesystem=store.fs, compression="zstd")
    store.fs.move(tmp, path)  # replaces an existing file atomically on POSIX filesystems


@contextlib.contextmanager
def _exclusive(store: Store):
    """One compaction at a time on a local store (flock); a no-op on object stores."""
    root = store.local_root
    if root is None:
        yield
        return
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".compaction.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def compact(store: Store | str, orphan_minutes: float = 60.0, small_bytes: int = DEFAULT_SMALL_BYTES,
            settle_seconds: float = 2.0, _hook=None) -> CompactionReport:
    """Merge small files per table/month, drop crash orphans and stale temporaries.

    Parameters
    ----------
    store : the store (or its root path/URI).
    orphan_minutes : uncommitted data files and ``.tmp-*`` files are removed only when
        older than this; younger ones may belong to an ingest that is writing right now.
    small_bytes : files smaller than this are merged; larger ones are left as they are.
    settle_seconds : pause between the atomic switch and deleting the old files, so a
        reader that read ``commits`` just before the switch finishes listing files.
    _hook : tests only: called as ``_hook(step)`` after each protocol step
        (``merged``, ``consolidated``, ``switched``, ``deleted``), to read the store or to
        simulate a crash by raising.

    Query results through :mod:`storage.views` are identical before and after (row order
    aside), and at every moment in between. See the module docstring for the protocol.
    """
    store = store if isinstance(store, Store) else Store(store)
    hook = _hook or (lambda step: None)
    t0 = time.perf_counter()
    report = CompactionReport()
    with _exclusive(store):
        _compact(store, orphan_minutes, small_bytes, settle_seconds, hook, report)
    report.seconds = time.perf_counter() - t0
    log.info(report.summary())
    return report


def _compact(store, orphan_minutes, small_bytes, settle_seconds, hook, report) -> None:
    now = time.time()
    old_enough = now - orphan_minutes * 60.0

    # Commits first, then data files: a batch committed after this read is simply not
    # merged this time (its files are young, so the orphan rule below keeps them).
    commit_files, commit_tmps = _scan(store, "commits")
    commit_rows: dict[str, list[dict]] = {}
    for cf in commit_files:
        commit_rows[cf.path] = pq.read_table(cf.path, filesystem=store.fs, schema=TABLES["commits"]).to_pylist()
    committed = {r["batch_id"] for rows in commit_rows.values() for r in rows}

    data: list[_File] = []
    tmps = list(commit_tmps)
    for table in TABLES:
        if table == "commits":
            continue
        files, t_tmps = _scan(store, table)
        tmps += t_tmps
        data += [_read_batches(store, f) for f in files]
    report.files_before = len(data)

    # Stale temporaries: a writer that died between writing and renaming.
    for f in tmps:
        if f.mtime < old_enough:
            store.fs.delete_file(f.path)
            report.tmp_files_removed += 1

    # Orphans: files none of whose rows are committed (mixed files are filtered on merge).
    live: list[_File] = []
    for f in data:
        if f.batches and not (f.batches & committed):
            if f.mtime < old_enough:
                store.fs.delete_file(f.path)
                report.orphan_files_removed += 1
                report.orphan_rows_removed += f.rows
            else:
                report.young_orphans_kept += 1
            continue
        live.append(f)

    selected = _select_batches(live, commit_rows, committed, small_bytes)
    if len(selected) < 2:
        report.files_after = report.files_before - report.orphan_files_removed
        return

    merge_id = new_id()
    report.new_batch_id = merge_id
    report.batches_merged = len(selected)
    groups: dict[tuple[str, str], list[_File]] = {}
    for f in live:
        if f.batches & selected:
            groups.setdefault((f.table, f.month), []).append(f)
    for (table, month), sources in sorted(groups.items()):
        path, rows = _write_merged(store, table, month, sources, selected, merge_id)
        report.merged.append(PartitionMerge(table, month, len(sources), rows, path))
    hook("merged")

    # Gather the commit rows of the selected batches in one file G, so one rename can
    # later retire all of them at once.
    month_now = utcnow().strftime("%Y-%m")
    g_path = f"{store.table_dir('commits')}/month={month_now}/{merge_id}.parquet"
    g_rows = [r for rows in commit_rows.values() for r in rows if r["batch_id"] in selected]
    _write_atomic(store, g_path, _commit_table(g_rows))
    for path, rows in commit_rows.items():
        if rows and all(r["batch_id"] in selected for r in rows):
            store.fs.delete_file(path)
    hook("consolidated")

    # The switch: G now commits the merged batch instead of the batches it replaces.
    _write_atomic(store, g_path, _commit_table([{
        "batch_id": merge_id, "kind": "compaction", "committed_at": utcnow(), "n_files": len(selected),
    }]))
    hook("switched")

    if settle_seconds > 0:
        time.sleep(settle_seconds)
    replaced = 0
    for sources in groups.values():
        for f in sources:
            store.fs.delete_file(f.path)
            replaced += 1
    hook("deleted")
    report.files_after = report.files_before - report.orphan_files_removed - replaced + len(report.merged)


def _select_batches(live: list[_File], commit_rows: dict[str, list[dict]], committed: set[str],
                    small_bytes: int) -> set[str]:
    """Committed batches whose every file is small and single-batch, closed over commit files."""
    by_batch: dict[str, list[_File]] = {}
    for f in live:
        for b in f.batches:
            by_batch.setdefault(b, []).append(f)
    ok = {b for b, files in by_batch.items()
          if b in committed and all(f.size < small_bytes and len(f.batches) == 1 for f in files)}
    # Commit files whose rows are not all mergeable pin their batches: such a file would
    # keep committing a merged batch after the switch and show its rows twice.
    changed = True
    while changed:
        changed = False
        for rows in commit_rows.values():
            ids = {r["batch_id"] for r in rows}
            if ids & ok and not ids <= ok:
                ok -= ids
                changed = True
    # Commit-only batches (no data rows, e.g. an all-duplicates chunk) are not merged:
    # retiring them would gain nothing.
    return {b for b in ok if b in by_batch}
