"""qPCR exports -> :class:`~assays.records.QpcrWell` records.

Three layouts, recognised by content:

* Applied Biosystems QuantStudio / 7500 classic text: ``* key = value`` header lines,
  ``[Sample Setup]`` ... ``[Results]`` sections, ``CT`` may read ``Undetermined``,
  quantities with thousands separators.
* QuantStudio Design & Analysis CSV: ``# key: value`` header lines, then ``Well, Well
  Position, Omit, Sample, Target, Task, ..., Cq`` (``UNDETERMINED``).
* Bio-Rad CFX Maestro CSV: leading empty column, ``Well, Fluor, Target, Content,
  Sample, Cq`` (``NaN``).

``sample_id`` is ``Sample Name`` / ``Sample`` (DESIGN.md, Input files); a well without a
sample name (standards, NTCs) gets ``unnamed_<well>`` so it stays addressable.
Wells marked ``Omit = true`` by the analyst are left out.
"""

from __future__ import annotations

from pathlib import Path

from assays import tabular
from assays.errors import InputError
from assays.names import name_key
from assays.records import InstrumentExport, QpcrWell

_WELL = ("Well Position", "Well")
_SAMPLE = ("Sample Name", "Sample")
_TARGET = ("Target Name", "Target", "Fluor", "Detector", "Detector Name")
_CT = ("CT", "Cq", "Ct", "C(t)", "Cq (Ct)")

_REQUIRED = [("Well",), _SAMPLE, _TARGET, _CT]
_CLASSIC_KEYS = (
    "blocktype",
    "experimenttype",
    "instrumenttype",
    "quantificationcyclemethod",
    "chemistry",
    "experimentrunendtime",
)
_CLASSIC_SECTIONS = ("[sample setup]", "[results]", "[amplification data]", "[raw data]")
_DIGITAL_PCR_HINTS = ("accepteddroplets", "positives", "conccopies")


def _is_classic(head: str) -> bool:
    lines = tabular.text_lines(head)
    meta = tabular.metadata_lines([ln for ln in lines if ln.lstrip().startswith("*")])
    keys = {name_key(k) for k in meta}
    if sum(k in keys for k in _CLASSIC_KEYS) >= 2:
        return True
    return any(ln.strip().casefold() in _CLASSIC_SECTIONS for ln in lines) and any(
        ln.lstrip().startswith("*") for ln in lines
    )


def sniff(head: str) -> bool:
    """True when the head of a file looks like one of the three qPCR export layouts."""
    if _is_classic(head):
        return True
    if not tabular.head_has_header(head, _REQUIRED):
        return False
    norm = name_key(head[:4000])
    return not any(h in norm for h in _DIGITAL_PCR_HINTS)


def _task(raw: str | None) -> str | None:
    """QuantStudio tasks as written; CFX ``Content`` (Unkn, Std-01, NTC, Neg Ctrl) mapped to them."""
    if raw is None:
        return None
    key = name_key(raw)
    if key.startswith("unkn"):
        return "UNKNOWN"
    if key.startswith("std") or key.startswith("standard"):
        return "STANDARD"
    if key in {"ntc", "notemplatecontrol"}:
        return "NTC"
    if key.startswith("negctrl") or key.startswith("negativecontrol"):
        return "NEGATIVE"
    if key.startswith("posctrl") or key.startswith("positivecontrol"):
        return "POSITIVE"
    return raw.strip().upper()


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().casefold() in {"true", "yes", "1", "y"}


def read(path: Path, source_sha256: str) -> InstrumentExport:
    """Parse a qPCR export into wells (one record per well x target).

    Raises
    ------
    InputError
        The file has no results table, a CT/Cq cell is not a number, or no well has a target.
    """
    path = Path(path)
    head = tabular.head_text(path)
    classic = _is_classic(head)
    if classic:
        table = tabular.load_table(
            path, _REQUIRED, what="QuantStudio/7500 results export", section="Results",
            fixed_width=True,
        )
    else:
        table = tabular.load_table(path, _REQUIRED, what="qPCR results export (Cq per well)", fixed_width=True)

    well_i = table.find(*_WELL)
    sample_i = table.find(*_SAMPLE)
    target_i = table.find(*_TARGET[:2])
    fluor_i = table.find("Fluor")  # CFX leaves Target empty when only the dye is set
    ct_i = table.require(*_CT, what="threshold cycle per well")
    task_i = table.find("Task", "Content")
    qty_i = table.find("Quantity", "Starting Quantity (SQ)", "Starting Quantity", "SQ")
    omit_i = table.find("Omit")

    wells: list[QpcrWell] = []
    for pos, row in enumerate(table.rows):
        if _is_true(table.text(row, omit_i)):
            continue
        target = table.text(row, target_i) or table.text(row, fluor_i)
        well = table.text(row, well_i) or f"row{table.line_numbers[pos]}"
        if target is None:
            continue  # an empty plate position
        sample_id = table.text(row, sample_i) or f"unnamed_{well}"
        wells.append(
            QpcrWell(
                sample_id=sample_id,
                well=well,
                target=target,
                task=_task(table.text(row, task_i)),
                ct=table.number(pos, ct_i),
                quantity=table.number(pos, qty_i),
            )
        )
    if not wells:
        raise InputError(
            expected="at least one well with a target name in the qPCR results",
            found=f"no such well in {path.name}",
            action="check that the plate was analysed before exporting, then export the results again",
            problem="This qPCR export has no wells with a target name.",
        )
    if classic:
        instrument = table.meta("Instrument Type", "Instrument Name")
    else:
        instrument = table.meta("Instrument Type", "Instrument Name") or (
            "Bio-Rad CFX" if table.find("Fluor") is not None else None
        )
    acquired = tabular.parse_timestamp(
        table.meta(
            "Experiment Run End Time",
            "Run End Date/Time",
            "Run End Data/Time",
            "Run Start Date/Time",
            "Date Created",
        )
    )
    return InstrumentExport(
        assay="qpcr",
        source_name=path.name,
        source_sha256=source_sha256,
        instrument=instrument,
        acquired_at=acquired,
        records=wells,
    )
