"""Population and marker statistics (gating/statistics.py) against direct numpy formulas."""

from __future__ import annotations

import numpy as np
import pytest

from assays.records import Channel, FcsSample
from gating.engine import GateMembership
from gating.compensation import channel_major, compensate_array
from gating.statistics import grouped_populations, lymphocyte_base, marker_stats, population_stats, robust_cv, stat_channels


def _sample(events: np.ndarray) -> FcsSample:
    chans = [Channel(0, "FSC-A", None), Channel(1, "FITC-A", "CD4"), Channel(2, "Time", None)]
    return FcsSample("S", "s.fcs", "0" * 64, "FCS3.1", chans, events, {}, None, None, None)


def test_robust_cv_matches_normal_cv():
    x = np.random.default_rng(3).normal(1000.0, 100.0, 200_000)  # seeded: CV = 10 %
    assert robust_cv(x) == pytest.approx(10.0, rel=0.02)
    assert robust_cv(np.array([5.0])) is None


def test_population_and_marker_stats():
    rng = np.random.default_rng(4)
    ev = np.column_stack([rng.uniform(0, 100, 1000), rng.lognormal(5, 1, 1000), np.arange(1000.0)])
    lymph = ev[:, 0] > 20
    live = lymph & (ev[:, 0] < 90)
    cd4 = live & (ev[:, 1] > 150)
    ms = [
        GateMembership("Lymphocytes", ("Lymphocytes",), (), lymph),
        GateMembership("Live", ("Lymphocytes", "Live"), ("Lymphocytes",), live),
        GateMembership("CD4_pos", ("Lymphocytes", "Live", "CD4_pos"), ("Lymphocytes", "Live"), cd4),
    ]
    pops = {p.population: p for p in population_stats(ms, 1000, {"CD4_pos": "CD4+"})}
    assert pops["CD4+"].count == cd4.sum()
    assert pops["CD4+"].parent == "Live" and pops["CD4+"].path == "Lymphocytes/Live/CD4+"
    assert pops["CD4+"].pct_of_parent == pytest.approx(100 * cd4.sum() / live.sum())
    # % of lymphocytes uses the Live lymphocytes as base (DESIGN.md).
    assert pops["CD4+"].pct_of_lymphocytes == pytest.approx(100 * cd4.sum() / live.sum())
    assert pops["Lymphocytes"].pct_of_lymphocytes == pytest.approx(100.0)
    sample = _sample(ev)
    groups = grouped_populations(ms, 1000)
    by_channel = channel_major(sample, [c.index for c in stat_channels(sample)], order=groups.order)
    stats = marker_stats(ms, sample, by_channel, groups, {"CD4_pos": "CD4+"})
    s = next(x for x in stats if x.population == "CD4+" and x.marker == "CD4")
    v = ev[cd4, 1]
    assert s.median == pytest.approx(np.median(v))
    assert s.mean == pytest.approx(v.mean())
    assert s.robust_cv == pytest.approx(robust_cv(v))
    assert not [x for x in stats if x.channel == "Time"]


def test_lymphocyte_base_levels():
    assert lymphocyte_base(("Lymphocytes", "Singlets", "Live", "CD3+")) == 2
    assert lymphocyte_base(("Live", "CD3+")) is None  # Live on all events is no lymphocyte base
    assert lymphocyte_base(("Lymphs", "CD3+")) == 0


def test_channel_major_matches_row_major_compensation():
    from assays.records import Spillover

    rng = np.random.default_rng(5)
    ev = np.column_stack([rng.uniform(0, 100, 500), rng.lognormal(5, 1, 500), rng.lognormal(4, 1, 500),
                          np.arange(500.0)])
    chans = [Channel(0, "FSC-A", None), Channel(1, "FITC-A", "CD4"), Channel(2, "PE-A", "CD8"), Channel(3, "Time", None)]
    spill = Spillover(["FITC-A", "PE-A"], np.array([[1.0, 0.2], [0.05, 1.0]]), "$SPILLOVER")
    sample = FcsSample("S", "s.fcs", "0" * 64, "FCS3.1", chans, ev, {}, spill, None, None)
    cm = channel_major(sample, [0, 1, 2])
    rm = compensate_array(ev, sample.pnn, spill)
    assert np.allclose(cm, rm[:, :3].T, rtol=1e-12, atol=1e-9)
    order = np.random.default_rng(6).permutation(500)
    np.testing.assert_array_equal(channel_major(sample, [0, 1, 2], order=order), cm[:, order])
    # c @ S recovers the observed signal (the definition of compensation)
    assert np.allclose(rm[:, 1:3] @ spill.matrix, ev[:, 1:3])
