"""Sample sheet and patient registry headers as other labs spell them (assays/sheets.py).

Hand-written sheets: the expected rows are the cells written here.
"""

from __future__ import annotations

import datetime as dt

import pytest

from assays.detect import detect_kind
from assays.errors import InputError
from assays.sheets import read_registry, read_sample_sheet

SHEET_HEADERS = [
    "sample_id,patient_id,collection_date,specimen,cell_fraction,role,donor_id",
    "SampleID,PatientID,CollectionDate,Specimen,CellFraction,Role,DonorID",
    "Sample ID;Patient ID;Collection Date;Specimen;Cell Fraction;Role;Donor ID",
    "SAMPLE-ID\tPATIENT-ID\tCOLLECTION-DATE\tSPECIMEN\tCELL-FRACTION\tROLE\tDONOR-ID",
]


@pytest.mark.parametrize("header", SHEET_HEADERS)
def test_sheet_headers_any_case_spacing_or_punctuation(tmp_path, header):
    delim = ";" if ";" in header else "\t" if "\t" in header else ","
    rows = [["S1", "P1", "2026-01-05", "pb", "CD3", "Recipient pre", ""],
            ["S2", "P1", "2026-02-05", "PB", "", "POST", "D1"],
            ["S3", "P1", "2025-12-20", "PB", "whole", "Donor", "D1"]]
    path = tmp_path / "sheet.csv"
    path.write_text("\n".join([header, *(delim.join(r) for r in rows)]) + "\n")
    assert detect_kind(path) == "sample_sheet"
    got = {r.sample_id: r for r in read_sample_sheet(path)}
    assert [(r.patient_id, r.collection_date, r.specimen, r.cell_fraction, r.role, r.donor_id) for r in got.values()] == [
        ("P1", dt.date(2026, 1, 5), "PB", "CD3", "recipient_pre", None),
        ("P1", dt.date(2026, 2, 5), "PB", "whole", "post", "D1"),
        ("P1", dt.date(2025, 12, 20), "PB", "whole", "donor", "D1"),
    ]


def test_registry_camel_case_headers(tmp_path):
    path = tmp_path / "registry.csv"
    path.write_text("PatientID,Cycle,MSTDate,DonorID\nP1,1,2025-12-01,D1\nP1,2,2026-03-01,D1\n")
    assert detect_kind(path) == "registry"
    got = sorted((r.patient_id, r.cycle, r.mst_date, r.donor_id) for r in read_registry(path))
    assert got == [("P1", 1, dt.date(2025, 12, 1), "D1"), ("P1", 2, dt.date(2026, 3, 1), "D1")]


def test_unknown_role_still_refused_with_the_row(tmp_path):
    path = tmp_path / "sheet.csv"
    path.write_text(SHEET_HEADERS[1] + "\nS1,P1,2026-01-05,PB,whole,recipient,\n")
    with pytest.raises(InputError) as err:
        read_sample_sheet(path)
    assert "recipient_pre, donor, post" in str(err.value) and "row 2" in str(err.value)


def test_every_bad_row_is_named_in_one_note(tmp_path):
    """Three bad dates and a bad role: one quarantine note lists all four, so one fix
    settles the sheet; a date in the right format that does not exist is called that."""
    import pytest

    from assays.errors import InputError
    from assays.sheets import read_sample_sheet

    p = tmp_path / "sheet.csv"
    p.write_text("sample_id,patient_id,collection_date,specimen,cell_fraction,role,donor_id\n"
                 "A,P1,2025-02-31,PB,whole,post,\n"
                 "B,P1,03/01/2025,PB,whole,post,\n"
                 "C,P1,2025-01-10,PB,whole,recipient,\n"
                 "D,P1,2025-13-01,PB,whole,post,\n"
                 "E,P1,2025-01-12,PB,whole,post,\n")
    with pytest.raises(InputError) as err:
        read_sample_sheet(p)
    text = str(err.value)
    assert "4 problems" in text
    for row_no, bad in ((2, "2025-02-31"), (3, "03/01/2025"), (4, "'recipient'"), (5, "2025-13-01")):  # header = row 1
        assert f"in row {row_no} of sheet.csv" in text and bad in text
    assert "no day of the calendar" in text
