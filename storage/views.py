"""DuckDB views over the store for analysts (DESIGN.md, Contract: Views).

Every contract table is a view of its committed rows. On top of them:

* ``immune_timeline``   one row per flow sample (latest analysis), linked to its patient
  (unstimulated control tubes, sheet ``control_of``, are left out). Which population is
  CD3, CD4 ... Treg is read from ``flow_populations.role``, written by gating
  (``gating/roles.py``); no name is interpreted here. A population marked ``unresolved``
  (e.g. no CD4/CD8 split in the data) gives NULL instead of a number;
* ``chimerism_timeline`` one row per sample x method x donor (latest analysis);
* both carry ``review`` and ``review_reasons``: the failed ``flow_qc`` checks' messages
  (``flow_review_reasons``), or the chimerism statuses and marker flags that need a look
  (``chimerism_review_reasons``), in plain words, ``; ``-separated;
* ``unlinked_samples``  stored samples without a sample-sheet row.

Stores written before a column existed: its rows read the column as NULL (:func:`connect`);
``role``/``unresolved`` of such flow rows come from ``flow_population_roles``
(``flows/backfill.py``), joined in ``flow_populations_latest`` only.

Linking happens at query time, so a sample sheet or registry that arrives after the
data links it with no reprocessing:

* ``days_post_mst = collection_date - min(mst_date)`` over the patient's registry rows;
* ``cycle`` = the latest cycle whose ``mst_date <= collection_date`` (NULL before MST).

DuckDB binds a view when it is created, through every view and Parquet scan beneath it:
creating all ~25 relations (and the cohort views' Python functions, which import numpy)
cost ~0.4 s, more than most queries. :func:`connect` therefore creates each relation
when a statement first names it (:class:`ViewConnection`, :class:`_Catalog`).
"""

from __future__ import annotations

import re
from functools import partial
from typing import TYPE_CHECKING, Callable

from storage import cohort
from storage.schemas import COLUMNS

if TYPE_CHECKING:
    from storage.store import Store

