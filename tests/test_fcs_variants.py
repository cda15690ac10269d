"""FCS files as other instruments and labs write them (assays.fcs.read_fcs).

Every file here is written byte by byte (HEADER, TEXT, DATA), so each test knows
exactly what the file says. A readable variant must give flowio's own events bit
for bit (flowkit's ``get_events(source='raw')`` is flowio's ``as_array``); a file
flowio would read wrongly or not at all must be quarantined with an InputError that
names what was expected and what was found.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from note_checks import assert_lab_first
from assays.errors import InputError
from assays.fcs import read_fcs, sniff

N_EVENTS = 400
NAMES = ["FSC-A", "SSC-A", "FL1-A", "FL2-A", "Time"]
GAIN_TIME = [("$TIMESTEP", "0.01"), ("$P3G", "2.0")]


def _keywords(datatype: str, byteord: str, bits, ranges, extra=(), pns: bool = True) -> list[tuple[str, str]]:
    """Required keywords for NAMES; ``extra`` replaces (value None removes) or appends."""
    kw = [("$BYTEORD", byteord), ("$DATATYPE", datatype), ("$MODE", "L"), ("$NEXTDATA", "0"),
          ("$PAR", str(len(NAMES))), ("$TOT", str(N_EVENTS))]
    for i, name in enumerate(NAMES, 1):
        b = bits[i - 1] if isinstance(bits, list) else bits
        r = ranges[i - 1] if isinstance(ranges, list) else ranges
        kw += [(f"$P{i}N", name), (f"$P{i}B", str(b)), (f"$P{i}E", "0,0"), (f"$P{i}R", str(r))]
        if pns:
            kw.append((f"$P{i}S", f"marker {i}"))
    for key, value in extra:
        if any(k == key for k, _ in kw):
            kw = [(k, value if k == key else v) for k, v in kw if not (k == key and value is None)]
        elif value is not None:
            kw.append((key, value))
    return kw


def _fcs_bytes(kw, data: bytes, version: str = "FCS3.1", delim: str = "/", header_data: bool = True,
               text_end_shift: int = 0, gap: int = 0, lower_keys: bool = False,
               omit: tuple[str, ...] = ()) -> tuple[bytes, int]:
    """(HEADER + TEXT bytes, DATA start offset); DATA goes ``gap`` bytes after TEXT.

    $BEGINDATA/$ENDDATA (unless in ``omit``) get fixed-width true offsets; delimiters
    inside keys and values are doubled (FCS 3.1, 3.2.7). ``header_data=False`` writes
    the HEADER DATA offsets as 0.
    """
    offsets = [(k, "0") for k in ("$BEGINDATA", "$ENDDATA") if k not in omit]
    kw = list(kw) + (offsets if version != "FCS2.0" else [])

    def text(d0: int, d1: int) -> bytes:
        parts = []
        for k, v in kw:
            v = {"$BEGINDATA": f"{d0:012d}", "$ENDDATA": f"{d1:012d}"}.get(k, v)
            k = k.lower() if lower_keys else k
            parts.append(k.replace(delim, delim * 2) + delim + v.replace(delim, delim * 2))
        return (delim + delim.join(parts) + delim).encode("latin-1")

    t1 = 58 + len(text(0, 0)) - 1
    d0 = t1 + 1 + gap
    d1 = d0 + len(data) - 1
    hd = (d0, d1) if header_data else (0, 0)
    head = version.encode() + b"    " + b"".join(str(v).rjust(8).encode() for v in (58, t1 + text_end_shift, *hd, 0, 0))
    return head + text(d0, d1), d0


def _write(path: Path, kw, data: bytes, tail: bytes = b"", gap: int = 0, **opts) -> Path:
    head, _ = _fcs_bytes(kw, data, gap=gap, **opts)
    path.write_bytes(head + b"\0" * gap + data + tail)
    return path


def _flowio_events(path: Path, **options) -> np.ndarray:
    import flowio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return flowio.FlowData(str(path), ignore_offset_error=True, **options).as_array(preprocess=True)


def _same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def _quarantined(path: Path) -> str:
    with pytest.raises(InputError) as err:
        read_fcs(path)
    msg = str(err.value)
    assert_lab_first(msg)
    return msg


@pytest.fixture(scope="module")
def floats() -> np.ndarray:
    rng = np.random.default_rng(21)
    ev = rng.normal(800, 300, size=(N_EVENTS, len(NAMES)))
    ev[:, 4] = np.arange(N_EVENTS)
    return ev


def _float_file(path: Path, ev: np.ndarray, dtype: str, version: str = "FCS3.1", extra=GAIN_TIME, **opts) -> Path:
    dt_ = np.dtype(dtype)
    byteord = "1,2,3,4" if dt_.byteorder in "<=" else "4,3,2,1"
    kw = _keywords({4: "F", 8: "D"}[dt_.itemsize], byteord, dt_.itemsize * 8, 262144, extra)
    return _write(path, kw, ev.astype(dtype).tobytes(), version=version, **opts)


def _int_file(path: Path, raw: np.ndarray, bits: list[int], ranges, big: bool, extra=GAIN_TIME,
              version: str = "FCS3.1", byteord: str | None = None) -> Path:
    """Integer DATA, one width per channel (packed records, as FCS stores mixed $PnB)."""
    order = ">" if big else "<"
    rec = np.zeros(len(raw), dtype=[(f"c{i}", f"{order}u{b // 8}") for i, b in enumerate(bits)])
    for i in range(len(bits)):
        rec[f"c{i}"] = raw[:, i]
    if byteord is None:
        byteord = {8: "1,2,3,4", 16: "1,2", 32: "1,2,3,4"}[max(bits)]
        byteord = ",".join(reversed(byteord.split(","))) if big else byteord
    return _write(path, _keywords("I", byteord, bits, ranges, extra), rec.tobytes(), version=version)


# --- readable variants: events bit for bit flowio's --------------------------------------


@pytest.mark.parametrize("version", ["FCS2.0", "FCS3.0", "FCS3.1"])
@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8", ">f8"])
def test_float_and_double_both_byte_orders_all_versions(tmp_path, floats, version, dtype):
    path = _float_file(tmp_path / "f.fcs", floats, dtype, version)
    s = read_fcs(path)
    assert _same_bits(s.events, _flowio_events(path))
    assert s.events[1, 4] == pytest.approx(0.01)  # $TIMESTEP applied to Time
    assert s.events[0, 2] == pytest.approx(np.float64(np.asarray(floats[0, 2], dtype=dtype)) / 2)  # $P3G
    assert s.version == version and s.keywords["$DATATYPE"] in ("F", "D")


INT_CASES = {
    # name: (bits per channel, $PnR per channel)
    "int16_range_pow2": ([16] * 5, 65536),
    "int16_range_1024": ([16] * 5, 1024),
    "int16_range_not_pow2": ([16] * 5, 1000),  # masked to 1023 (FCS 3.1: next power of two)
    "int32_range_262144": ([32] * 5, 262144),
    "int32_range_not_pow2": ([32] * 5, 1_000_000),
    "int8_range_100": ([8] * 5, 100),
    "mixed_16_32": ([16, 16, 32, 16, 16], [1024, 65536, 262144, 1000, 1024]),
    "mixed_8_16": ([8, 16, 8, 16, 8], [256, 1024, 200, 1024, 256]),
}


@pytest.mark.parametrize("big", [False, True], ids=["little", "big"])
@pytest.mark.parametrize("case", sorted(INT_CASES))
def test_integer_widths_ranges_and_masking(tmp_path, case, big):
    """Raw values use every bit of $PnB, so the $PnR bit mask really matters."""
    bits, ranges = INT_CASES[case]
    rng = np.random.default_rng(len(case))
    raw = np.stack([rng.integers(0, 2**b, size=N_EVENTS, dtype=np.uint64) for b in bits], axis=1)
    path = _int_file(tmp_path / f"{case}.fcs", raw, bits, ranges, big)
    got = read_fcs(path).events
    assert _same_bits(got, _flowio_events(path))
    limits = [2 ** (int(r) - 1).bit_length() for r in (ranges if isinstance(ranges, list) else [ranges] * 5)]
    assert (got[:, [0, 1, 3]] < np.array(limits)[[0, 1, 3]]).all()  # masked (no gain on these)
    assert np.array_equal(got[:, 0], (raw[:, 0] & (limits[0] - 1)).astype(np.float64))


def test_one_byte_integers_accept_a_one_byte_byteord(tmp_path):
    raw = np.random.default_rng(2).integers(0, 256, size=(N_EVENTS, 5))
    path = _int_file(tmp_path / "int8.fcs", raw, [8] * 5, 256, big=False, byteord="1")
    assert _same_bits(read_fcs(path).events, _flowio_events(path))


@pytest.mark.parametrize("version", ["FCS2.0", "FCS3.1"])
def test_log_amplified_integer_data(tmp_path, version):
    raw = np.random.default_rng(3).integers(0, 1024, size=(N_EVENTS, 5))
    extra = GAIN_TIME + [("$P2E", "4,1"), ("$P4E", "4,0")]  # "4,0": flowio uses 1.0 for the 0 offset
    path = _int_file(tmp_path / "log.fcs", raw, [16] * 5, 1024, big=True, extra=extra, version=version)
    got = read_fcs(path).events
    assert _same_bits(got, _flowio_events(path))
    assert np.allclose(got[:, 1], 10 ** (4 * raw[:, 1] / 1024))


@pytest.mark.parametrize("delim", ["/", "|", "\x0c", "*", "\\", "\x1e", ","])
def test_text_delimiters_and_escaped_delimiters(tmp_path, floats, delim):
    extra = GAIN_TIME + [("$P3S", f"CD3{delim}CD28"), ("$CYT", f"Lab{delim}{delim}2"), ("SAMPLE ID", "S-1")]
    path = _float_file(tmp_path / "d.fcs", floats, ">f4", extra=extra, delim=delim)
    s = read_fcs(path)
    assert _same_bits(s.events, _flowio_events(path))
    assert s.keywords["$P3S"] == f"CD3{delim}CD28"
    assert s.keywords["$CYT"] == f"Lab{delim}{delim}2"
    assert s.sample_id == "S-1"


def test_lower_case_keyword_names(tmp_path, floats):
    path = _float_file(tmp_path / "lower.fcs", floats, "<f8", lower_keys=True,
                       extra=GAIN_TIME + [("$DATATYPE", "d"), ("$MODE", "l"), ("$spillover", "2,FL1-A,FL2-A,1,0.1,0.02,1")])
    s = read_fcs(path)
    assert _same_bits(s.events, _flowio_events(path))
    assert s.keywords["$P1N"] == "FSC-A" and s.keywords["$TIMESTEP"] == "0.01"
    assert s.spillover is not None and s.spillover.detectors == ["FL1-A", "FL2-A"]


def test_whitespace_padded_numeric_values(tmp_path, floats):
    extra = GAIN_TIME + [("$PAR", " 5"), ("$TOT", f"{N_EVENTS} "), ("$P3R", " 262144 "), ("$P3E", " 0,0"),
                         ("$P3G", " 2.0 "), ("$TIMESTEP", " 0.01 "), ("$P1N", "FSC-A "), ("$MODE", " L")]
    path = _float_file(tmp_path / "ws.fcs", floats, ">f4", extra=extra)
    s = read_fcs(path)
    assert _same_bits(s.events, _flowio_events(path))
    assert s.keywords["$P3G"] == "2.0" and s.keywords["$TOT"] == str(N_EVENTS)


@pytest.mark.parametrize("key", ["$SPILLOVER", "$SPILL", "SPILL", "SPILLOVER"])
def test_spillover_keyword_spellings(tmp_path, floats, key):
    path = _float_file(tmp_path / "sp.fcs", floats, "<f4", extra=GAIN_TIME + [(key, "2,FL1-A,FL2-A,1,0.1,0.02,1")])
    s = read_fcs(path)
    assert s.spillover is not None and s.spillover.source == key
    assert s.spillover.matrix[0, 1] == pytest.approx(0.1)


def test_missing_pns_falls_back_to_pnn(tmp_path, floats):
    kw = _keywords("F", "1,2,3,4", 32, 262144, GAIN_TIME, pns=False)
    path = _write(tmp_path / "nopns.fcs", kw, floats.astype("<f4").tobytes())
    s = read_fcs(path)
    assert [c.pns for c in s.channels] == [None] * 5
    assert [c.pnn for c in s.channels] == NAMES
    assert _same_bits(s.events, _flowio_events(path))


@pytest.mark.parametrize("tail", [b"", b"00000000", b"\0" * 64 + b"trailing junk"], ids=["no_crc", "crc_zeros", "trailing"])
def test_crc_and_trailing_bytes_after_data(tmp_path, floats, tail):
    path = _float_file(tmp_path / "tail.fcs", floats, ">f4", tail=tail)
    assert _same_bits(read_fcs(path).events, _flowio_events(path))


def test_header_data_offsets_zero_small_file(tmp_path, floats):
    """HEADER zeros mean "see $BEGINDATA/$ENDDATA" (FCS 3.1, 3.1); flowio's default
    check refuses them below 99,999,999 bytes, its ignore_offset_discrepancy reads them."""
    path = _float_file(tmp_path / "hz.fcs", floats, ">f4", header_data=False)
    assert _same_bits(read_fcs(path).events, _flowio_events(path, ignore_offset_discrepancy=True))


def test_data_past_99999999_bytes_offsets_only_in_text(tmp_path, floats):
    """A real >100 MB layout, written sparse: DATA starts past 99,999,999, HEADER has zeros."""
    kw = _keywords("F", "4,3,2,1", 32, 262144, GAIN_TIME)
    data = floats.astype(">f4").tobytes()
    text_len = len(_fcs_bytes(kw, data)[0])
    head, d0 = _fcs_bytes(kw, data, header_data=False, gap=100_000_000 - text_len)
    path = tmp_path / "big.fcs"
    with open(path, "wb") as fh:
        fh.write(head)
        fh.seek(d0)  # a hole: the file system stores no 100 MB of zeros
        fh.write(data)
    assert d0 > 99_999_999 and path.stat().st_size == d0 + len(data)
    s = read_fcs(path, source_sha256="0" * 64)
    assert _same_bits(s.events, _flowio_events(path))


# --- broken or misleading files: quarantined, naming what is wrong ------------------------


def test_tot_disagreeing_with_data_length(tmp_path, floats):
    for tot, truncated in ((N_EVENTS + 1, True), (N_EVENTS * 2, True), (N_EVENTS - 1, False)):
        path = _float_file(tmp_path / f"tot{tot}.fcs", floats, ">f4", extra=GAIN_TIME + [("$TOT", str(tot))])
        msg = _quarantined(path)
        assert f"$TOT x bytes per event = {tot} x 20" in msg and f"found {N_EVENTS * 20} bytes" in msg
        assert ("truncated" in msg) == truncated


def test_truncated_copies(tmp_path, floats):
    raw = _float_file(tmp_path / "whole.fcs", floats, "<f8").read_bytes()
    for cut in (1, 8, 3000):
        path = tmp_path / f"cut{cut}.fcs"
        path.write_bytes(raw[:-cut])
        msg = _quarantined(path)
        assert "truncated" in msg and path.name in msg


@pytest.mark.parametrize("byteord", ["8,7,6,5,4,3,2,1", "3,4,1,2", "4, 3, 2, 1"])
def test_byte_orders_flowio_would_read_natively_are_refused(tmp_path, floats, byteord):
    """flowio reads an unknown $BYTEORD in native order with only a warning: wrong events."""
    path = _float_file(tmp_path / "bo.fcs", floats, ">f8", extra=GAIN_TIME + [("$BYTEORD", byteord)])
    msg = _quarantined(path)
    assert "Expected $BYTEORD 1,2,3,4 or 4,3,2,1" in msg and repr(byteord) in msg


@pytest.mark.parametrize("key, value, expected, found", [
    ("$BYTEORD", " 4,3,2,1", "same keywords", "' 4,3,2,1'"),  # flowio: native order, silently
    ("$DATATYPE", "F ", "same keywords", "'F '"),
    ("$P5N", " Time ", "same keywords", "' Time '"),  # flowio would skip $TIMESTEP
])
def test_padding_that_changes_flowios_reading(tmp_path, floats, key, value, expected, found):
    path = _float_file(tmp_path / "pad.fcs", floats, ">f4", extra=GAIN_TIME + [(key, value)])
    msg = _quarantined(path)
    assert expected in msg and key in msg and found in msg


@pytest.mark.parametrize("shift", [-1], ids=["text_end_before_final_delimiter"])
def test_text_not_closed_by_its_delimiter(tmp_path, floats, shift):
    """flowio drops the TEXT's last character ($ENDDATA 6432 -> 643) without an error."""
    path = _float_file(tmp_path / "open.fcs", floats, ">f4", text_end_shift=shift)
    msg = _quarantined(path)
    assert "$ENDDATA read as" in msg and "not ending with its delimiter" in msg


