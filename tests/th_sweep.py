"""Seeded sweep of Th-subset accuracy (issue 13 point 5): simulated stimulated tubes with
known truth, gated with and without their unstimulated control.

Used by ``tests/test_th_subsets.py`` (a few cases) and ``benchmarks/sweep_th_subsets.py``
(the larger sweep whose figures go in the notes). Truth comes from
:func:`simulators.tcell.simulate_tube` (each subset's share from the labels of its events).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assays.fcs import read_fcs
from gating.adaptive import build_adaptive_gating
from gating.adaptive.producers import BOUND_ABS_PCT, BOUND_REL
from gating.sample_gating import apply_strategy
from gating.statistics import population_stats
from simulators.tcell import TubeTruth, random_truth, simulate_tube

SUBSETS = ("th1", "th2", "th0", "th17")
# The accuracy bound, with and without a control: within max(0.5 points, 15 % of truth)
# of the true share of CD4+CD8- T cells (gating.adaptive.producers.value_bound).
ABS_BOUND, REL_BOUND = BOUND_ABS_PCT, BOUND_REL
# Producer levels of the sweep: name -> (Th1, Th2, Th0, Th17) % of CD4, or a range: Th1, Th2
# and Th17 drawn uniformly in it (Th0 in 1-3 %).
LEVELS = {"none": (0.0, 0.0, 0.0, 0.0), "half": (0.5, 0.5, 0.5, 0.5), "1-8": (1.0, 8.0), "5-10": (5.0, 10.0)}


def bound(truth: float) -> float:
    """Largest error accepted for a subset whose true share of CD4 is ``truth`` (%)."""
    return max(ABS_BOUND, REL_BOUND * truth)


@dataclass(frozen=True)
class Case:
    """One simulated stimulated tube of the sweep (and how it is gated)."""

    seed: int
    level: str = "1-8"  # key of LEVELS
    brightness: float = 1.0  # producers' signal relative to the simulator's usual
    control: bool = False  # gate with the unstimulated control tube
    n_events: int = 20_000
    label_variant: int | None = None
    negative_shape: str = "lognormal"  # simulators.tcell.NEGATIVE_SHAPES
    control_events: int | None = None  # events of the control tube (default: n_events)
    control_level: float = 1.0  # the control's cytokine negatives at this multiple of the tube's


@dataclass
class Outcome:
    """Reported value (None = NULL) and truth of each subset, with the NULL reasons."""

    case: Case
    truth: dict[str, float]
    got: dict[str, float | None]
    reasons: dict[str, str | None]

    def error(self, key: str) -> float | None:
        return None if self.got[key] is None else abs(self.got[key] - self.truth[key])

    def within(self, key: str) -> bool:
        err = self.error(key)
        return err is not None and err <= bound(self.truth[key])


def target(case: Case) -> TubeTruth:
    rng = np.random.default_rng(case.seed)
    base = random_truth(rng)
    shares = LEVELS[case.level]
    if len(shares) == 2:
        lo, hi = shares
        shares = (rng.uniform(lo, hi), rng.uniform(lo, hi), rng.uniform(1, 3), rng.uniform(lo, hi))
    return dataclasses.replace(base, **dict(zip((f"{s}_pct_cd4" for s in SUBSETS), shares)))


def run(case: Case, tmp: Path, panel) -> Outcome:
    """Simulate ``case`` (and its control when asked), gate it, read the Th subsets."""
    truth, sample, control = _simulate(case, tmp)
    return _gate(case, truth, sample, control, panel)


def run_pair(case: Case, tmp: Path, panel) -> tuple[Outcome, Outcome]:
    """The same simulated tube gated without and with its control: (no control, control)."""
    with_control = dataclasses.replace(case, control=True)
    truth, sample, control = _simulate(with_control, tmp)
    return (_gate(dataclasses.replace(case, control=False), truth, sample, None, panel),
            _gate(with_control, truth, sample, control, panel))


def _simulate(case: Case, tmp: Path):
    path = tmp / f"s{case.seed}.fcs"
    truth = simulate_tube(path, seed=case.seed, n_events=case.n_events, truth=target(case),
                          label_variant=case.label_variant, producer_brightness=case.brightness,
                          negative_shape=case.negative_shape)
    control = None
    if case.control:
        cpath = tmp / f"c{case.seed}.fcs"
        simulate_tube(cpath, seed=case.seed + 1, n_events=case.control_events or case.n_events, truth=truth,
                      control=True, label_variant=case.label_variant, negative_shape=case.negative_shape,
                      negative_level=case.control_level)
        control = read_fcs(cpath)
    return truth, read_fcs(path), control


def _gate(case: Case, truth, sample, control, panel) -> Outcome:
    gating = build_adaptive_gating(sample, panel, control=control)
    stats = population_stats(apply_strategy(gating.strategy, sample), sample.events.shape[0],
                             gating.names, gating.qc)
    by_role = {s.role: s for s in stats if s.role}
    got, reasons = {}, {}
    for key in SUBSETS:
        s = by_role[key]
        got[key] = None if s.unresolved or by_role["cd4"].unresolved else 100.0 * s.count / by_role["cd4"].count
        reasons[key] = s.unresolved_reason
    return Outcome(case, {k: getattr(truth, f"{k}_pct_cd4") for k in SUBSETS}, got, reasons)
