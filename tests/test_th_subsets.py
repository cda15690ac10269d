"""Th subsets (Th1, Th2, Th0, Th17) with and without an unstimulated control tube
(issue 13 point 5).

Truth: the seeded simulator (``simulators.tcell.simulate_tube``), each subset's share of
CD4+CD8- from the labels of its events (``tests/th_sweep.py``). Every tube draws its own
drift (0.8-1.25x per detector) and the marker spellings cycle through the label variants.
Bound: within max(0.5 points, 15 % of truth) of the true share of CD4 (``th_sweep.bound``).
What must hold: producers of 0.5-8 % of CD4 are found in the stimulated tube itself as
well as with the control; 0 % producers read about 0 (a value, not NULL); producers
too dim to separate from the negatives are NULL with a reason, never a confident 0 %.
The larger sweep is ``benchmarks/sweep_th_subsets.py``.
"""

from __future__ import annotations

import pytest

from gating.panel import load_panel
from th_sweep import SUBSETS, Case, bound, run


@pytest.fixture(scope="module")
def panel():
    return load_panel()


N_EVENTS = 10_000  # ~2,500 CD4+CD8- T cells: 0.5 % of them is a dozen events

WITHIN = [
    Case(seed=401, level="1-8", label_variant=0, n_events=N_EVENTS),
    Case(seed=402, level="1-8", label_variant=1, control=True, n_events=N_EVENTS),
    Case(seed=403, level="half", label_variant=2, n_events=N_EVENTS),
    Case(seed=404, level="half", label_variant=3, control=True, n_events=N_EVENTS),
    Case(seed=405, level="1-8", brightness=0.3, n_events=N_EVENTS),
]


@pytest.mark.parametrize("case", WITHIN, ids=lambda c: f"{c.level}-x{c.brightness:g}-{'ctrl' if c.control else 'noctrl'}")
def test_th_subsets_within_the_bound(tmp_path, panel, case):
    out = run(case, tmp_path, panel)
    bad = {k: (out.truth[k], out.got[k], out.reasons[k]) for k in SUBSETS if not out.within(k)}
    assert not bad, bad


@pytest.mark.parametrize("seed,control", [(411, False), (413, True)])
def test_no_producers_read_zero_not_null(tmp_path, panel, seed, control):
    out = run(Case(seed=seed, level="none", control=control, n_events=N_EVENTS), tmp_path, panel)
    for key in SUBSETS:
        assert out.got[key] is not None, (key, out.reasons[key])
        assert out.got[key] <= bound(0.0), (key, out.got[key])


def test_producers_hidden_in_the_negatives_are_mostly_null_with_a_reason(tmp_path, panel):
    """Producers at 0.12x the usual brightness (IFN-γ median ~720 against negatives at
    ~120) overlap the negatives: a cut misses most of them. Most subsets are NULL with the
    reason; the overlap check is not perfect (on the larger sweep ~5 % of such values are
    confident and wrong, e.g. Th17 0.1 % for 4.3 % on seed 421): at most 2 of these 8."""
    wrong, nulls = [], 0
    for seed in (421, 422):
        out = run(Case(seed=seed, level="1-8", brightness=0.12, n_events=N_EVENTS), tmp_path, panel)
        for key in SUBSETS:
            if out.got[key] is None:
                nulls += 1
                assert "not separated from the negative cells" in out.reasons[key]
            elif not out.within(key):
                wrong.append((seed, key, out.truth[key], out.got[key]))
    assert nulls >= 4 and len(wrong) <= 2, (nulls, wrong)


def test_only_the_populations_of_the_unseparated_marker_are_null(tmp_path, panel):
    """An unresolved cytokine leaves its own populations empty, not their siblings:
    Treg (CD25/CD127) and CD4 stay resolved, and the reason names the marker."""
    import dataclasses

    from gating.adaptive import build_adaptive_gating
    from gating.qc import producers_not_separated
    from gating.sample_gating import apply_strategy
    from gating.statistics import population_stats
    from assays.fcs import read_fcs
    from simulators.tcell import simulate_tube

    simulate_tube(tmp_path / "t.fcs", seed=431, n_events=5_000)
    sample = read_fcs(tmp_path / "t.fcs")
    gating = build_adaptive_gating(sample, panel)
    row = producers_not_separated("IL-4", "CD4_pos_CD8_neg", "CD4+CD8-", 3.0, 1.5, ("Th2", "Th0"), ["Th2", "Th0"])
    stats = population_stats(apply_strategy(gating.strategy, sample), sample.events.shape[0], gating.names,
                             [*gating.qc, row])
    by_name = {s.population: s for s in stats}
    assert by_name["Th2"].unresolved and "IL-4 producers" in by_name["Th2"].unresolved_reason
    assert by_name["Th0"].unresolved
    assert not by_name["Th1"].unresolved and not by_name["Treg"].unresolved and not by_name["CD4+CD8-"].unresolved
    assert not row.passed and dataclasses.asdict(row)["unresolved_gates"] == ("Th2", "Th0")