@pytest.mark.parametrize("value", ["CD3/", "/CD3"], ids=["at_end", "at_start"])
def test_escaped_delimiter_next_to_a_separator(tmp_path, floats, value):
    path = _float_file(tmp_path / "esc.fcs", floats, ">f4", extra=GAIN_TIME + [("$P3S", value)])
    msg = _quarantined(path)
    assert "TEXT segment flowkit splits into the same keywords" in msg


@pytest.mark.parametrize("delim", ["+", "?", ".", "^"])
def test_delimiters_flowio_cannot_split_on(tmp_path, floats, delim):
    path = _float_file(tmp_path / "dl.fcs", floats, ">f4", delim=delim)
    msg = _quarantined(path)
    assert "TEXT" in msg and ("delimiter" in msg or "read as None by flowkit" in msg)


def test_padded_keyword_name(tmp_path, floats):
    kw = [(" $P2N " if k == "$P2N" else k, v) for k, v in _keywords("F", "4,3,2,1", 32, 262144, GAIN_TIME)]
    path = _write(tmp_path / "padkey.fcs", kw, floats.astype(">f4").tobytes())
    msg = _quarantined(path)
    assert "$P2N read as None by flowkit but 'SSC-A'" in msg


def test_empty_keyword_value(tmp_path, floats):
    path = _float_file(tmp_path / "empty.fcs", floats, ">f4", extra=GAIN_TIME + [("$P2S", "")])
    msg = _quarantined(path)
    assert "not empty" in msg and "'$P2S' followed by '$P3N'" in msg


