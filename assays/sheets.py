"""Sample sheet and patient registry readers (CSV or XLSX).

Headers are matched case-, spacing- and punctuation-blind (``Sample ID`` = ``SampleID`` =
``sample_id``); so are role values (``Recipient pre`` = ``recipient_pre``).
Every row problem names the row number as the technician sees it in a
spreadsheet (header = row 1), what was expected and what was found.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path

from assays import tabular
from assays.errors import InputError
from assays.names import name_key
from assays.records import PatientCycle, SampleSheetRow

SHEET_COLUMNS = ("sample_id", "patient_id", "collection_date", "specimen", "cell_fraction", "role", "donor_id")
SHEET_OPTIONAL = ("control_of",)
REGISTRY_COLUMNS = ("patient_id", "cycle", "mst_date", "donor_id")
ROLES = ("recipient_pre", "donor", "post")
_FIX_SHEET = "correct the row in the spreadsheet and drop the corrected sheet again (later rows replace earlier ones)"


# Every spelling of a known column or role that differs only in case, spacing and
# punctuation ("Sample ID", "sample-id", "SampleID", "Recipient pre", "RecipientPre").
_KNOWN = {name_key(k): k for k in (*SHEET_COLUMNS, *SHEET_OPTIONAL, *REGISTRY_COLUMNS, *ROLES)}


def column_key(name: str) -> str:
    """Header (or role) normalisation: the known name it spells, case-, spacing- and
    punctuation-blind (``PatientID`` = ``Patient ID`` = ``patient_id``); otherwise lower
    case with runs of other characters as one '_'."""
    known = _KNOWN.get(name_key(str(name)))
    if known is not None:
        return known
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def _load(path: Path, columns: tuple[str, ...], what: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header keys and (spreadsheet row number, cells) of a CSV/TSV/XLSX sheet."""
    table = tabular.load_table(path, [[c] for c in columns], what=what)
    header = [column_key(h) for h in table.header]
    return header, list(zip(table.line_numbers, table.rows))


def head_columns(head: str) -> set[str]:
    """Column keys of the first non-empty line of a delimited text head (for sniffing)."""
    for line in head.lstrip("\ufeff").splitlines():
        if line.strip():
            delim = max(",;\t", key=line.count)
            return {column_key(c) for c in next(csv.reader([line], delimiter=delim))}
    return set()


def parse_iso_date(value: str, column: str, row_no: int, name: str) -> dt.date:
    """An ISO ``YYYY-MM-DD`` date; anything else is an InputError naming the row."""
    text = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}( 00:00:00)?", text):
        try:
            return dt.date.fromisoformat(text[:10])
        except ValueError:
            # In the right format, but not a day of the calendar (2025-02-31, 2025-13-01).
            raise InputError(
                f"{column} as a date that exists",
                f"{value!r} in row {row_no} of {name}, which is written as YYYY-MM-DD but is no day of the "
                "calendar (check the month and the day)",
                "correct the date; " + _FIX_SHEET,
                problem=f"Row {row_no} of this sheet has a date that does not exist.",
            ) from None
    raise InputError(
        f"{column} as an ISO date YYYY-MM-DD (e.g. 2026-03-15)",
        f"{value!r} in row {row_no} of {name}",
        "write the date as YYYY-MM-DD; " + _FIX_SHEET,
        problem=f"Row {row_no} of this sheet has a date not written as YYYY-MM-DD.",
    )


def _cells(header: list[str], row: list[str]) -> dict[str, str]:
    return {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}


class _RowProblems:
    """Every row's problem of one sheet, reported together: a technician fixes them all in
    one go instead of one per drop."""

    def __init__(self, name: str):
        self.name = name
        self.problems: list[InputError] = []

    def check(self, fn, *args):
        """``fn(*args)``, or None with its InputError kept for the report."""
        try:
            return fn(*args)
        except InputError as exc:
            self.problems.append(exc)
            return None

    def raise_any(self) -> None:
        if not self.problems:
            return
        if len(self.problems) == 1:
            raise self.problems[0]
        found = "; ".join(f"({k}) {p.found}, expected {p.expected}" for k, p in enumerate(self.problems, 1))
        raise InputError(f"every row of {self.name} complete and valid",
                         f"{len(self.problems)} problems: {found}", "correct every row listed; " + _FIX_SHEET,
                         problem=f"{len(self.problems)} rows of this sheet need correcting; each is listed below.")


