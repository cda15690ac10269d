"""Explicit Arrow schemas of every table in the store (DESIGN.md, Store).

Every table also carries ``batch_id``: rows become visible to readers only once
their batch is listed in ``commits`` (written last), so a crash mid-batch leaves
orphan rows that no view shows and that compaction removes.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
S = pa.string()
F = pa.float64()

_BATCH = [("batch_id", S)]


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(n, t) for n, t in (*fields, *_BATCH)])


TABLES: dict[str, pa.Schema] = {
    "commits": pa.schema([("batch_id", S), ("kind", S), ("committed_at", TS), ("n_files", pa.int32())]),
    "ingest_log": _schema(
        ("source_sha256", S), ("source_name", S), ("assay", S), ("status", S), ("error", S),
        ("seen_at", TS), ("archived_as", S), ("n_samples", pa.int32()),
    ),
    "samples": _schema(
        ("sample_id", S), ("assay", S), ("source_sha256", S), ("source_name", S), ("acquired_at", TS),
        ("instrument", S), ("ingested_at", TS), ("n_events", pa.int64()), ("file_format", S),
    ),
    "sample_sheet": _schema(
        ("sample_id", S), ("patient_id", S), ("collection_date", pa.date32()), ("specimen", S),
        ("cell_fraction", S), ("role", S), ("donor_id", S), ("control_of", S),
        ("source_sha256", S), ("row_no", pa.int32()), ("ingested_at", TS),
    ),
    "patients": _schema(
        ("patient_id", S), ("cycle", pa.int32()), ("mst_date", pa.date32()), ("donor_id", S),
        ("source_sha256", S), ("ingested_at", TS),
    ),
    "analyses": _schema(
        ("analysis_id", S), ("sample_id", S), ("kind", S), ("source_sha256", S), ("template", S),
        ("created_at", TS), ("review", pa.bool_()),
    ),
    "flow_populations": _schema(
        ("sample_id", S), ("analysis_id", S), ("population", S), ("path", S), ("parent", S),
        ("count", pa.int64()), ("parent_count", pa.int64()), ("pct_of_parent", F), ("pct_of_lymphocytes", F),
        # Written by gating (gating/roles.py, gating/statistics.py); NULL in rows stored before
        # the columns existed: flows/backfill.py fills those into flow_population_roles.
        ("role", S), ("unresolved", pa.bool_()), ("unresolved_reason", S),
    ),
    # Roles of flow populations stored before flow_populations had them (one row per
    # analysis x population path), written once by flows/backfill.py.
    "flow_population_roles": _schema(
        ("sample_id", S), ("analysis_id", S), ("path", S), ("role", S), ("unresolved", pa.bool_()),
        ("unresolved_reason", S),
    ),
    "flow_markers": _schema(
        ("sample_id", S), ("analysis_id", S), ("population", S), ("path", S), ("marker", S), ("channel", S),
        ("median", F), ("mean", F), ("robust_cv", F),
    ),
    "flow_gates": _schema(
        ("sample_id", S), ("analysis_id", S), ("template", S), ("gatingml", S), ("population_ids", S),
    ),
    "flow_qc": _schema(
        ("sample_id", S), ("analysis_id", S), ("check", S), ("value", F), ("passed", pa.bool_()), ("threshold", F),
        ("message", S),
    ),
    "str_peaks": _schema(
        ("sample_id", S), ("marker", S), ("allele", S), ("size", F), ("height", F), ("area", F), ("source_sha256", S),
        ("dye", S), ("data_point", F),
    ),
    "qpcr_wells": _schema(
        ("sample_id", S), ("well", S), ("target", S), ("task", S), ("ct", F), ("quantity", F), ("source_sha256", S),
    ),
    "ddpcr_wells": _schema(
        ("sample_id", S), ("well", S), ("target", S), ("concentration", F), ("positives", pa.int64()),
        ("accepted", pa.int64()), ("negatives", pa.int64()), ("source_sha256", S),
    ),
    # The lab's explicit answer to an identity conflict (`graftwatch resolve`): the file
    # with these bytes holds ``from_sample_id`` as ``to_sample_id`` (a rename), and/or
    # replaces what is stored for that sample (``supersede``). One row per sample renamed.
    "identity_decisions": _schema(
        ("source_sha256", S), ("source_name", S), ("from_sample_id", S), ("to_sample_id", S),
        ("supersede", pa.bool_()), ("reason", S), ("decided_at", TS),
    ),
    "chimerism_markers": _schema(
        ("sample_id", S), ("analysis_id", S), ("method", S), ("marker", S), ("informative_type", S),
        ("donor_pct", F), ("used", pa.bool_()), ("donor_id", S), ("flag", S),
        ("recipient_alleles", S), ("donor_alleles", S), ("excluded", S),
    ),
    "chimerism": _schema(
        ("sample_id", S), ("analysis_id", S), ("method", S), ("donor_id", S), ("donor_pct", F), ("ci_low", F),
        ("ci_high", F), ("lod_pct", F), ("detected", pa.bool_()), ("n_markers", pa.int32()), ("status", S),
        ("message", S), ("sd_pct", F), ("loq_pct", F), ("contributor", S),
    ),
}
