"""Readers of STR, qPCR and ddPCR exports: real reference files, format variants, bad input."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from assays import ddpcr, qpcr, str_export, tabular
from assays.errors import InputError
from assays.names import name_key
from assays.records import DdpcrWell, QpcrWell, StrPeak

READERS = {"str": str_export, "qpcr": qpcr, "ddpcr": ddpcr}


def _sniffs(path: Path) -> list[str]:
    head = tabular.head_text(path)
    return [name for name, module in READERS.items() if module.sniff(head)]


# ---------------------------------------------------------------- tabular helper


@pytest.mark.parametrize(
    "text, value",
    [("1,250.000", 1250.0), ("100,000,000.000", 1e8), ("21,5", 21.5), ("1 250", 1250.0),
     ("Undetermined", None), ("UNDETERMINED", None), ("NaN", None), ("No Call", None),
     ("NA", None), ("", None), ("-3.383", -3.383), ("1.5e3", 1500.0)],
)
def test_parse_number(text, value):
    assert tabular.parse_number(text) == value


def test_parse_number_rejects_garbage():
    with pytest.raises(ValueError):
        tabular.parse_number("12abc")


def test_decode_variants():
    text = "Well,Sample,Conc(copies/\u00b5L)\n"
    assert tabular.decode(codecs.BOM_UTF8 + text.encode("utf-8")) == text
    assert tabular.decode(text.encode("utf-16")) == text
    assert tabular.decode(text.encode("utf-16-le")) == text
    assert tabular.decode(text.encode("cp1252")) == text  # latin-1 fallback keeps µ


def test_name_key_is_blind_to_case_space_punctuation():
    assert name_key("Sample.Name") == name_key("sample name")
    assert name_key("Allele.1") == name_key("Allele 1")


def test_xlsx_table(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Run info", None])
    ws.append(["Sample Name", "Marker", "Allele", "Size", "Height", "Area"])
    ws.append(["S1", "TH01", "9.3", 175.2, 1500, 15000])
    path = tmp_path / "peaks.xlsx"
    wb.save(path)
    export = str_export.read(path, "sha")
    assert export.records == [StrPeak("S1", "TH01", "9.3", 175.2, 1500.0, 15000.0)]


# ---------------------------------------------------------------- real files


@pytest.mark.reference
@pytest.mark.parametrize("folder, assay", [("qpcr", "qpcr"), ("ddpcr", "ddpcr"), ("str", "str")])
def test_every_real_file_parses(shared_data, folder, assay):
    files = [p for p in sorted((shared_data / folder).rglob("*")) if p.is_file()
             and p.suffix.lower() in {".csv", ".txt", ".tsv", ".xlsx"} and "licen" not in p.name.lower()]
    assert files, f"no reference files under {folder}"
    for path in files:
        assert _sniffs(path) == [assay], path.name
        export = READERS[assay].read(path, "0" * 64)
        assert export.assay == assay and export.records, path.name
        assert export.source_name == path.name


@pytest.mark.reference
def test_quantstudio_classic_details(shared_data):
    folder = shared_data / "qpcr" / "quantstudio_classic"
    ex = qpcr.read(folder / "appbio_quantstudio_example07.txt", "x")
    std = [w for w in ex.records if w.well == "B4" and w.target == "RNaseP"][0]
    assert std.task == "STANDARD" and std.quantity == 1250.0 and std.ct == pytest.approx(29.508)
    ntc = [w for w in ex.records if w.well == "A1"][0]
    assert ntc.ct is None and ntc.task == "NTC"  # Undetermined
    assert ex.instrument.startswith("QuantStudio")
    assert ex.acquired_at is not None and ex.acquired_at.year == 2010
    # Cyrillic letter in Experiment Type must not break decoding
    ex5 = qpcr.read(folder / "appbio_quantstudio_example05.txt", "x")
    assert {w.sample_id for w in ex5.records} >= {"Heart", "Brain", "Liver"}
    results_only = qpcr.read(folder / "example_quantsudio_results_only.txt", "x")
    assert results_only.records[0].quantity == 1e8


@pytest.mark.reference
def test_design_analysis_and_cfx(shared_data):
    da = qpcr.read(next((shared_data / "qpcr" / "quantstudio_design_analysis").glob("*.csv")), "x")
    a4 = [w for w in da.records if w.well == "A4"][0]
    assert a4.sample_id == "s17" and a4.ct is None  # UNDETERMINED
    assert len(da.records) == 384
    cfx = qpcr.read(shared_data / "qpcr" / "cfx" / "cfxmaestro_example01.csv", "x")
    first = cfx.records[0]
    assert first == QpcrWell("M3905 R Ctx", "A01", "FAM", "UNKNOWN", pytest.approx(21.1877528266099), None)


@pytest.mark.reference
def test_ddpcr_details(shared_data):
    folder = shared_data / "ddpcr"
    qx = ddpcr.read(folder / "ddpcr_daattali_QXManager_SMN2v2_20220630.csv", "x")
    assert qx.records[0] == DdpcrWell("SMN2 Control 2 copies", "A01", "1", pytest.approx(898.375854492188),
                                      10940, 20486, 9546)
    ntc = [w for w in qx.records if w.sample_id == "NTC"][0]
    assert ntc.concentration is None and ntc.positives == 0  # No Call
    small = ddpcr.read(folder / "ddpcr_daattali_small.csv", "x")
    assert small.records[0].sample_id == "Dean" and small.records[0].accepted == 15820
    absq = ddpcr.read(folder / "Appbio_AbsoluteQ_example01.csv", "x")
    assert all(w.well != "Average" for w in absq.records) and len(absq.records) == 16
    multi = ddpcr.read(folder / "Appbio_AbsoluteQ_multichannel.csv", "x")
    jun = [w for w in multi.records if w.sample_id == "Sample A1" and w.target == "JUN"][0]
    assert (jun.positives, jun.accepted, jun.negatives) == (2311, 20419, 18108)


@pytest.mark.reference
def test_str_wide_r_variant(shared_data):
    ex = str_export.read(shared_data / "str" / "genemapper_idx_wide_set3.txt", "x")
    th01 = [p for p in ex.records if p.sample_id == "01-Pos.ktr.__" and p.marker == "TH01"]
    assert [(p.allele, p.height, p.area) for p in th01[:2]] == [("6", 3952.0, None), ("9.3", 4429.0, None)]


# ---------------------------------------------------------------- variants and bad input


def test_peak_report_sample_file_name(tmp_path):
    path = tmp_path / "anything.txt"
    path.write_text("Sample File Name\tMarker\tAllele\tSize\tHeight\tArea\n"
                    "HP01-D030.fsa\tvWA\t16\t190.1\t1,204\t12,100\n", encoding="utf-8")
    ex = str_export.read(path, "x")
    assert ex.records == [StrPeak("HP01-D030", "vWA", "16", 190.1, 1204.0, 12100.0)]


def test_genotypes_table_native(tmp_path):
    path = tmp_path / "geno.txt"
    path.write_text("Sample Name\tMarker\tAllele 1\tAllele 2\tSize 1\tSize 2\tHeight 1\tHeight 2\t"
                    "Peak Area 1\tPeak Area 2\nP1\tFGA\t21\t24\t230\t242\t900\t850\t9000\t8500\n")
    recs = str_export.read(path, "x").records
    assert [(r.allele, r.area) for r in recs] == [("21", 9000.0), ("24", 8500.0)]


def test_format_recognised_by_content_not_name(tmp_path):
    path = tmp_path / "str_peaks.csv"  # misleading name; content is a CFX qPCR export
    path.write_text(",Well,Fluor,Target,Content,Sample,Cq\n,A01,FAM,SRY,Unkn,P1,31.2\n")
    assert _sniffs(path) == ["qpcr"]


@pytest.mark.parametrize("module", [str_export, qpcr, ddpcr])
def test_empty_and_garbage_files(tmp_path, module):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        module.read(empty, "x")
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\x00\x01\x02 hello,world\n1,2\n")
    with pytest.raises(InputError) as info:
        module.read(garbage, "x")
    assert info.value.expected and info.value.found and info.value.action


def test_bad_ct_names_line_and_column(tmp_path):
    path = tmp_path / "plate.txt"
    path.write_text("* Block Type = 96-Well Block\n* Experiment Type = Standard Curve\n\n[Results]\n"
                    "Well\tWell Position\tSample Name\tTarget Name\tTask\tCT\n"
                    "1\tA1\tP1\tSRY\tUNKNOWN\t31.2\n2\tA2\tP1\tSRY\tUNKNOWN\tabc\n")
    with pytest.raises(InputError) as info:
        qpcr.read(path, "x")
    assert "'CT'" in str(info.value) and "line 7" in str(info.value)


def test_classic_without_results_section(tmp_path):
    path = tmp_path / "setup_only.txt"
    path.write_text("* Block Type = 96-Well Block\n* Experiment Type = Standard Curve\n\n[Sample Setup]\n"
                    "Well\tWell Position\tSample Name\tTarget Name\tTask\n1\tA1\tP1\tSRY\tUNKNOWN\n")
    with pytest.raises(InputError, match=r"\[Results\] section"):
        qpcr.read(path, "x")


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="could not be opened"):
        ddpcr.read(tmp_path / "nope.csv", "x")
