"""Per-sample quality checks of a flow-cytometry acquisition and of its adaptive gates.

Each check is one :class:`QcCheck` row of ``flow_qc``. A failed check marks the sample for
review; it never removes events or rows. All functions are pure: arrays and counts in,
rows out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Defaults chosen for peripheral-blood T-cell tubes; every function takes them as arguments.
MIN_EVENTS = 10_000
MIN_LYMPHOCYTES = 2_000
MIN_CD3 = 1_000
MIN_STABLE_FLOW = 0.90
MAX_MARGIN_SHARE = 0.05
MIN_SEPARATION = 1.5


@dataclass(frozen=True)
class QcCheck:
    """One row of ``flow_qc``: check name, measured value, whether it passed."""

    check: str
    value: float
    passed: bool


def events_acquired(n_events: int, minimum: int = MIN_EVENTS) -> QcCheck:
    """Total events in the data set; fails below ``minimum``."""
    return QcCheck("events_acquired", float(n_events), n_events >= minimum)


def population_count(check: str, count: int, minimum: int) -> QcCheck:
    """Events in a population (e.g. ``lymphocytes``, ``cd3_events``); fails below ``minimum``.

    Percentages from a few hundred events carry wide binomial intervals, hence the floor.
    """
    return QcCheck(check, float(count), count >= minimum)


def stable_flow(time: np.ndarray | None, n_windows: int = 100, tolerance: float = 0.5,
                minimum: float = MIN_STABLE_FLOW) -> QcCheck:
    """Share of events acquired in time windows with a normal event rate.

    Method: the acquisition time is cut into ``n_windows`` equal windows; a window whose
    event count departs from the median window count by more than ``tolerance`` (relative)
    plus 4 Poisson SDs is unstable (clog, bubble, sample running out); the value is the share
    of events in the stable windows. Failure mode: a run that is uniformly slow or fast is not
    caught (it has a stable rate), and without a Time channel the check passes with value 1.
    """
    if time is None or time.size < 2 * n_windows:
        return QcCheck("stable_flow", 1.0, True)
    t = np.asarray(time, dtype=float)
    lo, hi = float(np.min(t)), float(np.max(t))
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return QcCheck("stable_flow", 1.0, True)
    # Equal windows over [lo, hi], the last one closed (np.histogram's rule), counted by
    # bincount: 4x faster than np.histogram on 1M events.
    window = np.minimum(((t - lo) * (n_windows / (hi - lo))).astype(np.intp), n_windows - 1)
    counts = np.bincount(window, minlength=n_windows)
    med = float(np.median(counts))
    band = tolerance * med + 4.0 * math.sqrt(max(med, 1.0))
    kept = counts[np.abs(counts - med) <= band].sum() / counts.sum()
    return QcCheck("stable_flow", float(kept), kept >= minimum)


def channel_ranges(sample, columns) -> np.ndarray:
    """$PnR of every channel of ``sample`` (one entry per column); inf for channels not in
    ``columns`` and for a missing or non-numeric $PnR, so they never count as margin."""
    wanted = set(columns)
    out = np.full(len(sample.channels), np.inf)
    for c in sample.channels:
        if c.index not in wanted:
            continue
        v = sample.keywords.get(f"$P{c.index + 1}R") or sample.keywords.get(f"$p{c.index + 1}r")
        try:
            out[c.index] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def margin_events(events: np.ndarray, ranges: np.ndarray, maximum: float = MAX_MARGIN_SHARE) -> QcCheck:
    """Share of events sitting on the upper edge of any given channel (saturated detector).

    ``ranges`` holds each column's $PnR (:func:`channel_ranges`; inf = not checked); an event
    at or above ``PnR - 1`` is on the margin. The whole matrix is compared at once: a
    column selection would copy it first.
    Failure mode: files whose $PnR does not match the data range (some exports) report 0.
    """
    if events.size == 0:
        return QcCheck("margin_events", 0.0, True)
    on_edge = (events >= (np.asarray(ranges, dtype=float) - 1.0)).any(axis=1)
    share = float(on_edge.mean())
    return QcCheck("margin_events", share, share <= maximum)


def separation(gate_id: str, negative: np.ndarray, positive: np.ndarray,
               minimum: float = MIN_SEPARATION) -> QcCheck:
    """Separation of the two populations an adaptive threshold splits, on the gating scale.

    Value: ``(median_pos - median_neg) / (rSD_neg + rSD_pos)`` with rSD the robust SD
    (1.4826 MAD); above ~1.5 the two populations are clearly resolved. With fewer than
    20 events on a side the value is NaN and the check passes (nothing to resolve).
    """
    name = f"separation_{gate_id}"
    if negative.size < 20 or positive.size < 20:
        return QcCheck(name, float("nan"), True)
    def rsd(v):
        return 1.4826 * float(np.median(np.abs(v - np.median(v))))
    spread = rsd(negative) + rsd(positive)
    value = (float(np.median(positive)) - float(np.median(negative))) / spread if spread > 0 else float("inf")
    return QcCheck(name, value, value >= minimum)


QUADRANT_METHODS = ("valley_1d", "mixture_2d", "unresolved")


def quadrant_check(where: str, method: str, value: float, passed: bool) -> QcCheck:
    """Which method placed a quadrant's two cuts (e.g. CD4/CD8 inside CD3+).

    The row is named ``quadrant_<x>_<y>@<parent gate id>:<method>``, method one of
    :data:`QUADRANT_METHODS`; the value depends on it:

    * ``valley_1d`` - both cuts are 1-D density valleys (or resolved 1-D mixtures); value:
      the smallest share of the parent on one side of either cut; passes.
    * ``mixture_2d`` - at least one cut comes from the 2-D Gaussian mixture of both markers;
      value: the mixture's ``recovery``, the modelled share of events that the quadrant
      puts with the majority of their mixture component; passes at ``>= 0.9`` (below that,
      axis-parallel cuts go through populations, e.g. clouds elongated along the diagonal,
      and the percentages can be biased by about 1 - value).
    * ``unresolved`` - neither method separates the populations: the 1-D cuts are kept (at
      least one leaves almost nothing on one side, or falls on a single peak); value as for
      ``valley_1d``; fails, so the sample goes to review.
    """
    if method not in QUADRANT_METHODS:
        raise ValueError(f"quadrant method must be one of {', '.join(QUADRANT_METHODS)}, not {method!r}")
    return QcCheck(f"quadrant_{where}:{method}", float(value), bool(passed))


def count_checks(counts: dict[str, int], min_lymphocytes: int = MIN_LYMPHOCYTES,
                 min_cd3: int = MIN_CD3) -> list[QcCheck]:
    """``lymphocytes`` and ``cd3_events`` rows from final population counts
    (keys ``Lymphocytes`` and ``CD3+``, as flowkit counted them)."""
    rows = []
    if "Lymphocytes" in counts:
        rows.append(population_count("lymphocytes", int(counts["Lymphocytes"]), min_lymphocytes))
    if "CD3+" in counts:
        rows.append(population_count("cd3_events", int(counts["CD3+"]), min_cd3))
    return rows
