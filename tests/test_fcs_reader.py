"""FCS validation and metadata rules (DESIGN.md, Flow cytometry; Contract, Input files).

Broken files are made from a simulated tube (simulators.tcell, seed 11) by
cutting or editing its bytes, so each test knows exactly what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from assays.errors import InputError
from assays.fcs import parse_spillover, read_fcs, sample_id_from, validate_structure
from assays.markers import match_markers, normalize_marker
from assays.records import Channel
from simulators.tcell import simulate_tube
from note_checks import assert_lab_first


@pytest.fixture(scope="module")
def tube(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fcs") / "tube.fcs"
    simulate_tube(path, seed=11, n_events=5000, sample_id="HP01-D030")
    return path


def test_reads_simulated_tube(tube):
    s = read_fcs(tube)
    assert s.sample_id == "HP01-D030"
    assert s.events.shape[0] == 5000
    assert s.events.dtype == np.float64
    assert s.spillover is not None and s.spillover.matrix.shape[0] == len(s.spillover.detectors)
    assert s.version == "FCS3.1"
    assert len(s.source_sha256) == 64


def test_truncated_file_is_an_input_error(tube, tmp_path):
    cut = tmp_path / "cut.fcs"
    data = tube.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        read_fcs(cut)
    assert "truncated" in str(err.value)
    assert "What to do" in str(err.value)


def test_tot_mismatch_is_reported(tube, tmp_path):
    data = bytearray(tube.read_bytes())
    m = re.search(rb"\$TOT(.)(\d+)", data)
    assert m
    new = str(int(m.group(2)) + 7).encode()
    bad = tmp_path / "tot.fcs"
    # Same length replacement keeps every offset valid: only $TOT lies.
    bad.write_bytes(bytes(data[: m.start(2)]) + new[-len(m.group(2)):] + bytes(data[m.end(2):]))
    with pytest.raises(InputError) as err:
        validate_structure(bad)
    assert "$TOT" in str(err.value)


def test_empty_and_text_files(tmp_path):
    empty = tmp_path / "empty.fcs"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_fcs(empty)
    text = tmp_path / "notes.fcs"
    text.write_text("this is not a cytometry file\n" * 10)
    with pytest.raises(InputError, match="FCS2.0, FCS3.0 or FCS3.1"):
        read_fcs(text)


@pytest.mark.reference
def test_noncompliant_offsets_are_refused(shared_data):
    for f in sorted((shared_data / "fcs/flowkit/noncompliant").glob("*.fcs")):
        with pytest.raises(InputError) as err:
            read_fcs(f)
        assert "HEADER" in str(err.value) and "TEXT" in str(err.value)


@pytest.mark.reference
def test_real_files_read(shared_data):
    s = read_fcs(shared_data / "fcs/flowkit/100715.fcs")
    assert s.events.shape == (65016, 16)
    assert s.spillover is not None
    lmd = read_fcs(shared_data / "fcs/flowkit/multi_dataset_fcs/coulter.lmd")
    assert lmd.n_datasets >= 2 and lmd.events.shape[0] > 0


def test_sample_id_rules():
    assert sample_id_from({"SAMPLE ID": "A1", "$SMNO": "B"}, "x.fcs") == "A1"
    assert sample_id_from({"$SMNO": "B"}, "x.fcs") == "B"
    assert sample_id_from({}, "HP01-D030.fcs") == "HP01-D030"


def test_spillover_parsing():
    sp = parse_spillover("2,FITC-A,PE-A,1,0.2,0.02,1", "$SPILLOVER")
    assert sp.detectors == ["FITC-A", "PE-A"]
    assert sp.matrix[0, 1] == pytest.approx(0.2)
    with pytest.raises(InputError):
        parse_spillover("3,A,B", "$SPILLOVER")


def test_marker_matching_is_case_punctuation_and_greek_blind():
    assert len({normalize_marker(x) for x in ("IFN-γ", "IFNg", "IFN-gamma", "IFNG", "ifn gamma")}) == 1
    chans = [Channel(0, "FSC-A", None), Channel(1, "BUV395-A", "CD3 BUV395"), Channel(2, "BV605-A", "cd-4"),
             Channel(3, "FITC-A", "hIFN-γ"), Channel(4, "BV510-A", "CD45RO")]
    found = match_markers(chans, {"CD3": [], "CD4": [], "IFN-γ": ["hIFNg"], "CD45": []})
    assert found["CD3"].pnn == "BUV395-A"
    assert found["CD4"].pnn == "BV605-A"
    assert found["IFN-γ"].pnn == "FITC-A"
    assert "CD45" not in found  # CD45RO is not CD45
    with pytest.raises(InputError) as err:
        match_markers(chans, {"CD8": []}, required=("CD8",))
    assert "CD8" in str(err.value) and "BV605-A" in str(err.value)


def test_marker_matching_splits_fluorochromes_joined_by_hyphens_and_dots():
    """Spellings seen in other labs' $PnS: marker and fluorochrome joined by a hyphen or a
    dot, an "anti-" prefix; hyphenated marker names (IL-17A, IFN-γ) still match whole, and
    CD45RA is still not CD4."""
    chans = [Channel(0, "FSC-A", None), Channel(1, "FITC-A", "CD3-FITC"), Channel(2, "PE-A", "anti-CD4.PE"),
             Channel(3, "APC-A", "CD8-APC-H7"), Channel(4, "BV421-A", "IL-17A-BV421"),
             Channel(5, "PE-Cy7-A", "IFN-gamma PE-Cy7"), Channel(6, "BV510-A", "CD45RA-BV510")]
    found = match_markers(chans, {"CD3": [], "CD4": [], "CD8": [], "IL-17A": ["IL17A"], "IFN-γ": [], "CD45": []})
    assert {m: c.pnn for m, c in found.items()} == {"CD3": "FITC-A", "CD4": "PE-A", "CD8": "APC-A",
                                                    "IL-17A": "BV421-A", "IFN-γ": "PE-Cy7-A"}


def test_panel_aliases_cover_ifn_y_for_gamma():
    """Keyboards without γ write IFN-y: the built-in panel's IFN-γ aliases include it."""
    from gating.panel import load_panel

    panel = load_panel()
    chans = [Channel(0, "FSC-A", None), Channel(1, "PE-Cy7-A", "IFN-y PE-Cy7"), Channel(2, "BV421-A", "IL-4")]
    found = match_markers(chans, {"IFN-γ": panel.aliases["IFN-γ"]})
    assert found["IFN-γ"].pnn == "PE-Cy7-A"


