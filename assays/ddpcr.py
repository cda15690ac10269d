"""Digital-PCR exports -> :class:`~assays.records.DdpcrWell` records.

Layouts, recognised by their header row:

* Bio-Rad QX Manager (``Sample description 1``, ``Conc(copies/µL)``, ``Accepted Droplets``)
  and QuantaSoft 1.7 (``Sample``, ``Concentration``, ``AcceptedDroplets``): one row per
  well x target; UTF-8 BOM; ``No Call`` where the software made no call.
* Applied Biosystems Absolute Q, per-well table (``Name, Well, Total, Dye, Target,
  Conc. cp/uL, Positives``; group ``Average`` rows are skipped) and multichannel
  table (``Sample, Channels, Count, Copies per microliter, Total``; single-dye rows are
  the targets, dye combinations and the all-negative row are cluster counts and skipped).

``sample_id`` is ``Sample description 1`` / ``Sample`` (DESIGN.md, Input files; Absolute Q
calls it ``Name``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from assays import tabular
from assays.errors import InputError
from assays.records import DdpcrWell, InstrumentExport

_CONC_PREFIXES = ("Conc", "Copies per microliter", "Copies/µL", "Copies/uL")


@dataclass(frozen=True)
class _Layout:
    name: str
    required: tuple[tuple[str, ...], ...]


_BIORAD = _Layout(
    "biorad",
    (
        ("Well",),
        ("Sample description 1", "Sample"),
        ("Target", "Assay"),
        ("Accepted Droplets", "AcceptedDroplets"),
        ("Positives",),
    ),
)
_ABSQ_WELLS = _Layout(
    "absq_wells", (("Well",), ("Name", "Sample"), ("Target", "Dye"), ("Total",), ("Positives",))
)
_ABSQ_CHANNELS = _Layout(
    "absq_channels", (("Sample", "Name"), ("Channels",), ("Count",), ("Total",))
)
_LAYOUTS = (_BIORAD, _ABSQ_WELLS, _ABSQ_CHANNELS)


def _layout(head: str) -> _Layout | None:
    for layout in _LAYOUTS:
        if tabular.head_has_header(head, layout.required):
            return layout
    return None


def sniff(head: str) -> bool:
    """True when the head of a file carries a QX Manager, QuantaSoft or Absolute Q header row."""
    return _layout(head) is not None


def _well_from_name(name: str) -> str:
    m = re.search(r"\b([A-Pa-p]\d{1,2})$", name.strip())
    return m.group(1).upper() if m else name


def _no_records(path: Path) -> InputError:
    return InputError(
        expected="at least one well with droplet (partition) counts",
        found=f"no such row in {path.name}",
        action="check that the plate was analysed before exporting, then export the well table again",
        problem="This digital-PCR export has no wells with droplet counts.",
    )


def _read_biorad(table: tabular.Table) -> list[DdpcrWell]:
    well_i = table.find("Well")
    sample_i = table.find("Sample description 1", "Sample")
    target_i = table.find("Target", "Assay")
    conc_i = table.find_prefix(*_CONC_PREFIXES)
    pos_i = table.find("Positives")
    neg_i = table.find("Negatives")
    acc_i = table.find("Accepted Droplets", "AcceptedDroplets")
    wells = []
    for pos, row in enumerate(table.rows):
        well = table.text(row, well_i) or f"row{table.line_numbers[pos]}"
        target = table.text(row, target_i)
        if target is None:
            continue
        positives = table.integer(pos, pos_i)
        accepted = table.integer(pos, acc_i)
        negatives = table.integer(pos, neg_i)
        if negatives is None and positives is not None and accepted is not None:
            negatives = accepted - positives
        wells.append(_well(table, pos, sample_i, well, target, conc_i, positives, accepted, negatives))
    return wells


def _well(table: tabular.Table, pos: int, sample_i: int | None, well: str, target: str,
          conc_i: int | None, positives: int | None, accepted: int | None, negatives: int | None) -> DdpcrWell:
    """One well x target of data row ``pos``; a well without a sample name is ``unnamed_<well>``."""
    return DdpcrWell(sample_id=table.text(table.rows[pos], sample_i) or f"unnamed_{well}", well=well,
                     target=target, concentration=table.number(pos, conc_i), positives=positives,
                     accepted=accepted, negatives=negatives)


def _read_absq_wells(table: tabular.Table) -> list[DdpcrWell]:
    well_i = table.find("Well")
    sample_i = table.find("Name", "Sample")
    target_i = table.find("Target")
    dye_i = table.find("Dye")
    conc_i = table.find_prefix(*_CONC_PREFIXES)
    pos_i = table.find("Positives")
    total_i = table.find("Total")
    wells = []
    for pos, row in enumerate(table.rows):
        well = table.text(row, well_i)
        if well is None or well.casefold() == "average":
            continue  # group summary rows repeat the wells' data
        target = table.text(row, target_i) or table.text(row, dye_i)
        if target is None:
            continue
        positives = table.integer(pos, pos_i)
        accepted = table.integer(pos, total_i)
        negatives = None if positives is None or accepted is None else accepted - positives
        wells.append(_well(table, pos, sample_i, well, target, conc_i, positives, accepted, negatives))
    return wells


def _read_absq_channels(table: tabular.Table) -> list[DdpcrWell]:
    sample_i = table.find("Sample", "Name")
    channel_i = table.find("Channels")
    count_i = table.find("Count")
    conc_i = table.find_prefix(*_CONC_PREFIXES)
    total_i = table.find("Total")
    wells = []
    for pos, row in enumerate(table.rows):
        channel = table.text(row, channel_i)
        sample = table.text(row, sample_i)
        if channel is None or " " in channel or sample is None:
            continue  # all-negative or multi-dye cluster rows
        accepted = table.integer(pos, total_i)
        if not accepted:
            continue  # dye not used on this chip
        positives = table.integer(pos, count_i)
        wells.append(
            DdpcrWell(
                sample_id=sample,
                well=_well_from_name(sample),
                target=channel,
                concentration=table.number(pos, conc_i),
                positives=positives,
                accepted=accepted,
                negatives=None if positives is None else accepted - positives,
            )
        )
    return wells


def read(path: Path, source_sha256: str) -> InstrumentExport:
    """Parse a digital-PCR export into one record per well x target.

    Raises
    ------
    InputError
        No known header row, a count that is not a number, or no usable rows.
    """
    path = Path(path)
    head = tabular.head_text(path)
    if not head.strip():
        raise tabular.empty_file_error(path, "digital-PCR well table")
    layout = _layout(head)
    if layout is None:
        raise InputError(
            expected=(
                "a digital-PCR well table (QX Manager/QuantaSoft: Well, Sample, Target, "
                "Accepted Droplets, Positives; or Absolute Q: Well, Name, Target, Total, Positives)"
            ),
            found=f"no such header row in {path.name} (starts with {head.strip()[:120]!r})",
            action="export the well/target results table from the instrument software as CSV",
            problem="This file is no digital-PCR well table graftwatch knows (QX Manager, QuantaSoft or Absolute Q).",
        )
    table = tabular.load_table(path, layout.required, what="digital-PCR well table", fixed_width=True)
    reader = {
        "biorad": _read_biorad,
        "absq_wells": _read_absq_wells,
        "absq_channels": _read_absq_channels,
    }[layout.name]
    wells = reader(table)
    if not wells:
        raise _no_records(path)

    instrument: str | None
    acquired = None
    if layout is _BIORAD:
        instrument = (
            "Bio-Rad QX Manager"
            if table.find("Sample description 1") is not None
            else "Bio-Rad QuantaSoft"
        )
    else:
        first = table.rows[0]
        instrument = table.text(first, table.find("Instrument")) or "Absolute Q"
        acquired = tabular.parse_timestamp(table.text(first, table.find("Date")))
    return InstrumentExport(
        assay="ddpcr",
        source_name=path.name,
        source_sha256=source_sha256,
        instrument=instrument,
        acquired_at=acquired,
        records=wells,
    )
