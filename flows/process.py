"""Per-file work: recognise, read, gate, and turn one file into table rows.

Orchestration only: reading is in ``assays``, computation in ``gating``; this module
glues them and converts every expected failure into a quarantine outcome with a
plain-language reason.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assays import ddpcr, qpcr, sheets, str_export
from assays.detect import detect_kind
from assays.errors import GraftwatchError, InputError
from assays.fcs import read_fcs
from assays.hashing import read_hashed, sha256_of
from assays.records import FcsSample
from flows.inbox import InboxFile, file_signature
from storage.store import new_id, to_table, utcnow

log = logging.getLogger("graftwatch")

EXPORT_READERS = {"str": str_export, "qpcr": qpcr, "ddpcr": ddpcr}
EXPORT_TABLES = {"str": "str_peaks", "qpcr": "qpcr_wells", "ddpcr": "ddpcr_wells"}


@dataclass
class FileOutcome:
    """What one inbox file became: rows to store, or a reason to quarantine it."""

    file: InboxFile
    sha256: str
    kind: str | None = None
    status: str = "stored"  # stored / duplicate / quarantined
    error: str | None = None
    rows: dict[str, list] = field(default_factory=dict)
    tables: dict = field(default_factory=dict)  # the rows as Arrow tables (convert_rows), for the commit
    sample_ids: list[str] = field(default_factory=list)
    # the patient samples this file speaks for (control wells left out): checked for
    # identity conflicts before the commit (flows.identity)
    identity_ids: list[str] = field(default_factory=list)
    identity_conflict: bool = False
    # (size, mtime_ns) when hashed: a file that changed since was still being written
    signature: tuple[int, int] | None = None
    review: bool = False
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # read / gate / statistics ...
    worker: str = ""  # which worker thread/process did it (for the orchestration share)

    def timed(self, stage: str, t0: float) -> float:
        """Add the time since ``t0`` to ``stage``; returns now (for the next stage)."""
        now = time.perf_counter()
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + now - t0
        return now

    def add(self, table: str, rows: list) -> None:
        self.rows.setdefault(table, []).extend(rows)

    def convert_rows(self) -> None:
        """Move ``rows`` into ``tables`` (``storage.store.to_table``): done by the worker that
        made them, so the flow's commit only concatenates."""
        t0 = time.perf_counter()
        self.tables.update({table: to_table(table, rows) for table, rows in self.rows.items()})
        self.rows = {}
        self.seconds += self.timed("export", t0) - t0


@dataclass
class GatingSetup:
    """How FCS files of this run are gated: a template, or the built-in adaptive panel."""

    template: object | None = None  # gating.templates.Template
    panel: object | None = None  # gating.panel.Panel
    controls: dict[str, Path] = field(default_factory=dict)  # stimulated sample_id -> control tube
    pictures_store: str | None = None  # store root beside which gating pictures are written
    pictures: str = "none"  # which samples get a picture during the run: all / review / none


