"""Write sample sheets and patient registries (CSV) for simulated cases and the demo."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable

from assays.records import PatientCycle, SampleSheetRow
from assays.sheets import REGISTRY_COLUMNS, SHEET_COLUMNS


def write_sample_sheet(path: Path, rows: Iterable[SampleSheetRow], control_of: bool = False) -> Path:
    """A sample sheet with the contract's columns (plus ``control_of`` when asked)."""
    columns = list(SHEET_COLUMNS) + (["control_of"] if control_of else [])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in rows:
            w.writerow([r.sample_id, r.patient_id, r.collection_date.isoformat(), r.specimen or "",
                        r.cell_fraction or "", r.role, r.donor_id or ""] + ([r.control_of or ""] if control_of else []))
    return Path(path)


def write_registry(path: Path, rows: Iterable[PatientCycle]) -> Path:
    """A patient registry: one row per patient x MST cycle."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(REGISTRY_COLUMNS)
        for r in rows:
            w.writerow([r.patient_id, r.cycle, r.mst_date.isoformat(), r.donor_id or ""])
    return Path(path)
