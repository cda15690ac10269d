"""Instrument exports as other labs really send them: the same numbers whatever the re-save.

Each real reference export is rewritten the way a lab's PC, Excel or LIMS rewrites it
(line endings, encodings, delimiters, decimal commas, quoting, header spelling, column
order, sample-name spacing) and run end to end through ``flows.process.process_file``.
A variant is either stored with exactly the original's numbers or quarantined with a
message saying what to do; never stored with different numbers.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import pytest

from assays import tabular
from assays.names import name_key
from flows.inbox import InboxFile
from flows.process import GatingSetup, process_file

MEASUREMENT_TABLES = ("str_peaks", "qpcr_wells", "ddpcr_wells")

# One real export per layout the readers know.
REFERENCE_FILES = [
    "qpcr/quantstudio_classic/example_quantsudio_results_only.txt",  # 3-decimal CT, 100,000,000.000
    "qpcr/quantstudio_classic/appbio_quantstudio_example01.txt",  # sectioned, trimmed rows
    "qpcr/quantstudio_design_analysis/GabPescador_qPCRAnalysis_Results_20240213_184604.csv",
    "qpcr/cfx/cfxmaestro_example01.csv",
    "ddpcr/ddpcr_daattali_QXManager_SMN2v2_20220630.csv",
    "ddpcr/ddpcr_daattali_QuantaSoft_v174_test.csv",
    "ddpcr/Appbio_AbsoluteQ_example01.csv",
    "ddpcr/Appbio_AbsoluteQ_multichannel.csv",
    "str/genemapper_idx_wide_set3.txt",
]

_NUMBER = re.compile(r"[-+]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?")


# ---------------------------------------------------------------- helpers


def _process(path: Path):
    """(outcome, measurement rows without the file hash) of one file, end to end."""
    outcome = process_file(InboxFile(path, path.name), GatingSetup(), set())
    rows = [
        {k: v for k, v in row.items() if k != "source_sha256"}
        for table in MEASUREMENT_TABLES
        for row in outcome.rows.get(table, [])
    ]
    return outcome, rows


def _assert_same_rows(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.keys() == e.keys()
        for key, value in e.items():
            if isinstance(value, float) and not math.isnan(value):
                assert g[key] == pytest.approx(value, rel=1e-12, abs=0), (key, g, e)
            else:
                assert g[key] == value, (key, g, e)


def _split(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter), [])


def _join(cells: list[str], delimiter: str, quote_all: bool = False) -> str:
    buf = io.StringIO()
    quoting = csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL
    csv.writer(buf, delimiter=delimiter, lineterminator="", quoting=quoting).writerow(cells)
    return buf.getvalue()


def _delimiter(text: str) -> str:
    return "\t" if text.count("\t") > text.count(",") else ","


def _header_index(lines: list[str], delimiter: str) -> int:
    """Line index of the results header (after ``[Results]`` in sectioned exports)."""
    start = next((i + 1 for i, ln in enumerate(lines) if ln.strip() == "[Results]"), 0)
    for i in range(start, len(lines)):
        keys = {name_key(c) for c in _split(lines[i], delimiter)}
        if len(keys) > 4 and keys & {"well", "samplename", "sample"}:
            return i
    raise AssertionError("no header line")


def _table_end(lines: list[str], header: int) -> int:
    end = header + 1
    while end < len(lines) and lines[end].strip() and not lines[end].lstrip().startswith(("[", "*", "#")):
        end += 1
    return end


def _decimal_comma(cell: str, thousands: str = "") -> str:
    """A decimal-point number as a decimal-comma locale writes it (``1,250.5`` -> ``1.250,5``)."""
    s = cell.strip()
    if not _NUMBER.fullmatch(s):
        return cell
    grouped = "," in s
    integer, _, fraction = s.replace(",", "").partition(".")
    if thousands and grouped:
        sign = integer[:1] if integer[:1] in "+-" else ""
        digits = integer.lstrip("+-")
        groups = []
        while len(digits) > 3:
            groups.insert(0, digits[-3:])
            digits = digits[:-3]
        integer = sign + thousands.join([digits, *groups])
    return integer + ("," + fraction if fraction else "")


def _rewrite_cells(text: str, new_delimiter: str, cell=lambda c: c, quote_all: bool = False) -> str:
    """Every line re-split and re-joined: what Excel/LIMS re-saves do to the whole file."""
    delimiter = _delimiter(text)
    return "\n".join(
        _join([cell(c) for c in _split(ln, delimiter)], new_delimiter, quote_all) if ln.strip() else ln
        for ln in text.splitlines()
    )


def _rewrite_header(text: str, fn) -> str:
    delimiter = _delimiter(text)
    lines = text.splitlines()
    h = _header_index(lines, delimiter)
    lines[h] = _join([fn(c) for c in _split(lines[h], delimiter)], delimiter)
    return "\n".join(lines)


def _rewrite_table_rows(text: str, fn) -> str:
    """``fn(cells, width)`` applied to the header and data rows of the results table only."""
    delimiter = _delimiter(text)
    lines = text.splitlines()
    h = _header_index(lines, delimiter)
    width = len(_split(lines[h], delimiter))
    for i in range(h, _table_end(lines, h)):
        lines[i] = _join(fn(_split(lines[i], delimiter), width), delimiter)
    return "\n".join(lines)


def _reorder(cells: list[str], width: int) -> list[str]:
    """Columns in reverse order, rows first brought to the header's width (trimmed cells)."""
    if not any(c.strip() for c in cells[width:]):
        cells = (cells + [""] * width)[:width]
    return cells[::-1]


