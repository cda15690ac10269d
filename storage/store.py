"""The Parquet store: one folder per table, hive-partitioned by month, atomic writes.

Write protocol (crash-safe, idempotent re-runs):

1. every table's rows of a batch go to ``<table>/month=YYYY-MM/<batch_id>.parquet``,
   each written to a hidden temporary name and renamed into place, so a reader never
   sees half a file;
2. the batch becomes visible by one row in ``commits``, written last, the same way.

Readers (``storage.views``) show only committed batches; a crash before step 2
leaves orphan files that no view shows and that :func:`storage.compaction.compact`
removes. The root may be a local path or a URI that pyarrow understands
(``file:///...``, ``s3://...``).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow is imported where rows are converted, read or written, not at import: a local
# store's files are listed without it, so `graftwatch query` (DuckDB reads the Parquet)
# does not pay ~0.2 s for pyarrow and numpy.

TMP_PREFIX = ".tmp-"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_id(now: dt.datetime | None = None) -> str:
    """A sortable unique id: UTC time to the microsecond, then 8 random hex digits."""
    now = now or utcnow()
    return f"{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"


def to_table(name: str, rows: list) -> pa.Table:
    """Rows (dataclasses or dicts) as an Arrow table with the table's explicit schema."""
    import pyarrow as pa

    from storage.schemas import TABLES

    schema = TABLES[name]
    dicts = [asdict(r) if is_dataclass(r) else r for r in rows]
    return pa.Table.from_pylist(dicts, schema=schema)


class Store:
    """A store root and the filesystem it lives on."""

    def __init__(self, root: str | Path):
        root = str(root)
        self._fs = None
        if "://" in root:
            import pyarrow.fs as pafs

            self._fs, base = pafs.FileSystem.from_uri(root)
            self._local = isinstance(self._fs, pafs.LocalFileSystem)
        else:
            base, self._local = str(Path(root).resolve()), True
        self.base = base.rstrip("/")
        self.uri = root

    @property
    def fs(self):
        """The store's pyarrow filesystem."""
        if self._fs is None:
            import pyarrow.fs as pafs

            self._fs = pafs.LocalFileSystem()
        return self._fs

    @property
    def local_root(self) -> Path | None:
        """The store's folder on this machine, when it is on local disk."""
        return Path(self.base) if self._local else None

    def existing(self) -> Store:
        """This store, once checked to be one: ``ConfigError`` (exit 2) naming what is wrong.

        For the readers (``query``, ``report``, ``cohort``): a mistyped path must not read as
        an empty store. A store is the ``--store`` folder that ``graftwatch run`` wrote: it
        holds ``commits/``. Remote stores are not checked (listing a bucket costs a round trip).
        """
        from assays.errors import ConfigError

        root = self.local_root
        hint = "check the path (the store is the --store folder given to `graftwatch run`)"
        if root is not None and not root.is_dir():
            raise ConfigError(f"store {self.uri}: no such folder; {hint}")
        if root is not None and not (root / "commits").is_dir():
            raise ConfigError(f"{self.uri} is not a graftwatch store (no commits/ folder in it); {hint}")
        return self

    def table_dir(self, table: str) -> str:
        return f"{self.base}/{table}"

    def write_table(self, table: str, data: pa.Table, file_id: str, month: str | None = None) -> str | None:
        """Atomically write ``data`` as one Parquet file of ``table``; None when empty."""
        import pyarrow.parquet as pq

        if data.num_rows == 0:
            return None
        month = month or utcnow().strftime("%Y-%m")
        folder = f"{self.table_dir(table)}/month={month}"
        self.fs.create_dir(folder, recursive=True)
        final = f"{folder}/{file_id}.parquet"
        tmp = f"{folder}/{TMP_PREFIX}{file_id}-{uuid.uuid4().hex[:6]}.parquet"
        pq.write_table(data, tmp, filesystem=self.fs, compression="zstd")
        self.fs.move(tmp, final)
        return final

    def files(self, table: str) -> list[str]:
        """Visible Parquet files of a table (temporary files excluded)."""
        if self._local:
            found = ((f"{folder}/{name}", name) for folder, _, names in os.walk(self.table_dir(table))
                     for name in names if os.path.isfile(f"{folder}/{name}"))
        else:
            import pyarrow.fs as pafs

            sel = pafs.FileSelector(self.table_dir(table), recursive=True, allow_not_found=True)
            found = ((info.path, info.base_name) for info in self.fs.get_file_info(sel)
                     if info.type == pafs.FileType.File)
        return sorted(path for path, name in found if name.endswith(".parquet") and not name.startswith(TMP_PREFIX))

    def read_table(self, table: str) -> pa.Table:
        """All rows of a table, committed or not (use ``storage.views`` for analysis)."""
        import pyarrow as pa

        from storage.schemas import TABLES

        schema = TABLES[table]
        parts = [_conform(self._read_file(p), schema) for p in self.files(table)]
        if not parts:  # not schema.empty_table(): it builds arrays, and pyarrow imports pandas (~0.5 s) for that
            return pa.Table.from_batches([], schema=schema)
        return pa.concat_tables(parts)

    def _read_file(self, path: str) -> pa.Table:
        # ParquetFile, not pq.read_table: the latter goes through pyarrow.dataset, whose
        # import loads pandas (~0.6 s) into every `graftwatch query` and empty run.
        import pyarrow.parquet as pq

        with self.fs.open_input_file(path) as fh:
            return pq.ParquetFile(fh).read()

    def committed_batches(self) -> set[str]:
        return set(self.read_table("commits").column("batch_id").to_pylist())