# --- Fast float DATA path (assays.fcs_flowio.load_float_events) ------------------------------
# read_fcs reads float/double DATA with numpy and hands it to flowio's as_array; these
# tests pin that the events stay bit for bit what flowio alone returns, that the fast
# path is really taken, and that broken float files are still quarantined.


def _flowio_events(path: Path) -> np.ndarray:
    """What flowio alone returns, with read_fcs's handling of multi-data-set files."""
    import warnings

    import flowio
    from flowio.exceptions import MultipleDataSetsError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return flowio.FlowData(str(path), ignore_offset_error=True).as_array(preprocess=True)
        except MultipleDataSetsError:
            return flowio.FlowData(str(path), ignore_offset_error=True, nextdata_offset=0).as_array(preprocess=True)


def _assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want, equal_nan=True)
    assert got.tobytes() == want.tobytes()  # bit identical, NaN payloads and -0.0 included


def _write_fcs(path: Path, events: np.ndarray, dtype: str, names: list[str], version: str = "FCS3.1",
               extra: dict[str, str] | None = None, pnb: int | None = None, end_past_by_one: bool = False) -> Path:
    """A minimal list-mode FCS file; ``dtype`` is a numpy dtype string such as '>f4'."""
    dt_ = np.dtype(dtype)
    kind = "I" if dt_.kind == "u" else {4: "F", 8: "D"}[dt_.itemsize]
    # FCS 3.1 knows only 1,2,3,4 and 4,3,2,1 (writers use them for doubles too); 2-byte for 16-bit ints.
    byteord = "1,2" if dt_.itemsize == 2 else "1,2,3,4"
    if dt_.byteorder == ">":
        byteord = ",".join(reversed(byteord.split(",")))
    data = np.ascontiguousarray(events, dtype=dt_).tobytes()
    n_par = events.shape[1]
    kw = {"$BYTEORD": byteord, "$DATATYPE": kind, "$MODE": "L", "$NEXTDATA": "0", "$PAR": str(n_par),
          "$TOT": str(events.shape[0]), "$BEGINANALYSIS": "0", "$ENDANALYSIS": "0",
          "$BEGINSTEXT": "0", "$ENDSTEXT": "0"}
    for i, name in enumerate(names, 1):
        kw.update({f"$P{i}N": name, f"$P{i}B": str(pnb or dt_.itemsize * 8), f"$P{i}E": "0,0", f"$P{i}R": "262144"})
    kw.update(extra or {})

    def text(d0: int, d1: int) -> bytes:
        body = dict(kw, **{"$BEGINDATA": f"{d0:010d}", "$ENDDATA": f"{d1:010d}"})
        return ("/" + "".join(f"{k}/{v}/" for k, v in body.items())).encode()

    t0 = 58
    t1 = t0 + len(text(0, 0)) - 1
    d0, d1 = t1 + 1, t1 + len(data) + (1 if end_past_by_one else 0)
    hd0, hd1 = (d0, d1) if d1 <= 99_999_999 else (0, 0)  # FCS 3.1: 0 in HEADER past 99,999,999
    head = version.encode() + b"    " + b"".join(str(v).rjust(8).encode() for v in (t0, t1, hd0, hd1, 0, 0))
    # A one-byte-too-far end needs a byte after DATA (validate_structure: DATA ends inside the file).
    path.write_bytes(head + text(d0, d1) + data + (b"\n" if end_past_by_one else b""))
    return path


