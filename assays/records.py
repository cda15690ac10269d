"""Record types that cross module boundaries (assays -> gating -> storage).

Plain dataclasses: storage turns lists of them into Arrow tables with the explicit
schemas of ``storage/schemas.py``; nothing here knows about Parquet or Prefect.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Channel:
    """One FCS parameter: ``$PnN`` (detector name) and ``$PnS`` (stain / marker label)."""

    index: int  # 0-based position in the event matrix
    pnn: str
    pns: str | None

    @property
    def label(self) -> str:
        """The marker label used for matching: $PnS, falling back to $PnN."""
        return self.pns if self.pns else self.pnn


@dataclass
class Spillover:
    """A spillover (compensation) matrix: rows/columns are detector names ($PnN)."""

    detectors: list[str]
    matrix: np.ndarray  # shape (len(detectors), len(detectors))
    source: str  # keyword it came from ($SPILLOVER / $SPILL / SPILL) or a config path


@dataclass
class FcsSample:
    """One FCS data set, validated and read into memory.

    ``events`` are the raw (uncompensated, untransformed) values, float64,
    shape (n_events, n_channels), columns in ``channels`` order.
    """

    sample_id: str
    source_name: str
    source_sha256: str
    version: str  # FCS2.0 / FCS3.0 / FCS3.1
    channels: list[Channel]
    events: np.ndarray
    keywords: dict[str, str]
    spillover: Spillover | None
    acquired_at: dt.datetime | None
    instrument: str | None
    n_datasets: int = 1
    path: Path | None = None  # where it was read from, for tools that re-open the file

    @property
    def pnn(self) -> list[str]:
        return [c.pnn for c in self.channels]


@dataclass(frozen=True)
class SampleSheetRow:
    """One row of a sample sheet (DESIGN.md, Input files)."""

    sample_id: str
    patient_id: str
    collection_date: dt.date
    specimen: str | None
    cell_fraction: str | None
    role: str  # recipient_pre / donor / post
    donor_id: str | None
    control_of: str | None = None


@dataclass(frozen=True)
class PatientCycle:
    """One row of the patient registry: a patient's MST cycle."""

    patient_id: str
    cycle: int
    mst_date: dt.date
    donor_id: str | None


@dataclass(frozen=True)
class StrPeak:
    """One called STR peak of one sample at one locus (GeneMapper peak or genotype cell)."""

    sample_id: str
    marker: str
    allele: str
    size: float | None
    height: float | None
    area: float | None
    #: dye colour (B, G, Y, R, P, ...) and scan data point of the peak, when exported:
    #: pull-up and spikes are recognised by position across dyes
    dye: str | None = None
    data_point: float | None = None


@dataclass(frozen=True)
class QpcrWell:
    """One qPCR well: ``ct`` is None when the instrument called it Undetermined."""

    sample_id: str
    well: str
    target: str
    task: str | None  # UNKNOWN / STANDARD / NTC / ... as exported
    ct: float | None
    quantity: float | None  # standard's known quantity (dilution series level), if given


@dataclass(frozen=True)
class DdpcrWell:
    """One digital-PCR well x target."""

    sample_id: str
    well: str
    target: str
    concentration: float | None  # copies/µL as exported
    positives: int | None
    accepted: int | None  # accepted droplets / valid partitions
    negatives: int | None


# Wells and lanes every run carries that are no patient sample: their names repeat on
# every plate ("NTC", "Ladder", kit control DNA 2800M / 9947A / 007), so they are never
# checked for identity conflicts, never rows of `samples` and never counted as samples
# (their wells and peaks stay in the export's table, where the calibration reads them).
_CONTROL_TASKS = frozenset({"STANDARD", "NTC", "NAC", "NEGATIVE", "NEGATIVE CONTROL", "POSITIVE CONTROL", "BLANK",
                            "NEG", "POS", "IPC"})
# Optionally after a lane/well number ("01-Pos.ktr.__", "16-Ladder__"); "ktr"/"kon"/"kontroll":
# Scandinavian and German spellings of control seen in real GeneMapper exports; "(-)" and
# "(+)": the negative and positive control wells of QuantStudio's example plates.
_CONTROL_NAME = re.compile(
    r"^(?:\d+[ _.-]+)?(?:(?:ntc|nac|blank|water|h2o|neg(?:ative)?(?:[ _.-]*(?:ctrl|control|ktr|kon|kontroll?e?))?"
    r"|pos(?:itive)?[ _.-]*(?:ctrl|control|ktr|kon|kontroll?e?)|(?:allelic[ _-]?)?ladder|std[ _-]?\d*"
    r"|standard[ _-]?\d*)(?:[ _.-]\S*)?|2800m|9947a|007|\(\s*[-+]\s*\))$", re.IGNORECASE)


# Words that name a control wherever they stand in a sample name ("Run2 Allelic Ladder",
# "Pt 01-Pos.ktr").
_CONTROL_WORD = re.compile(r"(?<![a-z])(?:(?:allelic[ _.-]*)?ladder|ntc|(?:pos|neg)(?:itive|ative)?[ _.-]*"
                           r"(?:ktr|ctrl|control|kontroll?e?))(?![a-z])", re.IGNORECASE)


def is_control_record(record) -> bool:
    """True for a control well or lane (standard, no-template control, blank, ladder, kit
    control DNA), by the exported task when there is one, else by its sample name."""
    task = (getattr(record, "task", None) or "").strip().upper()
    name = record.sample_id or ""
    return task in _CONTROL_TASKS or bool(_CONTROL_NAME.match(name) or _CONTROL_WORD.search(name))


@dataclass
class InstrumentExport:
    """A parsed non-FCS export: one file, many samples, one assay."""

    assay: str  # str / qpcr / ddpcr
    source_name: str
    source_sha256: str
    instrument: str | None
    acquired_at: dt.datetime | None
    records: list = field(default_factory=list)  # StrPeak | QpcrWell | DdpcrWell

    @property
    def sample_ids(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.records:
            seen.setdefault(r.sample_id, None)
        return list(seen)

    @property
    def patient_sample_ids(self) -> list[str]:
        """``sample_ids`` without control wells and lanes (:func:`is_control_record`)."""
        seen: dict[str, None] = {}
        for r in self.records:
            if not is_control_record(r):
                seen.setdefault(r.sample_id, None)
        return list(seen)
