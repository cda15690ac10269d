"""Population and marker statistics (gating/statistics.py) against direct numpy formulas."""

from __future__ import annotations

import numpy as np
import pytest

from assays.records import Channel, FcsSample
from gating.compiled_strategy import GateMembership
from gating.compensation import channel_major, compensate_array
from gating.roles import lymphocyte_base
from gating.statistics import grouped_populations, marker_stats, population_stats, robust_cv, stat_channels


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
    by_channel = channel_major(sample, [c.index for c in stat_channels(sample)])
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
    # FlowJo's default names and viability-dye negative gates (other labs' templates)
    assert lymphocyte_base(("Lymphocytes", "Single Cells", "Single Cells", "aAmine-", "CD3+")) == 3
    assert lymphocyte_base(("Lymphocytes", "FSC Singlets", "SSC Singlets", "CD3+")) == 2
    assert lymphocyte_base(("Lymphocytes", "Singlets", "Live/Dead neg", "CD3+")) == 2
    assert lymphocyte_base(("Lymphocytes", "Singlets", "Zombie NIR-", "CD3+")) == 2
    assert lymphocyte_base(("Lymphocytes", "Singlets", "Live/Dead+", "CD3+")) == 1  # dead cells are no base
    assert lymphocyte_base(("Lymphoblasts", "CD3+")) is None


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
    # c @ S recovers the observed signal (the definition of compensation)
    assert np.allclose(rm[:, 1:3] @ spill.matrix, ev[:, 1:3])


def test_marker_stats_use_the_gates_compensation(tmp_path):
    """A template with one compensation matrix: statistics are on the values the gates saw
    (as FlowJo reports them on the workspace's matrix), even when the file has no
    $SPILLOVER. Seeded data; the truth is numpy on x @ inv(S)."""
    import flowio

    from flows.inbox import InboxFile
    from flows.process import GatingSetup, process_file
    from gating.compiled_strategy import compile_strategy
    from gating.templates import load_template

    rng = np.random.default_rng(8)
    ev = np.column_stack([rng.uniform(0, 1000, 5000), rng.lognormal(6, 1, 5000), rng.lognormal(5, 1, 5000)])
    path = tmp_path / "t.fcs"
    with open(path, "wb") as fh:
        flowio.create_fcs(fh, ev.astype("float32").ravel(), channel_names=["FSC-A", "FL1-A", "FL2-A"],
                          metadata_dict={"SAMPLE ID": "COMP-1"})
    spill = np.array([[1.0, 0.3], [0.1, 1.0]])
    coeff = "".join("<transforms:spectrum>" + "".join(f'<transforms:coefficient transforms:value="{v}"/>' for v in row)
                    + "</transforms:spectrum>" for row in spill)
    dim = ('<gating:dimension gating:compensation-ref="Acq" gating:min="200">'
           '<data-type:fcs-dimension data-type:name="FL1-A"/></gating:dimension>')
    xml = tmp_path / "t.xml"
    xml.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating"
 xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
 xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">
<transforms:spectrumMatrix transforms:id="Acq">
<transforms:fluorochromes><data-type:fcs-dimension data-type:name="A"/><data-type:fcs-dimension data-type:name="B"/></transforms:fluorochromes>
<transforms:detectors><data-type:fcs-dimension data-type:name="FL1-A"/><data-type:fcs-dimension data-type:name="FL2-A"/></transforms:detectors>{coeff}
</transforms:spectrumMatrix>
<gating:RectangleGate gating:id="Pos">{dim}</gating:RectangleGate>
</gating:Gating-ML>""")
    template = load_template(xml)
    template.compiled = compile_strategy(template.strategy)
    out = process_file(InboxFile(path=path, name=path.name), GatingSetup(template=template), set())
    assert out.status == "stored", out.error
    raw = ev.astype("float32").astype(np.float64)
    comp = raw[:, 1:] @ np.linalg.inv(spill)
    inside = comp[:, 0] >= 200
    got = {r["channel"]: r for r in out.rows["flow_markers"] if r["population"] == "Pos"}
    assert got["FL2-A"]["median"] == pytest.approx(np.median(comp[inside, 1]), rel=1e-9)
    assert got["FL1-A"]["mean"] == pytest.approx(comp[inside, 0].mean(), rel=1e-9)
    assert got["FSC-A"]["median"] == pytest.approx(np.median(raw[inside, 0]), rel=1e-9)  # scatter: not compensated
    assert abs(got["FL2-A"]["median"] - np.median(raw[inside, 2])) > 1.0  # the raw value would differ


def test_chunked_solve_has_the_bits_of_one_solve():
    """Compensation solves 32k events at a time (memory); the result must be bit for bit
    np.linalg.solve's on the whole matrix (flowkit's expression). Seeded data, sizes that
    are not multiples of the chunk."""
    from threadpoolctl import threadpool_limits

    from gating.compensation import SOLVE_CHUNK, solve_by_chunks

    rng = np.random.default_rng(9)
    for n in (10, SOLVE_CHUNK, 3 * SOLVE_CHUNK + 17):
        k = 12
        spill = np.eye(k) + rng.uniform(0, 0.3, (k, k)) * (1 - np.eye(k))
        observed = rng.lognormal(5, 2, (n, 13))
        whole = np.linalg.solve(spill.T, observed[:, 1:13].T)
        np.testing.assert_array_equal(solve_by_chunks(spill.T, observed[:, 1:13].T), whole)
        # The inbox flow limits BLAS to one thread per worker (flows.runners): same bits.
        with threadpool_limits(limits=1, user_api="blas"):
            np.testing.assert_array_equal(solve_by_chunks(spill.T, observed[:, 1:13].T), whole)