def read_sample_sheet(path: Path) -> list[SampleSheetRow]:
    """Rows of a sample sheet; a later row for the same sample_id replaces an earlier one.

    Every row is checked; all problems are reported in one ``InputError``.
    """
    header, rows = _load(path, SHEET_COLUMNS, "sample sheet")
    by_id: dict[str, SampleSheetRow] = {}
    problems = _RowProblems(path.name)
    for i, raw in rows:
        row = problems.check(_sheet_row, _cells(header, raw), i, path.name)
        if row is not None:
            by_id[row.sample_id] = row
    problems.raise_any()
    if not by_id:
        raise InputError("a sample sheet with at least one sample row", f"only a header row in {path.name}",
                         "fill in the samples and drop the sheet again",
                         problem="This sample sheet has no sample rows, only its header.")
    return list(by_id.values())


def _sheet_row(c: dict[str, str], i: int, name: str) -> SampleSheetRow:
    """One sample-sheet row (``c``: its cells by column), or the InputError naming row ``i``."""
    if not c["sample_id"]:
        raise InputError("a sample_id on every row", f"an empty sample_id in row {i} of {name}", _FIX_SHEET,
                         problem=f"Row {i} of this sheet has no sample_id.")
    if not c["patient_id"]:
        raise InputError("a patient_id on every row", f"an empty patient_id in row {i} of {name}", _FIX_SHEET,
                         problem=f"Row {i} of this sheet has no patient_id.")
    role = column_key(c["role"])
    if role not in ROLES:
        raise InputError(f"role one of {', '.join(ROLES)}", f"{c['role']!r} in row {i} of {name}", _FIX_SHEET,
                         problem=f"Row {i} of this sheet has a role graftwatch does not know.")
    if role == "donor" and not c["donor_id"]:
        raise InputError("a donor_id on every donor reference row",
                         f"role donor without donor_id in row {i} of {name}", _FIX_SHEET,
                         problem=f"Row {i} of this sheet is a donor reference without a donor_id.")
    return SampleSheetRow(
        sample_id=c["sample_id"],
        patient_id=c["patient_id"],
        collection_date=parse_iso_date(c["collection_date"], "collection_date", i, name),
        specimen=c["specimen"].upper() or None,
        cell_fraction=c["cell_fraction"] or "whole",
        role=role,
        donor_id=c["donor_id"] or None,
        control_of=c.get("control_of") or None,
    )


def read_registry(path: Path) -> list[PatientCycle]:
    """Rows of a patient registry: one per patient x MST cycle; all row problems in one ``InputError``."""
    header, rows = _load(path, REGISTRY_COLUMNS, "patient registry")
    by_key: dict[tuple[str, int], PatientCycle] = {}
    problems = _RowProblems(path.name)
    for i, raw in rows:
        row = problems.check(_registry_row, _cells(header, raw), i, path.name)
        if row is not None:
            by_key[(row.patient_id, row.cycle)] = row
    problems.raise_any()
    if not by_key:
        raise InputError("a patient registry with at least one row", f"only a header row in {path.name}",
                         "fill in the patients' MST cycles and drop the registry again",
                         problem="This patient registry has no rows, only its header.")
    return list(by_key.values())


def _registry_row(c: dict[str, str], i: int, name: str) -> PatientCycle:
    if not c["patient_id"]:
        raise InputError("a patient_id on every row", f"an empty patient_id in row {i} of {name}", _FIX_SHEET,
                         problem=f"Row {i} of this registry has no patient_id.")
    try:
        cycle = int(float(c["cycle"]))
    except ValueError:
        raise InputError("cycle as a whole number (1, 2, ...)", f"{c['cycle']!r} in row {i} of {name}",
                         _FIX_SHEET,
                         problem=f"Row {i} of this registry has a cycle that is not a whole number.") from None
    return PatientCycle(patient_id=c["patient_id"], cycle=cycle,
                        mst_date=parse_iso_date(c["mst_date"], "mst_date", i, name), donor_id=c["donor_id"] or None)