_VIEWS = """
CREATE OR REPLACE VIEW sheet_latest AS
SELECT * EXCLUDE (rn) FROM (
  SELECT *, row_number() OVER (PARTITION BY sample_id ORDER BY ingested_at DESC, row_no DESC) AS rn
  FROM sample_sheet) WHERE rn = 1;

CREATE OR REPLACE VIEW patients_latest AS
SELECT * EXCLUDE (rn) FROM (
  SELECT *, row_number() OVER (PARTITION BY patient_id, cycle ORDER BY ingested_at DESC) AS rn
  FROM patients) WHERE rn = 1;

CREATE OR REPLACE VIEW sample_timepoints AS
SELECT s.sample_id, s.patient_id, s.collection_date, s.specimen, s.cell_fraction, s.role, s.donor_id, s.control_of,
       CAST(s.collection_date - (SELECT min(p.mst_date) FROM patients_latest p
                                 WHERE p.patient_id = s.patient_id) AS INTEGER) AS days_post_mst,
       (SELECT max(p.cycle) FROM patients_latest p
        WHERE p.patient_id = s.patient_id AND p.mst_date <= s.collection_date) AS cycle
FROM sheet_latest s;

CREATE OR REPLACE VIEW latest_analyses AS
SELECT * EXCLUDE (rn) FROM (
  SELECT *, row_number() OVER (PARTITION BY sample_id, kind ORDER BY created_at DESC, analysis_id DESC) AS rn
  FROM analyses) WHERE rn = 1;

-- role / unresolved are written by gating; rows stored before those columns existed get
-- theirs from flow_population_roles (flows/backfill.py). This COALESCE is the only place
-- that tells the two apart.
CREATE OR REPLACE VIEW flow_populations_latest AS
SELECT f.* REPLACE (coalesce(f.role, b.role) AS role, coalesce(f.unresolved, b.unresolved) AS unresolved,
                    coalesce(f.unresolved_reason, b.unresolved_reason) AS unresolved_reason)
FROM flow_populations f
JOIN latest_analyses a ON a.analysis_id = f.analysis_id AND a.sample_id = f.sample_id AND a.kind = 'flow'
LEFT JOIN flow_population_roles b ON b.analysis_id = f.analysis_id AND b.path = f.path;

-- Failed QC checks of the latest analyses, each with the sentence a lab person reads
-- (rows stored before flow_qc had a message fall back to the check name and value).
CREATE OR REPLACE VIEW flow_review_reasons AS
SELECT q.sample_id, q.analysis_id, q."check",
       coalesce(q.message, q."check" || ' failed (value ' || q.value || ')') AS reason
FROM flow_qc q
JOIN latest_analyses a ON a.analysis_id = q.analysis_id AND a.sample_id = q.sample_id AND a.kind = 'flow'
WHERE NOT q.passed;

CREATE OR REPLACE VIEW immune_timeline AS
WITH w AS (
  SELECT sample_id, analysis_id,
    max(CASE WHEN role = 'cd3' THEN pct_of_lymphocytes END) AS cd3_pct_lymph,
    max(CASE WHEN role = 'cd4' THEN pct_of_lymphocytes END) AS cd4_pct_lymph,
    max(CASE WHEN role = 'cd8' THEN pct_of_lymphocytes END) AS cd8_pct_lymph,
    max(CASE WHEN role = 'cd4' THEN count END) AS cd4_count,
    max(CASE WHEN role = 'cd8' THEN count END) AS cd8_count,
    max(CASE WHEN role = 'th1' THEN count END) AS th1_count,
    max(CASE WHEN role = 'th2' THEN count END) AS th2_count,
    max(CASE WHEN role = 'th0' THEN count END) AS th0_count,
    max(CASE WHEN role = 'th17' THEN count END) AS th17_count,
    max(CASE WHEN role = 'treg' THEN count END) AS treg_count,
    -- Populations inside cuts the data could not place (e.g. no CD4/CD8 split) are NULL
    -- rather than an invented number; the reason shows in review_reasons.
    coalesce(bool_or(role = 'cd3' AND unresolved), false) AS cd3_unresolved,
    coalesce(bool_or(role = 'cd4' AND unresolved), false) AS cd4_unresolved,
    coalesce(bool_or(role = 'cd8' AND unresolved), false) AS cd8_unresolved,
    coalesce(bool_or(role = 'th1' AND unresolved), false) AS th1_unresolved,
    coalesce(bool_or(role = 'th2' AND unresolved), false) AS th2_unresolved,
    coalesce(bool_or(role = 'th0' AND unresolved), false) AS th0_unresolved,
    coalesce(bool_or(role = 'th17' AND unresolved), false) AS th17_unresolved,
    coalesce(bool_or(role = 'treg' AND unresolved), false) AS treg_unresolved
  FROM flow_populations_latest GROUP BY ALL
), r AS (
  SELECT analysis_id, string_agg(reason, '; ' ORDER BY "check") AS reasons
  FROM flow_review_reasons GROUP BY analysis_id
)
SELECT t.patient_id, w.sample_id, t.collection_date, t.days_post_mst, t.cycle,
       CASE WHEN NOT w.cd3_unresolved THEN w.cd3_pct_lymph END AS cd3_pct_lymph,
       CASE WHEN NOT w.cd4_unresolved THEN w.cd4_pct_lymph END AS cd4_pct_lymph,
       CASE WHEN NOT w.cd8_unresolved THEN w.cd8_pct_lymph END AS cd8_pct_lymph,
       CASE WHEN NOT (w.cd4_unresolved OR w.cd8_unresolved)
            THEN CAST(w.cd4_count AS DOUBLE) / nullif(w.cd8_count, 0) END AS cd4_cd8_ratio,
       CASE WHEN NOT (w.cd4_unresolved OR w.th1_unresolved) THEN 100.0 * w.th1_count / nullif(w.cd4_count, 0) END
         AS th1_pct_cd4,
       CASE WHEN NOT (w.cd4_unresolved OR w.th2_unresolved) THEN 100.0 * w.th2_count / nullif(w.cd4_count, 0) END
         AS th2_pct_cd4,
       CASE WHEN NOT (w.cd4_unresolved OR w.th0_unresolved) THEN 100.0 * w.th0_count / nullif(w.cd4_count, 0) END
         AS th0_pct_cd4,
       CASE WHEN NOT (w.cd4_unresolved OR w.th17_unresolved) THEN 100.0 * w.th17_count / nullif(w.cd4_count, 0) END
         AS th17_pct_cd4,
       CASE WHEN NOT (w.cd4_unresolved OR w.treg_unresolved) THEN 100.0 * w.treg_count / nullif(w.cd4_count, 0) END
         AS treg_pct_cd4,
       coalesce(a.review, false) OR r.reasons IS NOT NULL AS review, r.reasons AS review_reasons,
       t.specimen, t.cell_fraction, t.role, w.analysis_id
FROM w
JOIN latest_analyses a ON a.analysis_id = w.analysis_id AND a.sample_id = w.sample_id AND a.kind = 'flow'
LEFT JOIN r ON r.analysis_id = w.analysis_id
LEFT JOIN sample_timepoints t ON t.sample_id = w.sample_id
-- Unstimulated control tubes set cytokine gates; they are not timepoints of their own.
WHERE t.control_of IS NULL;

-- Why a chimerism result needs a look before it is read: a status saying the data could not
-- support a value (its message), and flags of the markers it used.
CREATE OR REPLACE VIEW chimerism_review_reasons AS
SELECT c.sample_id, c.analysis_id, c.method, c.donor_id, coalesce(c.message, c.status) AS reason
FROM chimerism c
JOIN latest_analyses a ON a.analysis_id = c.analysis_id AND a.sample_id = c.sample_id AND a.kind = 'chimerism'
WHERE c.status IS NOT NULL AND c.status NOT IN ('ok', 'below_lod', 'not_detected', 'detected_not_quantifiable')
UNION ALL
SELECT m.sample_id, m.analysis_id, m.method, m.donor_id,
       CASE f.code
         WHEN 'replicate_sd_above_limit' THEN upper(m.method) || ' marker ' || m.marker
              || ': replicate Ct values spread more than the allowed SD'
         WHEN 'stutter_position' THEN 'STR locus ' || m.marker
              || ': donor allele at a stutter position of a recipient allele (may read high)'
       END AS reason
FROM chimerism_markers m
JOIN latest_analyses a ON a.analysis_id = m.analysis_id AND a.sample_id = m.sample_id AND a.kind = 'chimerism',
     unnest(string_split(m.flag, ';')) AS f(code)
WHERE m.used AND f.code IN ('replicate_sd_above_limit', 'stutter_position');

CREATE OR REPLACE VIEW chimerism_timeline AS
SELECT t.patient_id, c.sample_id, t.collection_date, t.days_post_mst, t.cycle, t.cell_fraction,
       c.method, c.donor_id, c.donor_pct, c.ci_low, c.ci_high, c.lod_pct, c.detected,
       r.reasons IS NOT NULL AS review, r.reasons AS review_reasons, coalesce(c.contributor, 'donor') AS contributor,
       c.n_markers, c.sd_pct, c.loq_pct, c.status, c.message, t.specimen, c.analysis_id
FROM chimerism c
JOIN latest_analyses a ON a.analysis_id = c.analysis_id AND a.sample_id = c.sample_id AND a.kind = 'chimerism'
LEFT JOIN (SELECT analysis_id, method, donor_id, string_agg(DISTINCT reason, '; ' ORDER BY reason) AS reasons
           FROM chimerism_review_reasons GROUP BY ALL) r
  ON r.analysis_id = c.analysis_id AND r.method = c.method AND r.donor_id IS NOT DISTINCT FROM c.donor_id
LEFT JOIN sample_timepoints t ON t.sample_id = c.sample_id;

CREATE OR REPLACE VIEW unlinked_samples AS
SELECT DISTINCT s.sample_id, s.assay, s.source_name, s.source_sha256, s.acquired_at, s.ingested_at
FROM samples s ANTI JOIN sheet_latest USING (sample_id);
"""