@pytest.mark.parametrize("key, value, expected", [
    ("$MODE", "C", "list-mode data ($MODE L)"),
    ("$MODE", None, "no $MODE keyword"),
    ("$DATATYPE", "A", "$DATATYPE A"),
    ("$DATATYPE", "Z", "$DATATYPE F, D or I"),
    ("$P2R", None, "$P2R (range of SSC-A) as a number"),
    ("$P2E", "4", "$P2E (amplification of SSC-A)"),
    ("$P2G", "high", "$P2G (gain of SSC-A) as a number"),
    ("$TIMESTEP", "abc", "$TIMESTEP as a number"),
    ("$NEXTDATA", "x", "$NEXTDATA as a byte offset"),
    ("$ENDDATA", None, "$BEGINDATA and $ENDDATA"),
])
def test_keywords_flowio_needs_are_checked_by_name(tmp_path, floats, key, value, expected):
    omit = (key,) if key == "$ENDDATA" else ()
    kw = _keywords("F", "4,3,2,1", 32, 262144, GAIN_TIME + ([] if omit else [(key, value)]))
    path = _write(tmp_path / "k.fcs", kw, floats.astype(">f4").tobytes(), omit=omit)
    msg = _quarantined(path)
    assert expected in msg


def test_integer_range_wider_than_its_bits(tmp_path):
    """flowio fails (OverflowError) when one 16-bit channel is masked and another
    declares $PnR beyond 2^16; the message names the channel."""
    raw = np.random.default_rng(4).integers(0, 1024, size=(N_EVENTS, 5))
    path = _int_file(tmp_path / "range.fcs", raw, [16] * 5, [1024, 262144, 1024, 1024, 1024], big=False)
    msg = _quarantined(path)
    assert "$P2R (range of SSC-A) at most 2^16 = 65536" in msg and "262144" in msg