def _float_variants(folder: Path) -> dict[str, Path]:
    """Float/double files covering byte order, width, $TIMESTEP, gain, log, 2.0 offsets."""
    import flowio

    rng = np.random.default_rng(7)
    ev = rng.normal(1000, 400, size=(2000, 4))
    ev[:, 3] = np.arange(2000) * 3.0  # Time
    names = ["FSC-A", "SSC-A", "FITC-A", "Time"]
    special = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.4e38, 0.0, -1.5], dtype=np.float32)
    odd = ev.copy()
    odd[:2] = special.reshape(2, 4)
    bits = rng.integers(0, 2**32, size=(50, 4), dtype=np.uint64).astype(np.uint32).view(np.float32)
    gain_time = {"$TIMESTEP": "0.01", "$P3G": "4.0", "$P4G": "2.5", "$P2G": "0.5"}
    out: dict[str, Path] = {}
    out["sim_tube"] = folder / "sim_tube.fcs"
    simulate_tube(out["sim_tube"], seed=3, n_events=4000)
    out["sim_tube_foxp3"] = folder / "sim_tube_foxp3.fcs"
    simulate_tube(out["sim_tube_foxp3"], seed=5, n_events=1500, foxp3=True)
    with open(folder / "flowio_created.fcs", "wb") as fh:
        flowio.create_fcs(fh, ev.astype(np.float32).ravel().tolist(), names,
                          metadata_dict={"timestep": "0.02", "p3g": "8.0", "p1g": "2.0"})
    out["flowio_created"] = folder / "flowio_created.fcs"
    specs = {
        "little_f4": ("<f4", ev, "FCS3.1", {}),
        "big_f4": (">f4", ev, "FCS3.1", {}),
        "little_f8": ("<f8", ev, "FCS3.1", {}),
        "big_f8": (">f8", ev, "FCS3.0", {}),
        "big_f4_timestep_gain": (">f4", ev, "FCS3.1", gain_time),
        "little_f8_timestep_gain": ("<f8", ev, "FCS3.1", gain_time),
        "fcs20_big_f4_timestep": (">f4", ev, "FCS2.0", gain_time),
        "log_pne_and_gain": ("<f4", np.abs(ev) % 1024, "FCS3.1", {"$P3E": "4,1", "$P3R": "1024", "$P2G": "3"}),
        "special_values_big": (">f4", odd, "FCS3.1", {"$TIMESTEP": "0.5"}),
        "special_values_little_f8": ("<f8", odd, "FCS3.1", {}),
        "random_bit_patterns": ("<f4", bits, "FCS3.1", {}),
        "random_bit_patterns_big": (">f4", bits.byteswap(), "FCS3.1", {}),
    }
    for key, (dtype, events, version, extra) in specs.items():
        out[key] = _write_fcs(folder / f"{key}.fcs", events, dtype, names, version, extra)
    out["end_offset_one_too_far"] = _write_fcs(folder / "end1.fcs", ev, "<f4", names, end_past_by_one=True)
    out["end_offset_one_too_far_big_f8"] = _write_fcs(folder / "end1b.fcs", ev, ">f8", names, "FCS2.0",
                                                      gain_time, end_past_by_one=True)
    return out


@pytest.fixture(scope="module")
def float_variants(tmp_path_factory) -> dict[str, Path]:
    return _float_variants(tmp_path_factory.mktemp("fcs_float"))


@pytest.fixture
def flowio_data_reads(monkeypatch) -> list[str]:
    """Names of files whose DATA segment flowio itself parsed (FlowData.__parse_data)."""
    import flowio.flowdata as fd

    calls: list[str] = []
    original = fd.FlowData._FlowData__parse_data

    def spy(self, *args, **kwargs):
        calls.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(fd.FlowData, "_FlowData__parse_data", spy)
    return calls


