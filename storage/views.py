"""DuckDB views over the store for analysts (DESIGN.md, Contract: Views).

Every contract table is a view of its committed rows. On top of them:

* ``immune_timeline``   one row per flow sample (latest analysis), linked to its patient
  (unstimulated control tubes, sheet ``control_of``, are left out; CD4/CD8 subsets are NULL
  when the adaptive panel found no CD4/CD8 split and flagged the sample);
* ``chimerism_timeline`` one row per sample x method x donor (latest analysis);
* ``unlinked_samples``  stored samples without a sample-sheet row.

Linking happens at query time, so a sample sheet or registry that arrives after the
data links it with no reprocessing:

* ``days_post_mst = collection_date - min(mst_date)`` over the patient's registry rows;
* ``cycle`` = the latest cycle whose ``mst_date <= collection_date`` (NULL before MST).
"""

from __future__ import annotations

from storage.schemas import TABLES
from storage.store import Store

# Population names are matched on a canonical key so that Gating-ML ids (`CD3_pos`,
# `CD4_pos_CD8_neg`) and display names (`CD3+`, `CD4+CD8-`) are the same population.
def _pop_key(column: str) -> str:
    return f"regexp_replace(replace(replace(lower({column}), '_pos', '+'), '_neg', '-'), '[^a-z0-9+-]', '', 'g')"


_POP_KEY = _pop_key("population")


def _stripped_key(column: str) -> str:
    """SQL: the population key of ``column`` without a trailing "T cells"/"cells"
    ("CD3+ T cells", "Th1 cells")."""
    return f"regexp_replace({_pop_key(column)}, '^(.+?)(tcells?|cells?)$', '\\1')"


def _canonical_key(k: str) -> str:
    """SQL on a stripped key column ``k``: a bare marker read as its positive gate ("CD4",
    "CD4 T cells" = "cd4+"), "T cells" = "cd3+", "Tregs" = "treg"."""
    return (f"CASE WHEN {k} IN ('t', 'cd3', 'cd3+') THEN 'cd3+' WHEN {k} IN ('cd4', 'cd8') THEN {k} || '+' "
            f"WHEN {k} = 'tregs' THEN 'treg' ELSE {k} END")


# Which population is "CD4 T cells" / "CD8 T cells" for the timeline: a CD4/CD8 quadrant
# (either marker order), else a single "CD4+" / "CD8+" gate directly inside CD3+ (FlowJo
# templates often gate each marker on its own). On the keys of the population (name_key)
# and of its parent (parent_key), each computed once per row.
_ROLE = """CASE
      WHEN name_key IN ('cd4+cd8-', 'cd8-cd4+') THEN 'cd4'
      WHEN name_key IN ('cd4-cd8+', 'cd8+cd4-') THEN 'cd8'
      WHEN name_key IN ('cd4+', 'cd8+') AND parent_key = 'cd3+' THEN name_key || 'in_cd3'
      ELSE name_key END"""