# DuckDB types of the Arrow types in storage/schemas.py.
_SQL_TYPES = {"string": "VARCHAR", "bool": "BOOLEAN", "double": "DOUBLE", "int64": "BIGINT", "int32": "INTEGER",
              "date32[day]": "DATE", "timestamp[us, tz=UTC]": "TIMESTAMPTZ"}

CONTRACT_VIEWS = ("immune_timeline", "chimerism_timeline", "unlinked_samples")

# Words that make a query read DuckDB's catalogue (which lists only the relations created):
# such a query gets them all.
_CATALOG_WORDS = {"information_schema", "show", "pragma", "duckdb_tables", "duckdb_views", "duckdb_columns",
                  "duckdb_functions", "pg_catalog", "sqlite_master"}
_WORD = re.compile(r"[a-z_][a-z0-9_]*")
_NOT_NAMES = re.compile(r"--[^\n]*|'(?:[^']|'')*'")
_CREATE = re.compile(r"CREATE OR REPLACE (?:VIEW|TABLE) (\w+) AS", re.IGNORECASE)
_DEFINES = re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\w*\s+)?(?:VIEW|TABLE)\s+(?:IF\s+NOT\s+EXISTS\s+)?"
                      r"\"?(\w+)", re.IGNORECASE)


def connect(store: Store) -> ViewConnection:
    """An in-memory DuckDB connection with every table and view of ``store``.

    The rows are those committed when it was opened (one snapshot); each relation is
    created the first time a statement names it (:class:`ViewConnection`).
    """
    return ViewConnection(store)


