"""The Lymphocytes scatter gate holds the whole lymphocyte cloud (issue 13 point 6).

Truth: the seeded simulator (``simulators.tcell.simulate_tube``) labels every event
(``TubeTruth.category``: live singlet lymphocyte, dead cell, doublet, monocyte,
granulocyte, debris). Bounds: the gate's count within 5 % of the true lymphocyte count,
at least 95 % of the lymphocytes inside, monocytes + granulocytes + debris at most 0.5 % of
the gate. Dead cells sit on the lymphocytes' flank and are left to the ``Live`` gate (at
most 3 % of the gate here).
"""

from __future__ import annotations

import numpy as np
import pytest

from assays.fcs import read_fcs
from gating.adaptive import build_adaptive_gating
from gating.sample_gating import apply_strategy
from gating.panel import load_panel
from simulators.tcell import CATEGORIES, simulate_tube

# (seed, events, granulocyte share): PBMC-like and lysed-whole-blood-like tubes, 5k-50k events.
TUBES = [(31, 5_000, 0.0), (32, 20_000, 0.3), (33, 50_000, 0.0)]


@pytest.mark.parametrize("seed,n_events,granulocytes", TUBES)
def test_lymphocyte_gate_holds_the_cloud(tmp_path, seed, n_events, granulocytes):
    truth = simulate_tube(tmp_path / "t.fcs", seed=seed, n_events=n_events, granulocytes=granulocytes)
    sample = read_fcs(tmp_path / "t.fcs")
    gating = build_adaptive_gating(sample, load_panel())
    inside = next(m.mask for m in apply_strategy(gating.strategy, sample)
                  if gating.names[m.gate_id] == "Lymphocytes")
    cat = truth.category
    lymph = cat == CATEGORIES.index("lymphocyte")
    count = int(inside.sum())
    assert abs(count / lymph.sum() - 1) <= 0.05, (count, int(lymph.sum()))
    assert (inside & lymph).sum() / lymph.sum() >= 0.95
    others = np.isin(cat, [CATEGORIES.index(c) for c in ("monocyte", "granulocyte", "debris")])
    assert (inside & others).sum() <= 0.005 * count, {c: int((inside & (cat == i)).sum())
                                                       for i, c in enumerate(CATEGORIES)}
    assert (inside & (cat == CATEGORIES.index("dead"))).sum() <= 0.03 * count
