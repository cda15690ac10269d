"""The T-cell tube simulator writes valid FCS 3.1 files whose truth matches their labels."""

from __future__ import annotations

import numpy as np
import pytest

from assays.fcs import read_fcs
from simulators.tcell import DETECTORS, LABEL_VARIANTS, TubeTruth, random_truth, simulate_tube


def test_writes_readable_fcs_with_keywords(tmp_path):
    path = tmp_path / "t.fcs"
    truth = simulate_tube(path, seed=3, n_events=20_000, sample_id="P01-D030", label_variant=1)
    sample = read_fcs(path)
    assert sample.version == "FCS3.1"
    assert sample.sample_id == "P01-D030"
    assert sample.events.shape == (20_000, 4 + 9)
    assert sample.pnn[:4] == ["FSC-A", "FSC-H", "SSC-A", "Time"]
    assert sample.spillover is not None and set(sample.spillover.detectors) <= set(sample.pnn)
    labels = {c.pnn: c.pns for c in sample.channels}
    assert labels[DETECTORS["CD3"]] == LABEL_VARIANTS["CD3"][1]
    assert labels[DETECTORS["IFN-γ"]] == LABEL_VARIANTS["IFN-γ"][1]
    for key in ("$DATE", "$BTIM", "$ETIM", "$CYT", "$SPILLOVER"):
        assert key in sample.keywords
    assert isinstance(truth, TubeTruth)
    assert truth.n_events == 20_000


def test_truth_is_consistent_and_seeded(tmp_path):
    a = simulate_tube(tmp_path / "a.fcs", seed=11)
    b = simulate_tube(tmp_path / "b.fcs", seed=11)
    assert a == b
    assert (tmp_path / "a.fcs").read_bytes() == (tmp_path / "b.fcs").read_bytes()
    assert a.cd4_pct_lymph + a.cd8_pct_lymph < a.cd3_pct_lymph
    assert a.cd4_cd8_ratio == pytest.approx(a.n_cd4 / a.n_cd8)
    assert a.th1_pct_cd4 == pytest.approx(100 * a.counts["th1"] / a.n_cd4)
    assert a.counts["th0"] > 0  # the rare double producers exist
    assert 0.8 <= min(a.drift.values()) and max(a.drift.values()) <= 1.25


def test_control_tube_shares_truth_and_has_no_producers(tmp_path):
    stim = simulate_tube(tmp_path / "s.fcs", seed=5)
    ctrl = simulate_tube(tmp_path / "c.fcs", seed=6, truth=stim, control=True)
    assert ctrl.drift == stim.drift
    assert ctrl.th1_pct_cd4 == ctrl.th2_pct_cd4 == ctrl.th0_pct_cd4 == ctrl.th17_pct_cd4 == 0
    assert ctrl.treg_pct_cd4 == pytest.approx(stim.treg_pct_cd4, abs=2.0)
    assert abs(ctrl.cd3_pct_lymph - stim.cd3_pct_lymph) < 3


def test_omitted_markers_and_foxp3(tmp_path):
    truth = simulate_tube(tmp_path / "o.fcs", seed=8, omit=("IL-17A", "CD25"), foxp3=True)
    sample = read_fcs(tmp_path / "o.fcs")
    assert DETECTORS["IL-17A"] not in sample.pnn and DETECTORS["FOXP3"] in sample.pnn
    assert truth.th17_pct_cd4 is None
    assert truth.treg_pct_cd4 is not None  # FOXP3 stands in for CD25/CD127


def test_random_truth_is_plausible():
    rng = np.random.default_rng(0)
    for _ in range(50):
        t = random_truth(rng)
        assert 40 <= t.cd3_pct_lymph <= 85
        assert t.cd4_pct_lymph + t.cd8_pct_lymph < t.cd3_pct_lymph
        assert 0.5 <= t.th0_pct_cd4 <= 1.5
