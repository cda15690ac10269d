"""A tube with two CD8 channels (CD8a and CD8b, or CD8 on two fluorochromes): the panel gates
the better-separated one inside CD3+ and records which in ``flow_qc`` (issue 13 point 4).

Truth: seeded simulated tubes (simulators.tcell, ``cd8_second``) whose second CD8 channel
holds the same CD8+ cells at 400 instead of 15,000 (poorly separated), written after or
before the well-separated one; the real OMIP-021 tubes (``BV650 - CD8a``, ``APC - CD8b``)
in tests/test_real_panels.py.
"""

from __future__ import annotations

import warnings

import pytest

from assays.fcs import read_fcs
from gating.adaptive import build_adaptive_gating
from gating.panel import load_panel
from gating.sample_gating import apply_strategy
from simulators.tcell import CD8_SECOND_DETECTOR, DETECTORS, simulate_tube


@pytest.mark.parametrize("second_first", [False, True], ids=["poor_channel_second", "poor_channel_first"])
def test_the_better_separated_cd8_channel_is_gated_and_recorded(tmp_path, second_first):
    truth = simulate_tube(tmp_path / "t.fcs", seed=11, n_events=10_000, cd8_second=400.0,
                          cd8_second_first=second_first)
    sample = read_fcs(tmp_path / "t.fcs")
    order = [c.pnn for c in sample.channels if c.pnn in (DETECTORS["CD8"], CD8_SECOND_DETECTOR)]
    assert (order[0] == CD8_SECOND_DETECTOR) == second_first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gating = build_adaptive_gating(sample, load_panel())
    assert gating.channels["CD8"].pnn == DETECTORS["CD8"]
    (row,) = [q for q in gating.qc if q.check.startswith("channel_CD8@")]
    assert row.check == "channel_CD8@CD3_pos" and row.passed and row.value >= 3
    assert f"gated on CD8a on {DETECTORS['CD8']}" in row.message and f"CD8b on {CD8_SECOND_DETECTOR}" in row.message
    counts = {gating.names[m.gate_id]: m.count for m in apply_strategy(gating.strategy, sample)}
    assert abs(100 * counts["CD4-CD8+"] / counts["Live"] - truth.cd8_pct_lymph) <= 3.0
    assert abs(100 * counts["CD4+CD8-"] / counts["Live"] - truth.cd4_pct_lymph) <= 3.0
    # The stored gates name the chosen detector: the exported Gating-ML re-applies it.
    dims = {d.id for g in gating.strategy.get_gate_ids() for d in
            getattr(gating.strategy.get_gate(g[0], gate_path=tuple(g[1])), "dimensions", [])}
    assert DETECTORS["CD8"] in dims and CD8_SECOND_DETECTOR not in dims