class ViewConnection:
    """A DuckDB connection whose store relations are created when a statement first names them.

    ``execute``, ``executemany`` and ``sql`` first create the relations the statement
    names and those they read; a statement reading DuckDB's catalogue (which lists only
    what exists) first creates them all, and so does a statement that fails to bind a
    name this class did not see (e.g. ``query_table('immune' || '_timeline')``), which
    is then run again. Everything else is the DuckDB connection's own.
    """

    def __init__(self, store: Store):
        import duckdb

        self._con = duckdb.connect(":memory:")
        self._catalog = _Catalog(store, self._con)

    def execute(self, query, *args, **kwargs):
        return self._run(self._con.execute, query, *args, **kwargs)

    def executemany(self, query, *args, **kwargs):
        return self._run(self._con.executemany, query, *args, **kwargs)

    def sql(self, query, *args, **kwargs):
        return self._run(self._con.sql, query, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._con, name)

    @property
    def created(self) -> frozenset[str]:
        """The store relations created so far (internal ``_raw_`` ones included)."""
        return frozenset(self._catalog.created)

    def _run(self, method, query, *args, **kwargs):
        import duckdb

        catalog = self._catalog
        words = _words(query) if isinstance(query, str) else _CATALOG_WORDS
        # What the statement defines itself (e.g. cohort views with configured windows) is
        # its own: never replaced by the default definition later.
        defined = {m.group(1).lower() for m in _DEFINES.finditer(query)} if isinstance(query, str) else set()
        catalog.create(catalog.names if words & _CATALOG_WORDS else (words - defined) & catalog.names)
        try:
            result = method(query, *args, **kwargs)
        except duckdb.CatalogException:
            if catalog.created >= catalog.names:
                raise
            catalog.create(catalog.names)
            result = method(query, *args, **kwargs)
        catalog.created |= defined & catalog.names
        return result


def _words(sql: str) -> set[str]:
    """The lower-cased words of ``sql`` outside comments and string literals."""
    return set(_WORD.findall(_NOT_NAMES.sub(" ", sql).lower()))