_VIEWS = f"""
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

CREATE OR REPLACE VIEW flow_populations_latest AS
SELECT * EXCLUDE (name_key, parent_key, depth), {_ROLE} AS role_key, depth FROM (
  SELECT * EXCLUDE (k, pk), {_canonical_key('k')} AS name_key, {_canonical_key('pk')} AS parent_key FROM (
    SELECT f.*, {_POP_KEY} AS pop_key, length(f.path) - length(replace(f.path, '/', '')) AS depth,
           {_stripped_key('f.population')} AS k, {_stripped_key('f.parent')} AS pk
    FROM flow_populations f JOIN latest_analyses a USING (analysis_id, sample_id)
    WHERE a.kind = 'flow'));

CREATE OR REPLACE VIEW immune_timeline AS
WITH p AS (
  SELECT sample_id, analysis_id, role_key,
         arg_min(count, depth) AS count, arg_min(pct_of_lymphocytes, depth) AS pct_lymph
  FROM flow_populations_latest GROUP BY ALL
), w AS (
  SELECT sample_id, analysis_id,
    max(CASE WHEN role_key = 'cd3+' THEN pct_lymph END) AS cd3_pct_lymph,
    coalesce(max(CASE WHEN role_key = 'cd4' THEN pct_lymph END),
             max(CASE WHEN role_key = 'cd4+in_cd3' THEN pct_lymph END)) AS cd4_pct_lymph,
    coalesce(max(CASE WHEN role_key = 'cd8' THEN pct_lymph END),
             max(CASE WHEN role_key = 'cd8+in_cd3' THEN pct_lymph END)) AS cd8_pct_lymph,
    coalesce(max(CASE WHEN role_key = 'cd4' THEN count END),
             max(CASE WHEN role_key = 'cd4+in_cd3' THEN count END)) AS cd4_count,
    coalesce(max(CASE WHEN role_key = 'cd8' THEN count END),
             max(CASE WHEN role_key = 'cd8+in_cd3' THEN count END)) AS cd8_count,
    max(CASE WHEN role_key = 'th1' THEN count END) AS th1_count,
    max(CASE WHEN role_key = 'th2' THEN count END) AS th2_count,
    max(CASE WHEN role_key = 'th0' THEN count END) AS th0_count,
    max(CASE WHEN role_key = 'th17' THEN count END) AS th17_count,
    max(CASE WHEN role_key = 'treg' THEN count END) AS treg_count
  FROM p GROUP BY ALL
)
SELECT t.patient_id, w.sample_id, t.collection_date, t.days_post_mst, t.cycle,
       w.cd3_pct_lymph,
       CASE WHEN NOT u.unresolved THEN w.cd4_pct_lymph END AS cd4_pct_lymph,
       CASE WHEN NOT u.unresolved THEN w.cd8_pct_lymph END AS cd8_pct_lymph,
       CASE WHEN NOT u.unresolved THEN CAST(w.cd4_count AS DOUBLE) / nullif(w.cd8_count, 0) END AS cd4_cd8_ratio,
       CASE WHEN NOT u.unresolved THEN 100.0 * w.th1_count / nullif(w.cd4_count, 0) END AS th1_pct_cd4,
       CASE WHEN NOT u.unresolved THEN 100.0 * w.th2_count / nullif(w.cd4_count, 0) END AS th2_pct_cd4,
       CASE WHEN NOT u.unresolved THEN 100.0 * w.th0_count / nullif(w.cd4_count, 0) END AS th0_pct_cd4,
       CASE WHEN NOT u.unresolved THEN 100.0 * w.th17_count / nullif(w.cd4_count, 0) END AS th17_pct_cd4,
       CASE WHEN NOT u.unresolved THEN 100.0 * w.treg_count / nullif(w.cd4_count, 0) END AS treg_pct_cd4,
       t.specimen, t.cell_fraction, t.role, w.analysis_id
FROM w
-- The adaptive panel writes a failed QC row 'quadrant_CD4_CD8@<parent>:unresolved' when the
-- data show no CD4/CD8 split: those subsets are NULL rather than an invented cut.
JOIN (SELECT a.analysis_id,
             coalesce(bool_or(NOT q.passed AND starts_with(q."check", 'quadrant_CD4_CD8@')
                              AND ends_with(q."check", ':unresolved')), false) AS unresolved
      FROM (SELECT DISTINCT analysis_id FROM w) a LEFT JOIN flow_qc q USING (analysis_id)
      GROUP BY a.analysis_id) u USING (analysis_id)
LEFT JOIN sample_timepoints t USING (sample_id)
-- Unstimulated control tubes set cytokine gates; they are not timepoints of their own.
WHERE t.control_of IS NULL;

CREATE OR REPLACE VIEW chimerism_timeline AS
SELECT t.patient_id, c.sample_id, t.collection_date, t.days_post_mst, t.cycle, t.cell_fraction,
       c.method, c.donor_id, c.donor_pct, c.ci_low, c.ci_high, c.lod_pct, c.detected,
       c.n_markers, c.sd_pct, c.loq_pct, c.status, c.message, t.specimen, c.analysis_id
FROM chimerism c
JOIN latest_analyses a ON a.analysis_id = c.analysis_id AND a.sample_id = c.sample_id AND a.kind = 'chimerism'
LEFT JOIN sample_timepoints t ON t.sample_id = c.sample_id;

CREATE OR REPLACE VIEW unlinked_samples AS
SELECT DISTINCT s.sample_id, s.assay, s.source_name, s.source_sha256, s.acquired_at, s.ingested_at
FROM samples s ANTI JOIN sheet_latest USING (sample_id);
"""

CONTRACT_VIEWS = ("immune_timeline", "chimerism_timeline", "unlinked_samples")


def connect(store: Store):
    """An in-memory DuckDB connection with every table and view of ``store``."""
    import duckdb

    con = duckdb.connect(":memory:")
    # Commits first: data files committed after this point stay invisible to this
    # connection, which therefore sees one consistent snapshot.
    con.register("_commits_snapshot", store.read_table("commits"))
    con.execute("CREATE TABLE _raw_commits_t AS SELECT DISTINCT * FROM _commits_snapshot")
    con.unregister("_commits_snapshot")
    for table in TABLES:
        if table == "commits":
            continue
        files = store.files(table) if store.local_root is not None else []
        if files:
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            con.execute(f"CREATE VIEW _raw_{table} AS SELECT * FROM read_parquet([{listed}], union_by_name = true)")
        else:
            # Remote stores (and empty tables) go through pyarrow; DuckDB scans the Arrow table.
            con.register(f"_raw_{table}", store.read_table(table))
    # DISTINCT: compaction briefly holds a batch's commit row twice (storage/compaction.py).
    con.execute("CREATE VIEW commits AS SELECT * FROM _raw_commits_t")
    for table in TABLES:
        if table != "commits":
            con.execute(
                f"CREATE VIEW {table} AS SELECT * FROM _raw_{table} "
                "WHERE batch_id IN (SELECT batch_id FROM _raw_commits_t)"
            )
    con.execute(_VIEWS)
    return con


def relation_names(con) -> list[str]:
    """Tables and views an analyst can query (internal _raw_ relations left out)."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_name NOT LIKE '\\_raw\\_%' ESCAPE '\\' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]