def _write(tmp_path: Path, name: str, text: str, encoding: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding, errors="replace"))  # cp1252 Excel writes '?' for Cyrillic
    return path


# variant name -> (text -> text, encoding)
LOSSLESS_VARIANTS = {
    "crlf": (lambda t: "\r\n".join(t.splitlines()) + "\r\n", "utf-8"),
    "utf8_bom": (lambda t: t, "utf-8-sig"),
    "utf8_no_bom": (lambda t: t, "utf-8"),
    "utf16le_bom_crlf": (lambda t: "\r\n".join(t.splitlines()) + "\r\n", "utf-16"),
    "excel_semicolon_decimal_comma": (lambda t: _rewrite_cells(t, ";", _decimal_comma), "utf-8-sig"),
    "excel_semicolon_decimal_comma_cp1252": (
        lambda t: "\r\n".join(_rewrite_cells(t, ";", _decimal_comma).splitlines()), "cp1252"),
    "tab_decimal_comma_thousands_dot": (
        lambda t: _rewrite_cells(t, "\t", lambda c: _decimal_comma(c, ".")), "utf-8"),
    "excel_unicode_text_tab": (lambda t: "\r\n".join(_rewrite_cells(t, "\t").splitlines()), "utf-16"),
    "tab_delimited": (lambda t: _rewrite_cells(t, "\t"), "utf-8"),
    "trailing_delimiter": (lambda t: "\n".join(ln + _delimiter(t) if ln.strip() else ln for ln in t.splitlines()), "utf-8"),
    "extra_empty_columns": (lambda t: _rewrite_table_rows(t, lambda c, w: c + ["", "", ""]), "utf-8"),
    "all_fields_quoted": (lambda t: _rewrite_cells(t, _delimiter(t), quote_all=True), "utf-8"),
    "header_upper_case": (lambda t: _rewrite_header(t, str.upper), "utf-8"),
    "header_sentence_case_extra_spaces": (
        lambda t: _rewrite_header(t, lambda c: " " + c[:1].upper() + c[1:].lower().replace(" ", "  ") + " "), "utf-8"),
    "columns_reordered": (lambda t: _rewrite_table_rows(t, _reorder), "utf-8"),
    "trailing_blank_lines": (lambda t: t + "\n\n\n\n", "utf-8"),
}


@pytest.fixture(scope="module")
def originals() -> dict[str, tuple[str, list[dict]]]:
    """Decoded text and parsed rows of each reference file, parsed once per module."""
    from tests.conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    parsed = {}
    for rel in REFERENCE_FILES:
        path = SHARED_DATA / rel
        outcome, rows = _process(path)
        assert outcome.status == "stored" and rows, (rel, outcome.error)
        parsed[rel] = (tabular.decode(path.read_bytes()), rows)
    return parsed


# ---------------------------------------------------------------- real files, lossless variants


@pytest.mark.reference
@pytest.mark.parametrize("variant", sorted(LOSSLESS_VARIANTS))
@pytest.mark.parametrize("rel", REFERENCE_FILES, ids=lambda r: Path(r).stem[:28])
def test_variant_stores_the_original_numbers(shared_data, originals, tmp_path, rel, variant):
    """Every re-save a lab produces is stored with the original's Ct/Cq, quantities,
    concentrations, droplet counts, alleles, sizes, heights and sample names."""
    text, expected = originals[rel]
    transform, encoding = LOSSLESS_VARIANTS[variant]
    path = _write(tmp_path, Path(rel).stem + "_" + variant + Path(rel).suffix, transform(text), encoding)
    outcome, rows = _process(path)
    assert outcome.status == "stored", outcome.error
    _assert_same_rows(rows, expected)