class _Catalog:
    """Every relation :func:`connect` can create on ``con``, created on demand, readers last."""

    def __init__(self, store: Store, con):
        self.store, self.con = store, con
        self.local = store.local_root is not None
        # Commits first: data files committed after this point stay invisible to this
        # connection, which therefore sees one consistent snapshot.
        self._create_commits()
        self.builders: dict[str, Callable[[], object]] = {}
        statements: dict[str, str] = {}
        for table in COLUMNS:
            if table != "commits":
                self.builders[f"_raw_{table}"] = partial(self._create_raw, table)
                # Only committed batches are visible.
                statements[table] = (f"CREATE VIEW {table} AS SELECT * FROM _raw_{table} "
                                     "WHERE batch_id IN (SELECT batch_id FROM _raw_commits_t)")
        statements["commits"] = "CREATE VIEW commits AS SELECT * FROM _raw_commits_t"
        for text in (_VIEWS, cohort.cohort_sql()):
            statements.update(_split(text))
        for fn in cohort.FUNCTIONS:
            self.builders[fn] = self._register_cohort_functions
        # A statement reads the relations and functions it names.
        known = set(self.builders) | set(statements)
        self.reads = {name: frozenset() for name in self.builders}
        for name, statement in statements.items():
            self.builders[name] = partial(con.execute, statement)
            self.reads[name] = frozenset((_words(statement) & known) - {name})
        self.names = {n for n in self.builders if not n.startswith("_") and n not in cohort.FUNCTIONS}
        self.created: set[str] = set()

    def create(self, names) -> None:
        """Create ``names`` and what they read, each once, after what it reads."""
        for name in sorted(names):
            if name not in self.created:
                self.created.add(name)
                self.create(self.reads[name])
                self.builders[name]()

    def _register_cohort_functions(self) -> None:
        if not self.created.issuperset(cohort.FUNCTIONS):
            self.created.update(cohort.FUNCTIONS)
            cohort.register_functions(self.con)

    def _create_commits(self) -> None:
        # DISTINCT: compaction briefly holds a batch's commit row twice (storage/compaction.py).
        commit_files = self.store.files("commits") if self.local else []
        columns = COLUMNS["commits"]
        if commit_files or not self.local:
            source = _parquet_scan(commit_files) if commit_files else "_commits_snapshot"
            if not commit_files:
                self.con.register("_commits_snapshot", self.store.read_table("commits"))
            self.con.execute(f"CREATE TABLE _raw_commits_t AS SELECT DISTINCT {_columns(columns)} FROM {source}")
        else:
            self.con.execute(f"CREATE TABLE _raw_commits_t AS {_empty_select(columns)}")

    def _create_raw(self, table: str) -> None:
        con, columns = self.con, COLUMNS[table]
        files = self.store.files(table) if self.local else []
        if files:
            # Local stores are read by DuckDB itself: handing it an Arrow table makes it
            # import pandas (~0.6 s a query).
            scan = _parquet_scan(files)
            have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
            # Files written before a column was added lack it: it reads as NULL, so every
            # view can name every column of the current schema.
            added = "".join(f", CAST(NULL AS {_SQL_TYPES[t]}) AS {n}" for n, t in columns if n not in have)
            con.execute(f"CREATE VIEW _raw_{table} AS SELECT *{added} FROM {scan}")
        elif self.local:  # nothing stored yet: an empty relation with the table's columns
            con.execute(f"CREATE VIEW _raw_{table} AS {_empty_select(columns)}")
        else:
            # Remote stores go through pyarrow; DuckDB scans the Arrow table.
            con.register(f"_raw_{table}", self.store.read_table(table))


def _split(text: str) -> list[tuple[str, str]]:
    """``(name, statement)`` of each ``CREATE OR REPLACE VIEW|TABLE name AS ...`` in ``text``."""
    starts = list(_CREATE.finditer(text))
    ends = [m.start() for m in starts[1:]] + [len(text)]
    return [(m.group(1).lower(), text[m.start():end]) for m, end in zip(starts, ends)]


def _parquet_scan(files: list[str]) -> str:
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return f"read_parquet([{listed}], union_by_name = true)"


def _columns(columns) -> str:
    return ", ".join(n for n, _ in columns)


def _empty_select(columns) -> str:
    """SQL for no rows with these ``(name, Arrow type name)`` columns."""
    cols = ", ".join(f"CAST(NULL AS {_SQL_TYPES[t]}) AS {n}" for n, t in columns)
    return f"SELECT {cols} WHERE false"


def relation_names(con) -> list[str]:
    """Tables and views an analyst can query (internal _raw_ relations left out)."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_name NOT LIKE '\\_raw\\_%' ESCAPE '\\' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def review_reasons(con, sample_ids: list[str] | None = None) -> list[tuple[str, str, str]]:
    """``(sample_id, kind, reason)`` of every latest analysis marked for review, in plain words.

    ``kind``: ``flow`` (a failed QC check's message) or ``chimerism`` (method and donor, then
    the reason). ``sample_ids``: only these samples (None: all). Sorted by sample, kind.
    """
    rows = con.execute("""
        SELECT sample_id, 'flow' AS kind, reason FROM flow_review_reasons
        UNION ALL
        SELECT sample_id, 'chimerism', upper(method) || coalesce(' ' || donor_id, '') || ': ' || reason
        FROM chimerism_review_reasons
        ORDER BY 1, 2, 3""").fetchall()
    if sample_ids is not None:
        wanted = set(sample_ids)
        rows = [r for r in rows if r[0] in wanted]
    return [tuple(r) for r in rows]
