"""Rows of an Excel workbook export (.xlsx), as the text cells the table reader expects."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

from assays.errors import InputError

_XLSX_MAGIC = b"PK\x03\x04"


def is_xlsx(raw: bytes) -> bool:
    """True for an Office Open XML workbook (a zip file)."""
    return raw.startswith(_XLSX_MAGIC)


def xlsx_rows(raw: bytes, source_name: str) -> list[list[str]]:
    import openpyxl  # local import: only XLSX exports need it

    try:
        workbook = openpyxl.load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise InputError(
            expected="a readable Excel workbook (.xlsx)",
            found=f"{source_name} could not be opened as a workbook ({exc})",
            action="save the export again as .xlsx or as a CSV/text file",
            problem="This Excel file could not be opened.",
        ) from None
    rows: list[list[str]] = []
    try:
        for sheet in workbook.worksheets:
            for values in sheet.iter_rows(values_only=True):
                rows.append(["" if v is None else _cell_str(v) for v in values])
            if rows:
                break  # the results are on the first non-empty sheet
    finally:
        workbook.close()
    return rows


def _cell_str(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)
