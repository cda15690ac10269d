"""Cytokine producers of a stimulated tube: the cut between them and the negative cells of
the same parent, and whether the data separate the two (issue 13 point 5).

Two paths. With the unstimulated control tube (:func:`control_cytokine_cut`) the
negatives' distribution is measured. Without it (:func:`cytokine_threshold`) it is not,
and no shape assumed for it holds on every tube: the value is given only when the
producers can be told apart from the negatives in the tube itself, else the cut is
``resolved`` False with a ``reason`` a lab person can read, and the Th values it sets are
left empty. The bound a value must meet is the Th accuracy bound, :func:`value_bound`.

Formulas (each function's docstring gives its own): the negatives' mode and upper-flank
SD (:func:`negative_mode_spread`); the producers hidden below a cut by reflection of the
producers' population about its centre (:func:`mirrored_hidden`); the excess of the
negatives' upper flank over a normal upper half (:func:`flank_excess`) with its standard
error by random groups (:func:`flank_excess_se`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gating.adaptive.thresholds import CONTROL_PERCENTILE, _smoothed_density, control_threshold, valley_and_peak

# The Th accuracy bound: a Th value within max(0.5 points, 15 % of the value) of the true
# share of CD4+CD8- (the bound the control-tube path meets on the seeded sweeps,
# benchmarks/sweep_th_subsets.py). What a value may absorb before it is left empty.
BOUND_ABS_PCT = 0.5
BOUND_REL = 0.15
# No-control cut: negative mode + 3.5 upper-flank SD (0.02 % of a normal negative
# population above it, the role of the control's 99.9th percentile), or a valley at
# least 2 SD above the mode.
CYTOKINE_K = 3.5
VALLEY_MIN_K = 2.0
# The negatives' upper flank checked for producers starts FLANK_START SD above the mode:
# closer in, a 5 % error of the SD moves the expected count by more than the bound.
FLANK_START = 2.0
FLANK_Z = 2.0
FLANK_GROUPS = 4
# Producers hidden below the cut (mirror estimate) may take at most this share of the bound:
# the rest is left for the negatives' tail above the cut, which is not measured.
MIRROR_SHARE = 0.5
# A positive mode among few events: the events above the cut in bins of half an SD; the
# fullest bin at least 2 bins above the cut and the first bin at most 0.3 of it.
MODE_MIN_EVENTS = 5
MODE_BIN_SD = 0.5
MODE_MIN_BINS = 2
MODE_EDGE_RATIO = 0.3
# ... or at most 2 events: among a dozen producers, the ratio is counting noise.
MODE_EDGE_EVENTS = 2
# Control path: producers of the overlap a value may absorb, max(1.5 points, 15 %).
HIDDEN_MIN_PCT = 1.5
HIDDEN_REL = 0.15


def value_bound(value_pct: float) -> float:
    """Largest error accepted for a Th share, in points: max(0.5, 0.15 x ``value_pct``)."""
    return max(BOUND_ABS_PCT, BOUND_REL * value_pct)


@dataclass(frozen=True)
class CytokineCut:
    """A cytokine cut and whether the data separate the producers from the negatives.

    ``cut``: logicle value (events ``>=`` it are producers); ``how``: the method, for
    ``flow_qc``; ``hidden_pct``: the estimate that decided (producers the cut misses, or the
    negatives' unexplained upper flank), % of the parent; ``allowed_pct``: what a value may
    absorb; ``resolved``: the value can be given; ``reason``: what the data show when not.
    """

    cut: float
    how: str
    hidden_pct: float
    allowed_pct: float
    resolved: bool
    reason: str = ""


def negative_mode_spread(x: np.ndarray) -> tuple[float, float]:
    """Mode of the main (negative) population and its SD measured on its upper flank.

    Method: the mode m of the smoothed density (:func:`_smoothed_density`); the spread is
    the half width at half maximum on the upper side, s = HWHM / sqrt(2 ln 2) (the SD of a
    normal peak with that half width; e.g. Shapiro, *Practical Flow Cytometry*, 4th ed.,
    on peak widths). The upper flank, not the lower one: on the logicle scale the negatives
    are skewed, their lower flank 10-50 % wider than the upper one (compensation spread
    and electronic noise fold into the linear region), so the mirrored lower half
    overstated the upper spread and put the cut above dim producers. At half maximum the
    flank is the negatives' own: producers of a few % of the parent reach that height
    only when they overlap the negatives, which :func:`flank_excess` reports.
    """
    x = np.asarray(x, dtype=float)
    iqr = np.subtract(*np.percentile(x, [75, 25]))
    # Silverman's full bandwidth, not the half used for valleys: the top of a negative
    # peak of a few thousand events is flat and noisy at the narrower kernel, and its
    # highest ripple moved the mode by up to one SD and shrank the half width.
    bw = 1.06 * (min(float(np.std(x)), iqr / 1.349) or float(np.std(x)) or 1e-3) * len(x) ** -0.2
    centers, dens = _smoothed_density(x, bandwidth=bw)
    i = int(np.argmax(dens))
    below = np.flatnonzero(dens[i:] < dens[i] / 2)
    step = centers[1] - centers[0]
    if below.size == 0:
        return float(centers[i]), step
    j = i + int(below[0])
    # Linear interpolation between the last bin above half maximum and the first below.
    frac = (dens[j - 1] - dens[i] / 2) / max(dens[j - 1] - dens[j], 1e-12)
    sd = (j - 1 - i + frac) * step / math.sqrt(2 * math.log(2))
    # The kernel widened the peak: s_observed² = s² + bandwidth².
    return float(centers[i]), max(math.sqrt(max(sd * sd - bw * bw, 0.0)), step)


def flank_excess(x: np.ndarray, m: float, s: float, cut: float, start: float = FLANK_START) -> float:
    """Events of the negatives' upper flank beyond a normal upper half, % of the parent.

    Formula: with N[a, b) the count of ``x`` in [a, b) and n = len(x),

        E = 100 / n * ( N[m + start·s, cut) - N[m, m + s) · (Φ((cut - m)/s) - Φ(start)) / (Φ(1) - 1/2) )

    i.e. the events between ``start`` SD above the mode and the cut, less what a normal
    upper half of SD ``s`` whose first SD holds N[m, m + s) puts there (Φ the standard
    normal CDF). The upper half's mass comes from its own first SD, not from the events
    below the mode (the lower flank is wider on the logicle scale: doubling it overstated
    the negatives by ~25 %). Positive E: producers the cut misses, or a negative population
    whose upper tail is heavier than normal; without a control the two cannot be told
    apart. Its sampling error is mostly that of ``s`` (a 5 % error of s moves E by about
    0.5 % of the parent): :func:`flank_excess_se`.
    """
    from scipy.special import ndtr

    x = np.asarray(x, dtype=float)
    if x.size == 0 or cut <= m + start * s:
        return 0.0
    first = np.count_nonzero((x >= m) & (x < m + s))
    expected = first * max(0.0, float(ndtr((cut - m) / s) - ndtr(start))) / (float(ndtr(1.0)) - 0.5)
    observed = np.count_nonzero((x >= m + start * s) & (x < cut))
    return 100.0 * (observed - expected) / x.size


def flank_excess_se(x: np.ndarray, cut_sd: float, start: float = FLANK_START, groups: int = FLANK_GROUPS) -> float:
    """Standard error of :func:`flank_excess` by the method of random groups.

    Formula: ``x`` is split into G = ``groups`` interleaved groups (x[g::G]); on each, the
    mode m_g and SD s_g are measured again (:func:`negative_mode_spread`) and E_g computed
    with its cut at m_g + ``cut_sd``·s_g; SE = sd(E_1..E_G) / sqrt(G) (Wolter,
    *Introduction to Variance Estimation*, 2nd ed., Springer 2007, ch. 2). It carries the
    error of the fitted mode and SD, which dominates the counts' Poisson error.
    """
    x = np.asarray(x, dtype=float)
    values = []
    for g in range(groups):
        part = x[g::groups]
        mg, sg = negative_mode_spread(part)
        values.append(flank_excess(part, mg, sg, mg + cut_sd * sg, start))
    return float(np.std(values, ddof=1) / math.sqrt(groups))


def positive_mode(above: np.ndarray, cut: float, s: float) -> tuple[float, float] | None:
    """The producers above ``cut`` when they form a mode of their own: (gap, centre), else None.

    Method: the events above the cut in bins of :data:`MODE_BIN_SD` x ``s``; a mode when the
    fullest bin is at least :data:`MODE_MIN_BINS` bins above the cut and some bin between
    holds at most :data:`MODE_EDGE_RATIO` of it or :data:`MODE_EDGE_EVENTS` events (a
    population that rises again after a gap, not the tail of the negatives or of producers
    the cut truncates, which fall away from the cut). ``gap`` is the middle of the emptiest
    bin between (the first of equals), ``centre`` the fullest bin's middle. Needs
    :data:`MODE_MIN_EVENTS` events. For producers too few for a density valley (0.5 % of
    the parent), and for a tail of negatives above the cut that a gap parts from them.
    """
    if above.size < MODE_MIN_EVENTS:
        return None
    width = MODE_BIN_SD * s
    h = np.bincount(((above - cut) / width).astype(int))
    j = int(np.argmax(h))
    if j < MODE_MIN_BINS:
        return None
    d = int(np.argmin(h[:j]))
    if h[d] > max(MODE_EDGE_RATIO * h[j], MODE_EDGE_EVENTS):
        return None
    return cut + (d + 0.5) * width, cut + (j + 0.5) * width


def mirrored_hidden(x: np.ndarray, cut: float, centre: float) -> float:
    """Producers below ``cut``, % of the parent, by reflection about their centre.

    Formula: H = 100 · N[2·centre - cut, ∞) / n: a population symmetric about ``centre``
    has as many events below the cut as above its mirror image 2·centre - cut. The events
    that high are all producers, so H needs no model of the negatives. Assumption: the
    producers of one cytokine form one population, about symmetric on the logicle scale
    (a log-normal expression); a cut that truncates them far below their centre is caught
    by the caller (no mode above the cut), not here.
    """
    x = np.asarray(x, dtype=float)
    return 100.0 * np.count_nonzero(x >= 2.0 * centre - cut) / max(x.size, 1)


def cytokine_threshold(x: np.ndarray, k: float = CYTOKINE_K) -> CytokineCut:
    """Cytokine cut without a control tube, and whether the tube itself supports a value.

    Cut: the negatives' mode m and upper-flank SD s (:func:`negative_mode_spread`); a density
    valley at least :data:`VALLEY_MIN_K` s above m with the producers' mode above it
    (:func:`~gating.adaptive.thresholds.valley_and_peak`), else m + ``k`` s.

    Decision (A = :func:`value_bound` of the value v):

    1. Producers form a population above the cut (the valley's upper peak, or
       :func:`positive_mode` among few events, the cut then raised to the gap below
       them): their share below the cut is
       H = :func:`mirrored_hidden` about centre min(mode, median of the events above);
       resolved when H <= :data:`MIRROR_SHARE` x A and the negatives' upper flank shows no
       significant excess, E - :data:`FLANK_Z` x SE <= A (:func:`flank_excess`,
       :func:`flank_excess_se`; E is computed only when it could fail).
    2. No population above the cut (nothing there, or a tail falling away from the
       negatives): a value (about 0) only when v <= A and the flank excludes hidden
       producers beyond the bound, E + :data:`FLANK_Z` x SE <= A.

    Not resolved, the caller leaves the Th values empty with ``reason``.

    Measured on seeded sweeps (``benchmarks/sweep_th_subsets.py``, 20,000-event tubes,
    four negative shapes of ``simulators.tcell.NEGATIVE_SHAPES``, figures in that script's
    docstring): 1.1 % of values outside the bound (the control path: 8.2 %), 75 % NULL
    (control: 37 %); on log-normal negatives no NULL at full brightness, 47 % at 0.3.
    Failure modes: producers inside the negatives' spread are
    invisible (a tube with none reads NULL, not 0, when its size cannot exclude them);
    a negative population with a heavy upper tail reaching the producers inflates a value
    (the same happens with a control); a normal-tailed tube of 0 % producers is NULL unless
    it has enough events (about 20,000+ in the parent) to exclude hidden producers.
    """
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    n = max(x.size, 1)
    m, s = negative_mode_spread(x)
    found = valley_and_peak(x)
    centre = None
    if found is not None and found[0] >= m + VALLEY_MIN_K * s and found[1] > found[0]:
        cut, centre, how = found[0], found[1], "density valley above the negatives"
    else:
        cut, how = m + k * s, f"negative mode + {k:g} upper-flank SD"
    above = x[x >= cut]
    value = 100.0 * above.size / n
    allowed = value_bound(value)
    if centre is None:
        mode = positive_mode(above, cut, s)
        if mode is not None:
            (cut, centre), how = mode, f"{how}, raised to the gap below the producers"
            above = x[x >= cut]
            value = 100.0 * above.size / n
            allowed = value_bound(value)
    if centre is not None:
        centre = min(centre, float(np.median(above)))
        hidden = mirrored_hidden(x, cut, centre)
        if hidden > MIRROR_SHARE * allowed:
            return CytokineCut(cut, how, hidden, MIRROR_SHARE * allowed, False,
                               f"their positive population is cut through: about {hidden:.2g} % of the parent "
                               f"lie below the cut (mirror of the population above it)")
        excess = flank_excess(x, m, s, cut)
        if excess > allowed:
            se = flank_excess_se(x, (cut - m) / s)
            if excess - FLANK_Z * se > allowed:
                return CytokineCut(cut, how, excess, allowed, False, _flank_reason(excess, se))
        return CytokineCut(cut, how, hidden, MIRROR_SHARE * allowed, True)
    if value > allowed:
        return CytokineCut(cut, how, value, allowed, False,
                           f"{value:.2g} % of the parent lie above the cut as a tail of the negative cells, "
                           f"not as a population of their own")
    excess = flank_excess(x, m, s, cut)
    upper = excess + FLANK_Z * flank_excess_se(x, (cut - m) / s) if excess <= allowed else excess
    if upper > allowed:
        return CytokineCut(cut, how, upper, allowed, False,
                           f"no producers are seen above the negatives, but up to {max(upper, 0):.2g} % of the "
                           f"parent could hide in their upper flank (dim producers cannot be excluded)")
    return CytokineCut(cut, how, upper, allowed, True)


def _flank_reason(excess: float, se: float) -> str:
    return (f"about {excess:.2g} ± {se:.1g} % of the parent sit in the negatives' upper flank beyond a "
            f"normal negative population: dim producers or a heavy-tailed negative population, which "
            f"cannot be told apart without a control")


def producer_overlap(x: np.ndarray, cut: float, lower: float, negative_share: float) -> float:
    """Producers estimated between ``lower`` and ``cut``, as % of the parent.

    Formula: 100 x (share of the parent in ``[lower, cut)`` - ``negative_share``), the
    share the negatives alone put there (from the unstimulated control's own distribution).
    Producers counted there are called negative by the cut: a Th value is short by about
    this much.
    """
    x = np.asarray(x, dtype=float)
    inside = float(np.mean((x >= lower) & (x < cut))) if x.size else 0.0
    return 100.0 * (inside - negative_share)


def control_cytokine_cut(x: np.ndarray, x_control: np.ndarray, percentile: float = CONTROL_PERCENTILE,
                         lower_percentile: float = 97.72) -> CytokineCut:
    """Cytokine cut from the unstimulated control (:func:`~gating.adaptive.thresholds.control_threshold`),
    with a detectability check: producers of the stimulated tube ``x`` between the control's
    ``lower_percentile`` (mode + 2 SD of a normal) and the cut, beyond the
    (percentile - lower_percentile) % the negatives put there (:func:`producer_overlap`),
    may be at most max(:data:`HIDDEN_MIN_PCT`, :data:`HIDDEN_REL` x the value)."""
    x = np.asarray(x, dtype=float)
    xc = np.asarray(x_control, dtype=float)
    xc = xc[np.isfinite(xc)]
    cut = control_threshold(xc, percentile)
    lower = float(np.percentile(xc, lower_percentile))
    hidden = producer_overlap(x, cut, lower, (percentile - lower_percentile) / 100.0)
    allowed = max(HIDDEN_MIN_PCT, HIDDEN_REL * 100.0 * float(np.mean(x >= cut)))
    return CytokineCut(cut, f"control P{percentile:g}", hidden, allowed, hidden <= allowed,
                       f"about {hidden:.2g} % of the parent sit in the overlap with the control's negatives")