def export_gatingml(strategy, names: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """Gating-ML 2.0 of the gates used, and {Gating-ML id: population name}.

    Strategies with no Gating-ML form (FlowJo's biex transform) store NULL and a warning.
    """
    from gating.gatingml_export import GatingMLExportError, export_gatingml

    try:
        xml, ids = export_gatingml(strategy)
    except GatingMLExportError as exc:
        log.warning("gates not exportable as Gating-ML 2.0: %s", exc)
        return None, {}
    return xml, {gid: names.get(orig, orig) for gid, orig in ids.items()}


def gate_fcs(sample: FcsSample, setup: GatingSetup, control: FcsSample | None = None, reuse=None):
    """Gate one FCS sample; returns (template name, strategy, id->name map, qc checks, memberships).

    ``reuse``: a ``gating.evaluator.ReusableColumns``, see ``gating.sample_gating.apply_strategy``.
    """
    from gating.sample_gating import apply_strategy

    if setup.template is not None:
        t = setup.template
        memberships = apply_strategy(t.compiled or t.strategy, sample, flowjo_labels=(t.kind == "flowjo"),
                                     reuse=reuse)
        return t.name, t.strategy, {}, [], memberships
    from gating.adaptive import build_adaptive_gating

    adaptive = build_adaptive_gating(sample, setup.panel, control=control)
    memberships = apply_strategy(adaptive.strategy, sample, reuse=reuse)
    return "builtin:" + getattr(setup.panel, "name", "tcell"), adaptive.strategy, adaptive.names, adaptive.qc, memberships


def template_qc(sample: FcsSample) -> list:
    """Acquisition checks for a sample gated by a template (the adaptive panel adds its own)."""
    from gating.qc import channel_ranges, events_acquired, margin_events, stable_flow

    names = [c.pnn.strip().lower() for c in sample.channels]
    time = sample.events[:, names.index("time")] if "time" in names else None
    cols = [c.index for c in sample.channels if c.pnn.strip().lower() != "time"]
    return [events_acquired(sample.events.shape[0]), stable_flow(time),
            margin_events(sample.events, channel_ranges(sample, cols))]


@dataclass
class HashedBytes:
    """A file's bytes, read once to hash them, handed to the reader and then dropped: the
    holder lets the caller give them up (52 MB for a 1M-event file) while the gating runs."""

    content: bytes | None = None

    def take(self) -> bytes | None:
        content, self.content = self.content, None
        return content


def process_fcs(out: FileOutcome, setup: GatingSetup, hashed: HashedBytes | None = None) -> None:
    """``hashed``: the file's bytes when hashing read them (its DATA is not read again)."""
    from gating.compensation import channel_major, gates_compensation
    from gating.evaluator import ReusableColumns
    from gating.qc import count_checks, extra_data_sets
    from gating.statistics import grouped_populations, marker_stats, population_stats, stat_channels

    t = time.perf_counter()
    sample = read_fcs(out.file.path, out.sha256, source_name=Path(out.file.name).name,
                      content=hashed.take() if hashed is not None else None)
    t = out.timed("read", t)
    if setup.template is not None:  # FlowJo's acquisition-defined matrix is this file's own
        setup = dataclasses.replace(setup, template=setup.template.for_sample(sample))
    control = None
    ctrl_path = setup.controls.get(sample.sample_id)
    if ctrl_path is not None and setup.template is None:
        try:
            control = read_fcs(ctrl_path)
        except InputError as exc:
            log.warning("control tube for a sample is unreadable, using the sample's own negatives: %s", exc)
    reuse = ReusableColumns()
    template_name, strategy, names, qc, memberships = gate_fcs(sample, setup, control, reuse=reuse)
    t = out.timed("gate", t)
    for stage, sec in reuse.seconds.items():  # split out of "gate": compensate, transform
        out.stage_seconds["gate"] -= sec
        out.stage_seconds[stage] = out.stage_seconds.get(stage, 0.0) + sec
    analysis_id = new_id()
    n = sample.events.shape[0]
    qc = list(qc or template_qc(sample))
    pops = population_stats(memberships, n, names, qc)
    groups = grouped_populations(memberships, n)
    by_channel = channel_major(sample, [c.index for c in stat_channels(sample)],
                               solved=gates_compensation(reuse.compensated), raw=reuse.raw)
    del reuse
    t = out.timed("group", t)  # events grouped by population signature; channel arrays
    markers = marker_stats(memberships, sample, by_channel, groups, names)
    del by_channel
    t = out.timed("statistics", t)
    now = utcnow()
    sid = sample.sample_id
    qc += count_checks({p.population: p.count for p in pops})
    if sample.n_datasets > 1:
        qc.append(extra_data_sets(sample.n_datasets - 1))
    qc_rows = [c.row() for c in qc]
    review = not all(r["passed"] for r in qc_rows)
    if setup.pictures_store and (setup.pictures == "all" or (setup.pictures == "review" and review)):
        from flows.gating_plots import write_gating_png

        t = out.timed("export", t)
        write_gating_png(setup.pictures_store, sample, strategy, memberships, names, analysis_id)
        t = out.timed("picture", t)
    out.sample_ids = [sid]
    out.identity_ids = [sid]
    out.review = review
    out.add("samples", [{
        "sample_id": sid, "assay": "flow", "source_sha256": out.sha256, "source_name": sample.source_name,
        "acquired_at": sample.acquired_at.replace(tzinfo=now.tzinfo) if sample.acquired_at else None,
        "instrument": sample.instrument, "ingested_at": now, "n_events": n, "file_format": sample.version,
    }])
    out.add("analyses", [{
        "analysis_id": analysis_id, "sample_id": sid, "kind": "flow", "source_sha256": out.sha256,
        "template": template_name, "created_at": now, "review": review,
    }])
    out.add("flow_populations", [dict(dataclasses.asdict(p), sample_id=sid, analysis_id=analysis_id) for p in pops])
    out.add("flow_markers", [dict(dataclasses.asdict(m), sample_id=sid, analysis_id=analysis_id) for m in markers])
    exported = setup.template.exported if setup.template is not None else None
    gatingml, population_ids = exported if exported is not None else export_gatingml(strategy, names)
    out.add("flow_gates", [{
        "sample_id": sid, "analysis_id": analysis_id, "template": template_name,
        "gatingml": gatingml, "population_ids": json.dumps(population_ids) if population_ids else None,
    }])
    out.add("flow_qc", [dict(r, sample_id=sid, analysis_id=analysis_id) for r in qc_rows])
    out.timed("export", t)


def process_sheet(out: FileOutcome) -> None:
    now = utcnow()
    rows = sheets.read_sample_sheet(out.file.path)
    out.add("sample_sheet", [
        dict(dataclasses.asdict(r), source_sha256=out.sha256, row_no=i, ingested_at=now) for i, r in enumerate(rows)
    ])


def process_registry(out: FileOutcome) -> None:
    now = utcnow()
    rows = sheets.read_registry(out.file.path)
    out.add("patients", [dict(dataclasses.asdict(r), source_sha256=out.sha256, ingested_at=now) for r in rows])


def process_export(out: FileOutcome) -> None:
    reader = EXPORT_READERS[out.kind]
    export = reader.read(out.file.path, out.sha256)
    if not export.records:
        raise InputError(
            f"at least one sample row in this {out.kind.upper()} export",
            f"no usable rows in {Path(out.file.name).name}",
            "export the results table again, including the sample rows",
            problem=f"This {out.kind.upper()} export has no sample rows.",
        )
    now = utcnow()
    at = export.acquired_at.replace(tzinfo=now.tzinfo) if export.acquired_at and export.acquired_at.tzinfo is None else export.acquired_at
    out.sample_ids = export.patient_sample_ids
    out.identity_ids = export.patient_sample_ids
    # standards, NTCs, ladders and kit controls are no samples: their wells and peaks stay in
    # the export's own table (qpcr_wells ...), where the plate's calibration reads them
    out.add("samples", [{
        "sample_id": sid, "assay": export.assay, "source_sha256": out.sha256,
        "source_name": Path(out.file.name).name, "acquired_at": at, "instrument": export.instrument,
        "ingested_at": now, "file_format": export.assay,
    } for sid in export.patient_sample_ids])
    out.add(EXPORT_TABLES[out.kind], [dict(dataclasses.asdict(r), source_sha256=out.sha256) for r in export.records])


def process_file(f: InboxFile, setup: GatingSetup, known_sha256: dict[str, str] | set[str]) -> FileOutcome:
    """Turn one inbox file into an outcome. Never raises for a bad file."""
    t0 = time.perf_counter()
    out = FileOutcome(file=f, sha256="")
    try:
        if f.refused:
            raise InputError("a regular file inside the inbox", f"{f.name}: {f.refused}",
                             "copy the real file into the inbox instead of linking to it",
                             problem="This is a link to a file, not the file itself.")
        out.signature = file_signature(f.path)
        hashed = HashedBytes()
        if f.kind == "fcs":  # read once: hashed, then its DATA parsed from the same bytes
            hashed.content, out.sha256 = read_hashed(f.path)
        else:
            out.sha256 = sha256_of(f.path)
        out.timed("hash", t0)
        if out.sha256 in known_sha256:
            out.status = "duplicate"
            return out
        out.kind = f.kind or detect_kind(f.path)
        if out.kind == "fcs":
            process_fcs(out, setup, hashed)
        elif out.kind == "sample_sheet":
            process_sheet(out)
        elif out.kind == "registry":
            process_registry(out)
        else:
            process_export(out)
    except GraftwatchError as exc:
        out.status, out.error, out.rows = "quarantined", str(exc), {}
    except MemoryError:
        out.status, out.rows = "quarantined", {}
        out.error = str(InputError("a file that fits in memory", "one too large to read",
                                   "split the acquisition or ask the admin to process it on a larger machine",
                                   problem="This file is too large for this computer to read."))
    except Exception as exc:  # a bug or an unforeseen malformation: keep the file, explain, go on
        quarantine_unexpected(out, exc)
    finally:
        out.seconds = time.perf_counter() - t0
    return out


def quarantine_unexpected(out: FileOutcome, exc: Exception) -> None:
    """Quarantine ``out``'s file for an error nobody foresaw (a bug or a new malformation):
    one file must never stop the batch, nor every later run on the same inbox."""
    log.debug("unexpected error on %s", out.file.name, exc_info=True)
    out.status, out.rows, out.tables = "quarantined", {}, {}
    out.error = str(InputError(
        "a file graftwatch can read", f"an unexpected problem while reading it ({type(exc).__name__}: {exc})",
        "check the file opens in the instrument software; if it does, send it to the graftwatch admin "
        "(it is kept here unchanged)",
        problem="This file could not be read, for a reason graftwatch does not recognise."))
