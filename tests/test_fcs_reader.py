"""FCS validation and metadata rules (DESIGN.md, Flow cytometry; Contract, Input files).

Broken files are made from a simulated tube (assays.simulators.tcell, seed 11) by
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
from assays.simulators.tcell import simulate_tube


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
