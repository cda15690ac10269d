"""Explicit Arrow schemas of every table in the store (DESIGN.md, Store).

Every table also carries ``batch_id``: rows become visible to readers only once
their batch is listed in ``commits`` (written last), so a crash mid-batch leaves
orphan rows that no view shows and that compaction removes.

The columns are written down as ``(name, Arrow type name)`` in :data:`COLUMNS`, and
:data:`TABLES` (the ``pyarrow.Schema`` of each table) is built from them on first use:
``graftwatch query`` reads Parquet through DuckDB and needs only the names and types,
and importing pyarrow (with numpy) would cost it ~0.2 s of a ~0.5 s command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# Arrow type names, as ``str(pyarrow type)`` spells them.
TS = "timestamp[us, tz=UTC]"
S = "string"
F = "double"
I32, I64, BOOL, DATE = "int32", "int64", "bool", "date32[day]"

Column = tuple[str, str]
_BATCH: tuple[Column, ...] = (("batch_id", S),)


def _schema(*fields: Column) -> tuple[Column, ...]:
    return (*fields, *_BATCH)


COLUMNS: dict[str, tuple[Column, ...]] = {
    "commits": (("batch_id", S), ("kind", S), ("committed_at", TS), ("n_files", I32)),
    "ingest_log": _schema(
        ("source_sha256", S), ("source_name", S), ("assay", S), ("status", S), ("error", S),
        ("seen_at", TS), ("archived_as", S), ("n_samples", I32),
    ),
    "samples": _schema(
        ("sample_id", S), ("assay", S), ("source_sha256", S), ("source_name", S), ("acquired_at", TS),
        ("instrument", S), ("ingested_at", TS), ("n_events", I64), ("file_format", S),
    ),
    "sample_sheet": _schema(
        ("sample_id", S), ("patient_id", S), ("collection_date", DATE), ("specimen", S),
        ("cell_fraction", S), ("role", S), ("donor_id", S), ("control_of", S),
        ("source_sha256", S), ("row_no", I32), ("ingested_at", TS),
    ),
    "patients": _schema(
        ("patient_id", S), ("cycle", I32), ("mst_date", DATE), ("donor_id", S),
        ("source_sha256", S), ("ingested_at", TS),
    ),
    "analyses": _schema(
        ("analysis_id", S), ("sample_id", S), ("kind", S), ("source_sha256", S), ("template", S),
        ("created_at", TS), ("review", BOOL),
    ),
    "flow_populations": _schema(
        ("sample_id", S), ("analysis_id", S), ("population", S), ("path", S), ("parent", S),
        ("count", I64), ("parent_count", I64), ("pct_of_parent", F), ("pct_of_lymphocytes", F),
        # Written by gating (gating/roles.py, gating/statistics.py); NULL in rows stored before
        # the columns existed: flows/backfill.py fills those into flow_population_roles.
        ("role", S), ("unresolved", BOOL), ("unresolved_reason", S),
    ),
    # Roles of flow populations stored before flow_populations had them (one row per
    # analysis x population path), written once by flows/backfill.py.
    "flow_population_roles": _schema(
        ("sample_id", S), ("analysis_id", S), ("path", S), ("role", S), ("unresolved", BOOL),
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
        ("sample_id", S), ("analysis_id", S), ("check", S), ("value", F), ("passed", BOOL), ("threshold", F),
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
        ("sample_id", S), ("well", S), ("target", S), ("concentration", F), ("positives", I64),
        ("accepted", I64), ("negatives", I64), ("source_sha256", S),
    ),
    # The lab's explicit answer to an identity conflict (`graftwatch resolve`): the file
    # with these bytes holds ``from_sample_id`` as ``to_sample_id`` (a rename), and/or
    # replaces what is stored for that sample (``supersede``). One row per sample renamed.
    "identity_decisions": _schema(
        ("source_sha256", S), ("source_name", S), ("from_sample_id", S), ("to_sample_id", S),
        ("supersede", BOOL), ("reason", S), ("decided_at", TS),
    ),
    "chimerism_markers": _schema(
        ("sample_id", S), ("analysis_id", S), ("method", S), ("marker", S), ("informative_type", S),
        ("donor_pct", F), ("used", BOOL), ("donor_id", S), ("flag", S),
        ("recipient_alleles", S), ("donor_alleles", S), ("excluded", S),
    ),
    "chimerism": _schema(
        ("sample_id", S), ("analysis_id", S), ("method", S), ("donor_id", S), ("donor_pct", F), ("ci_low", F),
        ("ci_high", F), ("lod_pct", F), ("detected", BOOL), ("n_markers", I32), ("status", S),
        ("message", S), ("sd_pct", F), ("loq_pct", F), ("contributor", S),
    ),
}


def arrow_type(name: str) -> pa.DataType:
    """The pyarrow type of an Arrow type name of :data:`COLUMNS`."""
    import pyarrow as pa

    types = {S: pa.string(), F: pa.float64(), TS: pa.timestamp("us", tz="UTC"), I32: pa.int32(), I64: pa.int64(),
             BOOL: pa.bool_(), DATE: pa.date32()}
    return types[name]


def __getattr__(name: str):
    # ``TABLES``: built (and pyarrow imported) by the first module that asks for it.
    if name != "TABLES":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import pyarrow as pa

    tables = {table: pa.schema([pa.field(n, arrow_type(t)) for n, t in cols]) for table, cols in COLUMNS.items()}
    globals()["TABLES"] = tables
    return tables