@pytest.mark.reference
def test_decimal_comma_quantstudio_keeps_three_decimal_ct(shared_data, tmp_path):
    """German-locale QuantStudio text: CT ``16,484`` is 16.484 (not 16484), quantity
    ``100.000.000,000`` is 1e8, because ``0,021`` elsewhere proves the decimal comma."""
    src = shared_data / "qpcr/quantstudio_classic/example_quantsudio_results_only.txt"
    text = _rewrite_cells(tabular.decode(src.read_bytes()), "\t", lambda c: _decimal_comma(c, "."))
    assert "\t16,484\t" in text and "100.000.000,000" in text
    outcome, rows = _process(_write(tmp_path, "qs_de.txt", text, "utf-8"))
    assert outcome.status == "stored", outcome.error
    first = rows[0]
    assert (first["well"], first["sample_id"], first["ct"], first["quantity"]) == (
        "A1", "Standard 1 (1e8)", 16.484, 100_000_000.0)


@pytest.mark.reference
def test_str_microvariant_survives_decimal_comma_resave(shared_data, tmp_path):
    """Excel in a decimal-comma locale writes allele 9.3 as ``9,3``: it is still allele 9.3,
    with the original size 175.25 and height 4429."""
    src = shared_data / "str/genemapper_idx_wide_set3.txt"
    text = _rewrite_cells(tabular.decode(src.read_bytes()), ";", _decimal_comma)
    outcome, rows = _process(_write(tmp_path, "str_eu.csv", text, "cp1252"))
    assert outcome.status == "stored", outcome.error
    th01 = [r for r in rows if r["sample_id"] == "01-Pos.ktr.__" and r["marker"] == "TH01"]
    assert [(r["allele"], r["size"], r["height"]) for r in th01[:2]] == [("6", 160.41, 3952.0), ("9.3", 175.25, 4429.0)]


@pytest.mark.reference
@pytest.mark.parametrize("rel", REFERENCE_FILES, ids=lambda r: Path(r).stem[:28])
def test_sample_names_with_spaces_and_unicode(shared_data, originals, tmp_path, rel):
    """Sample names typed with inner spaces, accents and stray outer spaces are stored
    trimmed, exactly as typed inside, with all numbers unchanged."""
    text, expected = originals[rel]
    names = {r["sample_id"] for r in expected}
    renamed = _rewrite_table_rows(
        text, lambda cells, w: [f"  Pt é ü{c.strip()} " if c.strip() in names else c for c in cells])
    outcome, rows = _process(_write(tmp_path, "renamed" + Path(rel).suffix, renamed, "utf-8"))
    assert outcome.status == "stored", outcome.error
    _assert_same_rows(rows, [dict(r, sample_id="Pt é ü" + r["sample_id"]) for r in expected])


@pytest.mark.reference
def test_quoted_metadata_and_section_lines(shared_data, originals, tmp_path):
    """A tool quoting every field (``"* Chemistry = TAQMAN"``, ``"[Results]"``) still gives the
    [Results] wells of a sectioned QuantStudio file, not rows of the sections after it."""
    rel = "qpcr/quantstudio_classic/appbio_quantstudio_example01.txt"
    text, expected = originals[rel]
    quoted = _rewrite_cells(text, "\t", quote_all=True)
    assert '\n"[Results]"\n' in quoted and '\n"* Chemistry = SYBR_GREEN"\n' in quoted
    outcome, rows = _process(_write(tmp_path, "quoted.txt", quoted, "utf-8"))
    assert outcome.status == "stored", outcome.error
    _assert_same_rows(rows, expected)
    assert rows[0]["ct"] == 18.717


@pytest.mark.reference
@pytest.mark.parametrize("rel", ["qpcr/cfx/cfxmaestro_example01.csv", "ddpcr/Appbio_AbsoluteQ_example01.csv",
                                 "str/genemapper_idx_wide_set3.txt"], ids=lambda r: Path(r).stem[:28])
def test_comma_separated_with_unquoted_decimal_commas_is_refused(shared_data, originals, tmp_path, rel):
    """``21,18`` in a comma-separated file splits into two cells and shifts the row:
    quarantined with the reason, never stored with Ct 21 or values from the next column."""
    text, _ = originals[rel]
    delimiter = _delimiter(text)
    broken = "\n".join(",".join(_decimal_comma(c) for c in _split(ln, delimiter)) if ln.strip() else ln
                       for ln in text.splitlines())
    outcome, rows = _process(_write(tmp_path, "broken" + Path(rel).suffix, broken, "utf-8"))
    assert outcome.status == "quarantined" and rows == []
    assert "shifted" in outcome.error and "What to do:" in outcome.error


# ---------------------------------------------------------------- decimal convention, synthetic