def test_floats_labelled_integer_are_refused(tmp_path, floats):
    """The known gap: float32 DATA labelled $DATATYPE I. flowio masks it into small
    plausible integers; the raw words viewed as float32 give it away."""
    for ranges, big in ((1024, True), (262144, False), (2**32, False)):
        kw = _keywords("I", "4,3,2,1" if big else "1,2,3,4", 32, ranges, GAIN_TIME)
        path = _write(tmp_path / f"fi{ranges}.fcs", kw, floats.astype(">f4" if big else "<f4").tobytes())
        msg = _quarantined(path)
        assert "$DATATYPE I (integer) values" in msg and "floats labelled $DATATYPE I" in msg


def test_random_32bit_integers_are_not_mistaken_for_floats(tmp_path):
    raw = np.random.default_rng(5).integers(0, 2**32, size=(N_EVENTS, 5), dtype=np.uint64)
    path = _int_file(tmp_path / "rand32.fcs", raw, [32] * 5, 1000, big=True)
    assert _same_bits(read_fcs(path).events, _flowio_events(path))


def test_integers_labelled_float_are_refused(tmp_path):
    raw = np.random.default_rng(6).integers(1, 262144, size=(N_EVENTS, 5)).astype("<u4")
    kw = _keywords("F", "1,2,3,4", 32, 262144, GAIN_TIME)
    msg = _quarantined(_write(tmp_path / "if.fcs", kw, raw.tobytes()))
    assert "subnormal" in msg and "integers labelled as floating point" in msg


# --- real files from other instruments -------------------------------------------------


@pytest.mark.reference
def test_every_reference_fcs_file_reads_like_flowio_or_is_quarantined(shared_data):
    import flowio
    from flowio.exceptions import MultipleDataSetsError

    files = [p for p in sorted((shared_data / "fcs").rglob("*")) if p.is_file() and sniff(p.open("rb").read(6))]
    assert len(files) >= 9
    read = 0
    for path in files:
        try:
            got = read_fcs(path).events
        except InputError as err:
            assert "noncompliant" in path.parts, f"{path.name}: {err}"
            assert "HEADER" in str(err) and "TEXT" in str(err)
            with pytest.raises(Exception):
                flowio.FlowData(str(path))
            continue
        try:
            want = _flowio_events(path)
        except MultipleDataSetsError:
            want = _flowio_events(path, nextdata_offset=0)
        assert _same_bits(got, want), path.name
        read += 1
    assert read == len(files) - 2
