"""Population and marker statistics from gate memberships.

Definitions (as FlowJo and flowkit report them):

* ``pct_of_parent = 100 * count / parent_count``
* ``pct_of_lymphocytes = 100 * count / count(base)`` where *base* is the deepest of
  ``Live`` ⊂ ``Singlets`` ⊂ ``Lymphocytes`` present on the population's path
  (:func:`gating.roles.lymphocyte_base`)
  (DESIGN.md: "% of lymphocytes, the Live singlet lymphocytes when present");
  NULL for populations outside that base.
* ``role``: which population the immune timeline reads as lymphocytes, CD3, CD4, CD8,
  Th1 ... Treg (:mod:`gating.roles`, the one place that decides it from names).
* ``unresolved``: the population lies inside a gate whose cuts the data could not place
  (a QC check's ``unresolved_in``, e.g. no CD4/CD8 split inside CD3+); its numbers are
  not to be read as results, and ``unresolved_reason`` says why in a lab's words.
* robust CV (FlowJo's rCV): ``100 * (P84.13 - P15.87) / (2 * median)``, i.e. the
  half-width of the central 68.26 % divided by the median, which equals the CV for a
  normal distribution but ignores outliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assays.records import FcsSample
from gating.compiled_strategy import GateMembership
from gating.grouped_quantiles import EventGroups, event_groups, grouped_stats
from gating.qc import QcCheck
from gating.roles import assign_roles, lymphocyte_base

@dataclass
class PopulationStat:
    population: str
    path: str
    parent: str | None
    count: int
    parent_count: int
    pct_of_parent: float | None
    pct_of_lymphocytes: float | None
    role: str | None = None
    unresolved: bool = False
    unresolved_reason: str | None = None


@dataclass
class MarkerStat:
    population: str
    path: str
    marker: str
    channel: str
    median: float | None
    mean: float | None
    robust_cv: float | None


# Percentiles behind the robust CV: the centre 68.26 % (+-1 SD of a normal) and the median.
RCV_PERCENTS = (15.87, 50.0, 84.13)


def _rcv(lo: float, med: float, hi: float, n: int) -> float | None:
    """100 * (hi - lo) / (2 |med|); None for fewer than 2 events or a zero median."""
    if n < 2 or med == 0:
        return None
    return float(100.0 * (hi - lo) / (2.0 * abs(med)))


def robust_cv(values: np.ndarray) -> float | None:
    """FlowJo's robust CV in percent: rCV = 100 * (P84.13 - P15.87) / (2 * |median|).

    The half-width of the central 68.26 % of the values over the median: the CV of a
    normal distribution, but blind to outliers (FlowJo's "Robust CV" statistic).
    Percentiles are numpy's linear ones.

    Parameters
    ----------
    values : numpy.ndarray
        Compensated, untransformed intensities of one channel inside one population.

    Returns
    -------
    float or None
        The robust CV in percent; None for fewer than 2 events or a zero median.

    Examples
    --------
    >>> round(robust_cv(np.array([8.0, 9.0, 10.0, 11.0, 12.0])), 3)
    13.652
    """
    lo, med, hi = np.percentile(values, RCV_PERCENTS) if values.size else (0.0, 0.0, 0.0)
    return _rcv(float(lo), float(med), float(hi), values.size)


def population_stats(
    memberships: list[GateMembership], n_events: int, names: dict[str, str] | None = None,
    qc: list[QcCheck] = (),
) -> list[PopulationStat]:
    """One row per population: its count and its percentages of parent and of lymphocytes.

    Formulas (flowkit's ``Session.get_gating_results`` and FlowJo's "Freq. of Parent"
    and "Freq. of ..." columns define the same quantities)::

        count          = number of events inside the gate and all its ancestors
        pct_of_parent  = 100 * count / count(parent)      (parent = all events at the root)
        pct_of_lymph   = 100 * count / count(Lymphocytes) (populations under Lymphocytes only)

    A percentage whose denominator is 0 is None (no events: no percentage).

    Parameters
    ----------
    memberships : list of GateMembership
        Every gate's boolean event mask and gate path, in strategy order.
    n_events : int
        Events in the file (the root's count).
    names : dict, optional
        Gate id -> display name (the adaptive panel's readable names); ids are shown otherwise.
    qc : sequence of QcCheck
        The gating's checks. A check with ``unresolved_in`` (a gate id) marks every
        population below that gate unresolved, with the check's message as the reason; one
        with ``unresolved_gates`` marks those gates and the populations below them.

    Returns
    -------
    list of PopulationStat
        One per membership, in the same order; ``unresolved`` rows keep their counts for
        audit, and the views report their percentages as NULL with ``unresolved_reason``.
    """
    names = names or {}
    by_path = {m.path: m for m in memberships}
    counts = {m.path: int(m.mask.sum()) for m in memberships}
    unresolved = {c.unresolved_in: c.message for c in qc if c.unresolved_in is not None}
    unresolved_gates = {g: c.message for c in qc for g in c.unresolved_gates}
    out = []
    shown_paths = []
    for m in memberships:
        shown = tuple(names.get(g, g) for g in m.path)
        shown_paths.append(shown)
        parent_count = counts[m.parent_path] if m.parent_path else n_events
        base_idx = lymphocyte_base(shown)
        pct_lymph = None
        if base_idx is not None:
            base_count = counts[m.path[: base_idx + 1]]
            pct_lymph = 100.0 * counts[m.path] / base_count if base_count else None
        reason = next((unresolved[g] for g in m.path[:-1] if g in unresolved),
                      next((unresolved_gates[g] for g in m.path if g in unresolved_gates), None))
        out.append(
            PopulationStat(
                population=shown[-1],
                path="/".join(shown),
                parent=names.get(m.parent_path[-1], m.parent_path[-1]) if m.parent_path else None,
                count=counts[m.path],
                parent_count=parent_count,
                pct_of_parent=(100.0 * counts[m.path] / parent_count) if parent_count else None,
                pct_of_lymphocytes=pct_lymph,
                unresolved=reason is not None,
                unresolved_reason=reason,
            )
        )
    assert len(by_path) == len(memberships), "gate paths must be unique within a sample"
    roles = assign_roles([p.population for p in out], [p.parent for p in out], shown_paths)
    for p, role in zip(out, roles):
        p.role = role
    return out


def marker_stats(
    memberships: list[GateMembership],
    sample: FcsSample,
    by_channel: list[np.ndarray],
    groups: EventGroups,
    names: dict[str, str] | None = None,
) -> list[MarkerStat]:
    """Median, mean and robust CV of every non-time channel inside every population.

    median = P50, mean = arithmetic mean, robust CV = 100 x (P84.13 - P15.87) / (2 |P50|)
    (:func:`robust_cv`), on compensated, untransformed (linear) intensities, as FlowJo
    reports them. Percentiles are numpy's linear ones, for all populations at once
    (:mod:`gating.grouped_quantiles`, equal to ``np.percentile`` bit for bit).

    Parameters
    ----------
    memberships : list of GateMembership
        The evaluator's result.
    sample : FcsSample
        The sample the memberships belong to (its channels name the markers).
    by_channel : list of numpy.ndarray
        One contiguous array per channel of :func:`stat_channels`
        (``gating.compensation.channel_major``).
    groups : EventGroups
        :func:`grouped_populations` of ``memberships``.
    names : dict, optional
        Gate id -> display name.

    Returns
    -------
    list of MarkerStat
        One row per population and channel; all three values None for an empty
        population, the robust CV None for fewer than 2 events or a zero median.
    """
    names = names or {}
    channels = stat_channels(sample)
    stats = grouped_stats(by_channel, groups, RCV_PERCENTS)
    counts = groups.counts()
    rows = []
    for i, m in enumerate(memberships):
        shown = tuple(names.get(g, g) for g in m.path)
        for j, ch in enumerate(channels):
            if counts[i] == 0:
                rows.append(MarkerStat(shown[-1], "/".join(shown), ch.label, ch.pnn, None, None, None))
                continue
            lo, med, hi = (float(x) for x in stats.percentiles[i, j])
            rows.append(MarkerStat(shown[-1], "/".join(shown), ch.label, ch.pnn, med, float(stats.means[i, j]),
                                   _rcv(lo, med, hi, int(counts[i]))))
    return rows


def grouped_populations(memberships: list[GateMembership], n_events: int) -> EventGroups:
    """Events grouped by which populations hold them (see :mod:`gating.grouped_quantiles`)."""
    return event_groups([m.mask for m in memberships], n_events)


def stat_channels(sample: FcsSample) -> list:
    """Channels that get marker statistics: every channel but Time."""
    return [c for c in sample.channels if c.pnn.strip().lower() != "time"]
