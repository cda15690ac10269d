"""Sample sheet and patient registry readers (CSV or XLSX).

Headers are matched case- and spacing-blind (``Sample ID`` = ``sample_id``).
Every row problem names the row number as the technician sees it in a
spreadsheet (header = row 1), what was expected and what was found.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from pathlib import Path

from assays.errors import InputError
from assays.records import PatientCycle, SampleSheetRow

SHEET_COLUMNS = ("sample_id", "patient_id", "collection_date", "specimen", "cell_fraction", "role", "donor_id")
SHEET_OPTIONAL = ("control_of",)
REGISTRY_COLUMNS = ("patient_id", "cycle", "mst_date", "donor_id")
ROLES = ("recipient_pre", "donor", "post")
_FIX_SHEET = "correct the row in the spreadsheet and drop the corrected sheet again (later rows replace earlier ones)"


def column_key(name: str) -> str:
    """Header normalisation: lower case, runs of spaces/dashes/dots become one '_'."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header keys and data rows (as text) of a CSV/TSV/XLSX file."""
    data = path.read_bytes()
    if data[:2] == b"PK":
        rows = _xlsx_rows(path)
    else:
        rows = _csv_rows(data, path.name)
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputError("a header row and data rows", f"an empty table in {path.name}", "export the sheet again")
    header = [column_key(h) for h in rows[0]]
    return header, rows[1:]


def _csv_rows(data: bytes, name: str) -> list[list[str]]:
    for enc in ("utf-8-sig", "utf-16") if data[:2] not in (b"\xff\xfe", b"\xfe\xff") else ("utf-16",):
        try:
            text = data.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    else:
        text = data.decode("latin-1")
    first = text.splitlines()[0] if text else ""
    delim = max(",;\t", key=first.count)
    return [[c.strip() for c in row] for row in csv.reader(io.StringIO(text), delimiter=delim)]


def _xlsx_rows(path: Path) -> list[list[str]]:
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:
        raise InputError("a readable XLSX workbook", f"{type(exc).__name__} opening {path.name}", "save the sheet again as .xlsx or .csv") from None
    try:
        ws = wb.worksheets[0]
        out = []
        for row in ws.iter_rows(values_only=True):
            out.append(["" if v is None else (v.date().isoformat() if isinstance(v, dt.datetime) else v.isoformat() if isinstance(v, dt.date) else str(v)) for v in row])
        return out
    finally:
        wb.close()


def header_matches(header: list[str], required: tuple[str, ...]) -> bool:
    return all(c in header for c in required)


def parse_iso_date(value: str, column: str, row_no: int, name: str) -> dt.date:
    """An ISO ``YYYY-MM-DD`` date; anything else is an InputError naming the row."""
    text = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}( 00:00:00)?", text):
        try:
            return dt.date.fromisoformat(text[:10])
        except ValueError:
            pass
    raise InputError(
        f"{column} as an ISO date YYYY-MM-DD (e.g. 2026-03-15)",
        f"{value!r} in row {row_no} of {name}",
        "write the date as YYYY-MM-DD; " + _FIX_SHEET,
    )


def _cells(header: list[str], row: list[str]) -> dict[str, str]:
    return {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}


def _require(header: list[str], columns: tuple[str, ...], what: str, name: str) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        raise InputError(
            f"a {what} with the columns {', '.join(columns)}",
            f"no {', '.join(missing)} column in {name} (columns: {', '.join(h for h in header if h)})",
            "add the missing columns (case and spacing do not matter) and drop the file again",
        )


def read_sample_sheet(path: Path) -> list[SampleSheetRow]:
    """Rows of a sample sheet; a later row for the same sample_id replaces an earlier one."""
    header, rows = read_rows(path)
    _require(header, SHEET_COLUMNS, "sample sheet", path.name)
    by_id: dict[str, SampleSheetRow] = {}
    for i, raw in enumerate(rows, start=2):
        c = _cells(header, raw)
        if not c["sample_id"]:
            raise InputError("a sample_id on every row", f"an empty sample_id in row {i} of {path.name}", _FIX_SHEET)
        if not c["patient_id"]:
            raise InputError("a patient_id on every row", f"an empty patient_id in row {i} of {path.name}", _FIX_SHEET)
        role = column_key(c["role"])
        if role not in ROLES:
            raise InputError(
                f"role one of {', '.join(ROLES)}", f"{c['role']!r} in row {i} of {path.name}", _FIX_SHEET
            )
        if role == "donor" and not c["donor_id"]:
            raise InputError(
                "a donor_id on every donor reference row", f"role donor without donor_id in row {i} of {path.name}", _FIX_SHEET
            )
        specimen = c["specimen"].upper() or None
        by_id[c["sample_id"]] = SampleSheetRow(
            sample_id=c["sample_id"],
            patient_id=c["patient_id"],
            collection_date=parse_iso_date(c["collection_date"], "collection_date", i, path.name),
            specimen=specimen,
            cell_fraction=c["cell_fraction"] or "whole",
            role=role,
            donor_id=c["donor_id"] or None,
            control_of=c.get("control_of") or None,
        )
    return list(by_id.values())


def read_registry(path: Path) -> list[PatientCycle]:
    """Rows of a patient registry: one per patient x MST cycle."""
    header, rows = read_rows(path)
    _require(header, REGISTRY_COLUMNS, "patient registry", path.name)
    by_key: dict[tuple[str, int], PatientCycle] = {}
    for i, raw in enumerate(rows, start=2):
        c = _cells(header, raw)
        if not c["patient_id"]:
            raise InputError("a patient_id on every row", f"an empty patient_id in row {i} of {path.name}", _FIX_SHEET)
        try:
            cycle = int(float(c["cycle"]))
        except ValueError:
            raise InputError("cycle as a whole number (1, 2, ...)", f"{c['cycle']!r} in row {i} of {path.name}", _FIX_SHEET) from None
        by_key[(c["patient_id"], cycle)] = PatientCycle(
            patient_id=c["patient_id"],
            cycle=cycle,
            mst_date=parse_iso_date(c["mst_date"], "mst_date", i, path.name),
            donor_id=c["donor_id"] or None,
        )
    return list(by_key.values())