def test_float_events_bit_identical_to_flowio(float_variants):
    for key, path in float_variants.items():
        got = read_fcs(path).events
        try:
            _assert_same_bits(got, _flowio_events(path))
        except AssertionError as exc:
            raise AssertionError(f"{key}: events differ from flowio's as_array(preprocess=True)") from exc


def test_float_files_take_the_numpy_path(float_variants, flowio_data_reads):
    """Fails if the optimisation silently stops working: flowio must not parse float DATA."""
    for key, path in float_variants.items():
        read_fcs(path)
        assert flowio_data_reads == [], f"{key}: flowio parsed DATA itself (fast path not taken)"
    # The spy does see flowio's own reads (so the assertion above is not vacuous).
    _flowio_events(float_variants["big_f4"])
    assert flowio_data_reads == ["big_f4.fcs"]


def test_integer_and_unusual_float_files_stay_on_flowio(tmp_path, flowio_data_reads):
    rng = np.random.default_rng(9)
    names = ["FSC-A", "SSC-A", "Time"]
    ints = rng.integers(0, 1024, size=(500, 3))
    ev = rng.normal(100, 30, size=(500, 3))
    files = {
        "int16_big.fcs": _write_fcs(tmp_path / "int16_big.fcs", ints, ">u2", names,
                                    extra={"$P1R": "1024", "$P2R": "1024", "$P3R": "1024", "$P1E": "3,1",
                                           "$TIMESTEP": "0.1"}),
        "int32_little.fcs": _write_fcs(tmp_path / "int32_little.fcs", ints, "<u4", names, extra={"$P2G": "2"}),
        # An 8-byte $BYTEORD for doubles: flowio warns and reads in native order; keep its path.
        "f8_byteord8.fcs": _write_fcs(tmp_path / "f8_byteord8.fcs", ev, "<f8", names,
                                      extra={"$BYTEORD": "1,2,3,4,5,6,7,8"}),
    }
    for name, path in files.items():
        before = len(flowio_data_reads)
        got = read_fcs(path).events
        assert flowio_data_reads[before:] == [name]
        _assert_same_bits(got, _flowio_events(path))


@pytest.mark.reference
def test_reference_fcs_files_bit_identical_to_flowio(shared_data, flowio_data_reads):
    from assays.fcs import sniff

    files = [p for p in sorted((shared_data / "fcs").rglob("*")) if p.is_file() and sniff(p.open("rb").read(6))]
    assert files
    fast = 0
    for path in files:
        before = len(flowio_data_reads)
        try:
            got = read_fcs(path).events
        except InputError:
            # Refused files (offset discrepancies) are ones flowio refuses too.
            with pytest.raises(Exception):
                _flowio_events(path)
            continue
        took_fast_path = len(flowio_data_reads) == before  # flowio did not parse DATA for read_fcs
        want = _flowio_events(path)
        is_float = validate_structure(path)[1]["$DATATYPE"].upper() in ("F", "D")
        assert took_fast_path == is_float, path.relative_to(shared_data)
        fast += took_fast_path
        try:
            _assert_same_bits(got, want)
        except AssertionError as exc:
            raise AssertionError(f"{path.relative_to(shared_data)}: events differ from flowio") from exc
    assert fast >= 5  # 100715 (FCS2.0, big-endian, $TIMESTEP), index_sorted, test_comp, diamond, 2d


def test_truncated_float_data_is_quarantined(float_variants, tmp_path):
    for key in ("little_f4", "big_f8", "fcs20_big_f4_timestep"):
        raw = float_variants[key].read_bytes()
        for cut_bytes in (1, 5, 4000):
            cut = tmp_path / f"{key}_{cut_bytes}.fcs"
            cut.write_bytes(raw[:-cut_bytes])
            with pytest.raises(InputError) as err:
                read_fcs(cut)
            msg = str(err.value)
            assert_lab_first(msg)
            assert "truncated" in msg and cut.name in msg, msg


def test_float_loader_refuses_a_file_that_shrank(float_variants, tmp_path):
    """A file cut after flowio read its TEXT: no short array, flowio's path decides."""
    import flowio

    from assays.fcs_flowio import load_float_events

    path = tmp_path / "shrinking.fcs"
    path.write_bytes(float_variants["big_f4"].read_bytes())
    data = flowio.FlowData(str(path), only_text=True, ignore_offset_error=True)
    assert data.events is None
    path.write_bytes(path.read_bytes()[:-100])
    assert load_float_events(data, path) is False
    assert data.events is None
    data.file_size = path.stat().st_size + 100  # even when the size check is fooled, the read is checked
    assert load_float_events(data, path) is False and data.events is None
