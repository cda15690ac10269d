"""Recognise what a dropped file is from its content, never its name or folder.

FCS by its ``FCS2.0/3.0/3.1`` header; STR, qPCR and ddPCR exports by their header
lines (each reader's ``sniff``); the sample sheet and the patient registry by their
columns.
"""

from __future__ import annotations

from pathlib import Path

from assays import ddpcr, fcs, qpcr, sheets, str_export, tabular
from assays.errors import InputError

KINDS = ("fcs", "sample_sheet", "registry", "str", "qpcr", "ddpcr")
_HEAD_BYTES = 16384


def _xlsx_head(path: Path) -> str:
    """The first rows of an XLSX workbook as tab-separated text, for sniffing."""
    try:
        rows = tabular.xlsx_rows(tabular.read_bytes(path), path.name)
    except InputError:
        return ""  # not a readable workbook: detect_kind reports it as an unknown file
    return "\n".join("\t".join(r) for r in rows[:60])


def detect_kind(path: Path) -> str:
    """One of :data:`KINDS`; ``InputError`` when the content matches none of them."""
    with open(path, "rb") as fh:
        raw = fh.read(_HEAD_BYTES)
    if not raw:
        raise InputError(
            "an FCS file, an STR/qPCR/ddPCR export, a sample sheet or a patient registry",
            f"an empty file ({path.name}, 0 bytes)",
            "copy the file again once the instrument or export has finished writing it",
            problem="This file is empty.",
        )
    if fcs.sniff(raw):
        return "fcs"
    head = _xlsx_head(path) if tabular.is_xlsx(raw) else tabular.decode(raw, path.name)
    cols = sheets.head_columns(head)
    if set(sheets.SHEET_COLUMNS) <= cols:
        return "sample_sheet"
    if set(sheets.REGISTRY_COLUMNS) <= cols:
        return "registry"
    for kind, module in (("str", str_export), ("ddpcr", ddpcr), ("qpcr", qpcr)):
        if module.sniff(head):
            return kind
    first = next((ln.strip() for ln in head.splitlines() if ln.strip()), "")[:80]
    raise InputError(
        "an FCS file (starting FCS2.0/FCS3.0/FCS3.1), an STR/qPCR/ddPCR export with its header "
        f"row, a sample sheet ({', '.join(sheets.SHEET_COLUMNS)}) or a patient registry "
        f"({', '.join(sheets.REGISTRY_COLUMNS)})",
        f"a file of another kind ({path.name}, first line {first!r})",
        "drop only instrument exports and sheets here; if this is a sheet, check its header row",
        problem="This file is none of the kinds graftwatch reads (FCS file, STR/qPCR/ddPCR export, sample sheet, "
                "patient registry).",
    )