def _qpcr_csv(tmp_path: Path, rows: list[str], delimiter: str = ";") -> Path:
    header = delimiter.join(["Well", "Sample", "Target", "Cq", "Quantity"])
    text = "\r\n".join([header, *[r.replace("|", delimiter) for r in rows]]) + "\r\n"
    path = tmp_path / "plate.csv"
    path.write_bytes(text.encode("utf-8-sig"))
    return path


def test_ambiguous_thousands_without_evidence_is_quarantined(tmp_path):
    """``21,234`` is 21.234 or 21234 depending on the locale; nothing in the file says which."""
    path = _qpcr_csv(tmp_path, ["A1|P1 D+30|SRY|21,234|", "A2|P1 D+30|RPP30|22,345|"])
    outcome, rows = _process(path)
    assert outcome.status == "quarantined" and rows == []
    assert "'21,234'" in outcome.error and "21.234" in outcome.error and "21234" in outcome.error
    assert "decimal separator" in outcome.error and "What to do:" in outcome.error


def test_ambiguous_cell_follows_the_column_convention(tmp_path):
    """``21,5`` in the same column proves the decimal comma, so ``21,234`` is 21.234."""
    path = _qpcr_csv(tmp_path, ["A1|P1|SRY|21,234|1.000", "A2|P1|RPP30|21,5|2.500,75"])
    outcome, rows = _process(path)
    assert outcome.status == "stored", outcome.error
    assert [(r["ct"], r["quantity"]) for r in rows] == [(21.234, 1000.0), (21.5, 2500.75)]


def test_ambiguous_cell_follows_the_file_convention(tmp_path):
    """A Cq column with only ``1,234``-shaped cells takes the convention of the quantities."""
    path = _qpcr_csv(tmp_path, ["A1|P1|SRY|21,234|0,5", "A2|P1|RPP30|22,345|"])
    outcome, rows = _process(path)
    assert outcome.status == "stored", outcome.error
    assert [r["ct"] for r in rows] == [21.234, 22.345] and rows[0]["quantity"] == 0.5


def test_thousands_comma_with_decimal_point_evidence(tmp_path):
    """In a decimal-point file ``1,234`` is one thousand two hundred thirty-four."""
    path = _qpcr_csv(tmp_path, ['A1|P1|SRY|21.5|"1,234"', 'A2|P1|RPP30|22.25|"1,250.5"'], delimiter=",")
    outcome, rows = _process(path)
    assert outcome.status == "stored", outcome.error
    assert [(r["ct"], r["quantity"]) for r in rows] == [(21.5, 1234.0), (22.25, 1250.5)]


def test_mixed_conventions_are_quarantined(tmp_path):
    """A column holding both ``21.5`` and ``21,5`` cannot tell what ``21,234`` means."""
    path = _qpcr_csv(tmp_path, ["A1|P1|SRY|21.5|", "A2|P1|SRY|21,5|", "A3|P1|SRY|21,234|"])
    outcome, _ = _process(path)
    assert outcome.status == "quarantined"
    assert "mixes decimal points and decimal commas" in outcome.error and "line 4" in outcome.error


def test_three_decimal_point_default_kept_but_not_for_semicolon_files(tmp_path):
    """``16.484`` alone in a comma file is 16.484 (every instrument's default); in a
    semicolon file (a decimal-comma locale's re-save) it could be 16484, so it is refused."""
    outcome, rows = _process(_qpcr_csv(tmp_path, ["A1|P1|SRY|16.484|"], delimiter=","))
    assert outcome.status == "stored" and rows[0]["ct"] == 16.484
    outcome, _ = _process(_qpcr_csv(tmp_path, ["A1|P1|SRY|16.484|"], delimiter=";"))
    assert outcome.status == "quarantined" and "16484" in outcome.error


@pytest.mark.parametrize(
    "text, decimal, value",
    [("1,234", ".", 1234.0), ("1,234", ",", 1.234), ("1.234", ".", 1.234), ("1.234", ",", 1234.0),
     ("1.250,75", None, 1250.75), ("1,250.75", None, 1250.75), ("100.000.000", None, 1e8),
     ("1 250,5", None, 1250.5), ("1\u00a0250,5", None, 1250.5), ("1,00E+08", None, 1e8),
     ("0,021", None, 0.021), ("-3,5", None, -3.5), ("20413", None, 20413.0)],
)
def test_parse_number_with_convention(text, decimal, value):
    assert tabular.parse_number(text, decimal) == value


@pytest.mark.parametrize("text", ["1,234", "1.234", "-3.383"])
def test_parse_number_refuses_ambiguous_without_convention(text):
    with pytest.raises(tabular.AmbiguousNumberError):
        tabular.parse_number(text, None)