def _conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """``t`` with exactly ``schema``'s columns, in its order and types: columns a file
    written before a column existed lacks are NULL (as pyarrow's dataset reader does)."""
    import pyarrow as pa

    columns = [t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(len(t), f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


class Batch:
    """Rows of several tables that become visible together (one ``commits`` row)."""

    def __init__(self, store: Store, kind: str):
        self.store = store
        self.kind = kind
        self.batch_id = new_id()
        self.rows: dict[str, list] = {}
        self.tables: dict[str, list[pa.Table]] = {}  # already converted (by worker threads)
        self.n_files = 0

    def add(self, table: str, rows: list | pa.Table) -> None:
        """Rows (dicts/dataclasses) or an Arrow table with the table's schema (``to_table``)."""
        import pyarrow as pa

        from storage.schemas import COLUMNS

        if table not in COLUMNS:
            raise KeyError(f"unknown table {table}")
        if isinstance(rows, pa.Table):
            self.tables.setdefault(table, []).append(rows)
        else:
            self.rows.setdefault(table, []).extend(rows)

    @property
    def empty(self) -> bool:
        return not any(self.rows.values()) and not any(t.num_rows for ts in self.tables.values() for t in ts)

    def commit(self) -> None:
        """Write every table's rows, then the commit row that makes them visible."""
        import pyarrow as pa

        for table in sorted(set(self.rows) | set(self.tables)):
            parts = list(self.tables.get(table, []))
            if self.rows.get(table):
                parts.append(to_table(table, self.rows[table]))
            data = pa.concat_tables(parts) if len(parts) > 1 else (parts[0] if parts else None)
            if data is None or data.num_rows == 0:
                continue
            data = data.set_column(data.schema.get_field_index("batch_id"), "batch_id",
                                   pa.array([self.batch_id] * data.num_rows, pa.string()))
            self.store.write_table(table, data, self.batch_id)
        commit = to_table("commits", [{"batch_id": self.batch_id, "kind": self.kind,
                                       "committed_at": utcnow(), "n_files": self.n_files}])
        self.store.write_table("commits", commit, self.batch_id)
        self.rows, self.tables = {}, {}
