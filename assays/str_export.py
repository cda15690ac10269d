"""STR (capillary electrophoresis) exports -> :class:`~assays.records.StrPeak` records.

Two GeneMapper layouts, recognised by their header row:

* peak report: one row per peak, ``Sample File Name`` (and/or ``Sample Name``),
  ``Marker, Allele, Size, Height, Area``;
* genotypes table: one row per sample x marker with ``Allele 1..n, Size 1..n,
  Height 1..n, Peak Area 1..n``; also the variant re-saved by R (``Sample.Name``,
  ``Allele.1``, ``NA`` cells, no area columns). Without areas, ``area`` is None and the
  quantification uses the height as the signal.

``sample_id`` = ``Sample Name`` if present, else ``Sample File Name`` without its extension
(``HP01-D030.fsa`` -> ``HP01-D030``), DESIGN.md, Input files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from assays import tabular
from assays.errors import InputError
from assays.records import InstrumentExport, StrPeak, is_control_record

_SAMPLE = ("Sample Name", "Sample File Name", "Sample File")
_PEAK_REPORT = [_SAMPLE, ("Marker",), ("Allele",), ("Height", "Area", "Peak Area")]
_GENOTYPES = [_SAMPLE, ("Marker",), ("Allele 1",)]
_MAX_ALLELE_COLUMNS = 200


def sniff(head: str) -> bool:
    """True when the head of a file carries a GeneMapper peak-report or genotypes header row."""
    return tabular.head_has_header(head, _GENOTYPES) or tabular.head_has_header(
        head, _PEAK_REPORT
    )


def _sample_id(table: tabular.Table, row: list[str], name_i: int | None, file_i: int | None):
    name = table.text(row, name_i)
    if name:
        return name
    file_name = table.text(row, file_i)
    if file_name:
        return os.path.splitext(file_name)[0]
    return None


def _allele(table: tabular.Table, row: list[str], idx: int | None) -> str | None:
    """Allele call as GeneMapper writes it; ``9,3`` back to ``9.3`` in a decimal-comma file.

    Excel in a decimal-comma locale takes a microvariant (``9.3``) for a number and writes
    it back as ``9,3``; the allele name must stay the same whatever the locale, or one
    allele would be counted as two. Only when the whole file (sizes, heights) proves the
    decimal comma, because elsewhere ``9,3`` could be two alleles in one cell.
    """
    allele = table.text(row, idx)
    if allele and table.decimal_mark() == "," and re.fullmatch(r"\d+,\d+", allele):
        return allele.replace(",", ".")
    return allele


def _wide_columns(table: tabular.Table) -> list[tuple[int, int | None, int | None, int | None, int | None]]:
    columns = []
    for n in range(1, _MAX_ALLELE_COLUMNS + 1):
        allele_i = table.find(f"Allele {n}")
        if allele_i is None:
            break
        columns.append(
            (
                allele_i,
                table.find(f"Size {n}"),
                table.find(f"Height {n}"),
                table.find(f"Peak Area {n}", f"Area {n}"),
                table.find(f"Data Point {n}"),
            )
        )
    return columns


def _read_genotypes(table: tabular.Table, name_i, file_i) -> list[StrPeak]:
    marker_i = table.find("Marker")
    dye_i = table.find("Dye")
    columns = _wide_columns(table)
    peaks = []
    for pos, row in enumerate(table.rows):
        sample_id = _sample_id(table, row, name_i, file_i)
        marker = table.text(row, marker_i)
        if sample_id is None or marker is None:
            continue
        dye = _dye(table.text(row, dye_i))
        for allele_i, size_i, height_i, area_i, point_i in columns:
            allele = _allele(table, row, allele_i)
            if allele is None:
                continue
            peaks.append(_peak(table, pos, sample_id, marker, allele, size_i, height_i, area_i, dye, point_i))
    return peaks


def _peak(table: tabular.Table, pos: int, sample_id: str, marker: str, allele: str,
          size_i: int | None, height_i: int | None, area_i: int | None,
          dye: str | None = None, point_i: int | None = None) -> StrPeak:
    """One called peak; numbers read from data row ``pos`` of ``table``."""
    return StrPeak(sample_id=sample_id, marker=marker, allele=allele, size=table.number(pos, size_i),
                   height=table.number(pos, height_i), area=table.number(pos, area_i),
                   dye=dye, data_point=table.number(pos, point_i))


def _dye(text: str | None) -> str | None:
    """Dye colour letter: GeneMapper writes ``B`` or, in ``Dye/Sample Peak``, ``B,12``."""
    if not text:
        return None
    return text.split(",")[0].strip().upper() or None


def _read_peak_report(table: tabular.Table, name_i, file_i) -> list[StrPeak]:
    marker_i = table.find("Marker")
    allele_i = table.find("Allele")
    size_i = table.find("Size")
    height_i = table.find("Height")
    area_i = table.find("Area", "Peak Area")
    dye_i = table.find("Dye", "Dye/Sample Peak")
    point_i = table.find("Data Point")
    peaks = []
    for pos, row in enumerate(table.rows):
        sample_id = _sample_id(table, row, name_i, file_i)
        marker = table.text(row, marker_i)
        allele = _allele(table, row, allele_i)
        if sample_id is None or marker is None or allele is None:
            continue  # unlabelled peaks (primer peaks, noise) carry no allele call
        peaks.append(_peak(table, pos, sample_id, marker, allele, size_i, height_i, area_i,
                           _dye(table.text(row, dye_i)), point_i))
    return peaks


def _shared_names(peaks: list[StrPeak]) -> dict[str, int]:
    """Sample names that label several samples: name -> how many.

    An export lists each sample's markers once, in one run of rows per marker; when a name
    comes back to a marker it already had, the rows after it are another sample under the
    same name (an anonymised export, a placeholder name), and storing them as one sample
    would keep only some of their peaks.
    """
    runs: dict[str, list[str]] = {}
    for p in peaks:
        if is_control_record(p):
            continue  # kit controls and ladders carry the same name on every run of a file
        seq = runs.setdefault(p.sample_id, [])
        if not seq or seq[-1] != p.marker:
            seq.append(p.marker)
    shared = {}
    for name, seq in runs.items():
        most = max(seq.count(m) for m in set(seq))
        if most > 1:
            shared[name] = most
    return shared


def read(path: Path, source_sha256: str) -> InstrumentExport:
    """Parse a GeneMapper export into one record per called peak.

    Raises
    ------
    InputError
        No GeneMapper header row, a non-numeric size/height/area, or no called allele.
    """
    path = Path(path)
    head = tabular.head_text(path)
    wide = tabular.head_has_header(head, _GENOTYPES)
    if wide:
        table = tabular.load_table(path, _GENOTYPES, what="GeneMapper genotypes table", fixed_width=True)
    else:
        table = tabular.load_table(path, _PEAK_REPORT, what="GeneMapper peak report", fixed_width=True)
    name_i = table.find("Sample Name")
    file_i = table.find("Sample File Name", "Sample File")
    peaks = (_read_genotypes if wide else _read_peak_report)(table, name_i, file_i)
    if not peaks:
        raise InputError(
            expected="at least one called allele (sample, marker, allele) in the STR export",
            found=f"no called allele in {path.name}",
            action="check that the run was sized and genotyped in GeneMapper before exporting",
            problem="This STR export has no called alleles.",
        )
    shared = _shared_names(peaks)
    if shared:
        name, n = next(iter(shared.items()))
        raise InputError(
            expected="one sample per sample name in the STR export (each sample's markers listed once)",
            found=f"{n} samples that all carry the name {name!r} in {path.name} (each marker comes back {n} times)"
                  + (f", and {len(shared) - 1} more such name(s)" if len(shared) > 1 else ""),
            action="export again from GeneMapper with each sample's own Sample Name (recipient, donor and "
                   "post-transplant samples must be told apart); nothing from this file was stored",
                   problem="Several samples in this STR export share one sample name, so they cannot be told apart.")
    return InstrumentExport(
        assay="str",
        source_name=path.name,
        source_sha256=source_sha256,
        instrument=table.meta("Instrument", "Instrument Name", "Instrument Type"),
        acquired_at=tabular.parse_timestamp(table.meta("Run Date", "Date")),
        records=peaks,
    )
