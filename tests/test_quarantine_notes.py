"""Quarantine notes lead with the lab's words (issue 18): what is wrong with the file and what
to do, then the technical detail, for every reader (FCS, STR, qPCR, ddPCR, sample sheet,
registry, and files of no known kind).

Bad files are made from the simulators' good ones (seeds below) by one edit each, so every
case knows what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from assays import ddpcr, qpcr, sheets, str_export
from assays.detect import detect_kind
from assays.errors import InputError
from assays.fcs import read_fcs
from conftest import run_pipeline
from note_checks import assert_lab_first
from simulators.ddpcr_sim import write_ddpcr_case
from simulators.qpcr_sim import write_qpcr_case
from simulators.str_sim import write_str_case
from simulators.tcell import simulate_tube

SHEET = "sample_id,patient_id,collection_date,specimen,cell_fraction,role,donor_id\n"


def _cut_last_row(path: Path) -> None:
    """The file as a copy interrupted mid-row leaves it: last row half written, no line break."""
    text = path.read_text(encoding="utf-8-sig").rstrip("\n")
    path.write_text(text[: text.rfind("\n") + 12], encoding="utf-8")


def _replace(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8-sig")
    assert old in text
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (bad file, words its first line must hold)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    s = write_str_case(folder, seed=5, donor_pcts=(20.0,), file_name="str_cut.txt").path
    _cut_last_row(s)
    out["str_cut"] = (s, "cut off")
    s = write_str_case(folder, seed=5, donor_pcts=(20.0,), file_name="str_height.txt").path
    lines = s.read_text().splitlines()
    cells = lines[3].split("\t")
    cells[5] = "high"  # Height
    s.write_text("\n".join(lines[:3] + ["\t".join(cells)] + lines[4:]) + "\n")
    out["str_height"] = (s, "number")
    q = write_qpcr_case(folder, seed=5, donor_pcts=(1.0,), file_name="qpcr_ct.txt").path
    _replace(q, "\tUNKNOWN\tVIC\tNFQ-MGB\t", "\tUNKNOWN\tVIC\tNFQ-MGB\tabc")
    out["qpcr_ct"] = (q, "number")
    q = write_qpcr_case(folder, seed=5, donor_pcts=(1.0,), file_name="qpcr_no_results.txt").path
    _replace(q, "[Results]", "[Amplification Data]")
    out["qpcr_no_results"] = (q, "section")
    d = write_ddpcr_case(folder, seed=5, donor_pcts=(1.0,), file_name="ddpcr_cut.csv").path
    _cut_last_row(d)
    out["ddpcr_cut"] = (d, "cut off")
    sheet = folder / "sheet_dates.csv"
    sheet.write_text(SHEET + "A,P1,2025-02-31,PB,whole,post,\nB,P1,2025-01-10,PB,whole,recipient,\n")
    out["sheet"] = (sheet, "rows of this sheet")
    sheet = folder / "sheet_one_date.csv"
    sheet.write_text(SHEET + "A,P1,2025-02-31,PB,whole,post,\n")
    out["sheet_date"] = (sheet, "date that does not exist")
    registry = folder / "registry.csv"
    registry.write_text("patient_id,cycle,mst_date,donor_id\nP1,first,2025-01-10,D1\n")
    out["registry"] = (registry, "cycle")
    empty = folder / "empty.csv"
    empty.write_bytes(b"")
    out["empty"] = (empty, "empty")
    other = folder / "notes.txt"
    other.write_text("Meeting notes\nbring the plates\n")
    out["unknown"] = (other, "none of the kinds")
    tube = folder / "tube_cut.fcs"
    simulate_tube(tube, seed=5, n_events=2000, sample_id="P1-D030")
    tube.write_bytes(tube.read_bytes()[:-3000])
    out["fcs_cut"] = (tube, "FCS file")
    fake = folder / "fake.fcs"
    fake.write_bytes(b"FCS3.1    garbage that is no header at all" + b"\x00" * 80)
    out["fcs_header"] = (fake, "FCS file")
    return out


_READERS = {"fcs": read_fcs, "str": lambda p: str_export.read(p, "x"), "qpcr": lambda p: qpcr.read(p, "x"),
            "ddpcr": lambda p: ddpcr.read(p, "x"), "sample_sheet": sheets.read_sample_sheet,
            "registry": sheets.read_registry}


def test_every_reader_leads_with_the_lab_sentence(tmp_path):
    """Each bad file, read as the inbox reads it (kind from content, then its reader), fails
    with an InputError whose first line says in the lab's words what is wrong."""
    for name, (path, words) in _bad_files(tmp_path).items():
        with pytest.raises(InputError) as err:
            _READERS[detect_kind(path)](path)
        first = assert_lab_first(str(err.value))[0]
        assert words in first, (name, first)


def test_quarantine_note_starts_with_the_lab_sentence(tmp_path):
    """Through the inbox: every bad file is quarantined and its note's first line is the lab
    sentence; which file and when come after the detail."""
    inbox, config = tmp_path / "inbox", tmp_path / "graftwatch.toml"
    bad = _bad_files(inbox)
    config.write_text("[inbox]\ntruncated_recheck_seconds = 0\n")  # these files are cut for good
    summary = run_pipeline(inbox, tmp_path / "store", config=config)
    assert len(summary.quarantined) == len(bad) and summary.stored == 0
    notes = sorted((tmp_path / "quarantine").glob("*.error.txt"))
    assert len(notes) == len(bad)
    for note in notes:
        text = note.read_text(encoding="utf-8")
        assert_lab_first(text)
        assert "Traceback" not in text and f"File: {note.name[: -len('.error.txt')]}" in text
