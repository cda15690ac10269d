"""Cytokine producers of a stimulated tube: the cut between them and the negative cells of
the same parent, and whether the data separate the two (issue 13 point 5).

Two paths. With the unstimulated control tube (:func:`control_cytokine_cut`) the
negatives' distribution is measured, but only where the control matches the tube's
negatives, is large enough for its 99.9th percentile, and the producers stand clear of
it. Without it (:func:`cytokine_threshold`) it is not, and no shape assumed for it holds
on every tube: the value is given only when the producers can be told apart from the
negatives in the tube itself. Either way, when the data do not support a value the cut is
``resolved`` False with a ``reason`` a lab person can read, and the Th values it sets are
left empty. The bound a value must meet is the Th accuracy bound, :func:`value_bound`.
Both paths judge hidden producers by the same mirror (:func:`mirrored_hidden`); a control
replaces the no-control path's model of the negatives' flank (:func:`flank_excess`) by the
control's own events (:func:`control_excess`).

Formulas (each function's docstring gives its own): the negatives' mode and upper-flank
SD (:func:`negative_mode_spread`); the producers hidden below a cut by reflection of the
producers' population about its centre (:func:`mirrored_hidden`); the excess of the
negatives' upper flank over a normal upper half (:func:`flank_excess`) with its standard
error by random groups (:func:`flank_excess_se`); with a control, the excess of the tube
over the control in a window below the cut with its standard error
(:func:`control_excess`), the alignment of the control's negatives to the tube's
(:func:`control_alignment`) and the background a small control leaves above its cut
(:func:`control_background`).
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
# Control path (:func:`control_cytokine_cut`). The window just below the control's cut
# whose excess counts producers the cut misses starts at the control's 97.72th percentile
# (mode + 2 SD of a normal); a deeper one, for producers as dim as the negatives, at its
# 84.13th (+1 SD).
CONTROL_NEAR_PERCENTILE = 97.72
CONTROL_DEEP_PERCENTILE = 84.13
# With no producer population above the cut, the excess just below it plus this many SE
# must fit in the bound: a value near 0 needs the control to exclude hidden producers.
CONTROL_NOPOP_Z = 1.0
# The control's negatives are aligned to the tube's (location and spread of the lower
# halves) only when they differ by more than this many SE: by less, the difference is
# sampling noise or the spillover spread that stimulated cells add.
ALIGN_Z = 5.0
# Background of the control's cut: its one-sided 95 % upper bound must fit in the bound, else
# the control is too small to set the cut and the tube's own negatives are used.
BACKGROUND_Z = 1.645
# What resolves dim producers that a control cannot separate.
_DIM_REMEDY = "a brighter stain, or more events in both tubes, resolves it"


def value_bound(value_pct: float) -> float:
    """Largest error accepted for a Th share, in points: max(0.5, 0.15 x ``value_pct``)."""
    return max(BOUND_ABS_PCT, BOUND_REL * value_pct)


@dataclass(frozen=True)
class CytokineCut:
    """A cytokine cut and whether the data separate the producers from the negatives.

    ``cut``: logicle value (events ``>=`` it are producers); ``how``: the method, for
    ``flow_qc``; ``hidden_pct``: the estimate that decided (producers the cut misses, or the
    negatives' unexplained upper flank), % of the parent; ``allowed_pct``: what a value may
    absorb; ``resolved``: the value can be given; ``reason``: what the data show when not;
    ``remedy``: what would resolve it (empty: the default of
    :func:`gating.qc.producers_not_separated`).
    """

    cut: float
    how: str
    hidden_pct: float
    allowed_pct: float
    resolved: bool
    reason: str = ""
    remedy: str = ""


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
    docstring): 1.1 % of values outside the bound (the control path: 0.1 %), 75 % NULL
    (control: 67 %); on log-normal negatives no NULL at full brightness, 47 % at 0.3.
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
        hidden, through = _cut_through(x, cut, centre, above, allowed, how)
        if through is not None:
            return through
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




def _cut_through(x: np.ndarray, cut: float, centre: float, above: np.ndarray, allowed: float,
                 how: str, remedy: str = "") -> tuple[float, CytokineCut | None]:
    """Producers below ``cut`` by :func:`mirrored_hidden` about min(``centre``, median of
    ``above``), and the unresolved cut when they exceed :data:`MIRROR_SHARE` x ``allowed``."""
    hidden = mirrored_hidden(x, cut, min(centre, float(np.median(above))))
    if hidden <= MIRROR_SHARE * allowed:
        return hidden, None
    return hidden, CytokineCut(cut, how, hidden, MIRROR_SHARE * allowed, False,
                               f"their positive population is cut through: about {hidden:.2g} % of the parent "
                               f"lie below the cut (mirror of the population above it)", remedy)


def control_excess(x: np.ndarray, ref: np.ndarray, lower: float, cut: float) -> tuple[float, float]:
    """Producers of the stimulated tube ``x`` in [``lower``, ``cut``) beyond what the control's
    negatives ``ref`` put there, % of the parent, and its standard error.

    Formula: with S and C the shares of ``x`` and ``ref`` in the window, v the share of ``x``
    at or above ``cut``, n and n_c their sizes, the tube is (1 - p) negatives and p
    producers; producers outside the window are (about) all above the cut, so
    1 - p = 1 - v - H and S = (1 - p) C + H give

        H = 100 (S - (1 - v) C) / (1 - C),
        SE = 100 sqrt( S (1 - S) / n + (1 - v)² C (1 - C) / n_c ) / (1 - C),

    the binomial variance of the tube's count and that of the control's share between two
    of its sample quantiles (C (1 - C) / n_c; David & Nagaraja, *Order Statistics*, 3rd ed.,
    2003, 2.3: the mass between order statistics is Beta distributed). H is what a cut at
    ``cut`` misses of the producers that reach ``lower``; producers below ``lower`` are not
    counted. Negative H (beyond its SE): the tube has fewer events there than the control
    predicts, its negatives sit lower than the control's (:func:`control_alignment`).
    """
    x = np.asarray(x, dtype=float)
    ref = np.asarray(ref, dtype=float)
    v = float(np.mean(x >= cut))
    inside = float(np.mean((x >= lower) & (x < cut)))
    c = float(np.mean((ref >= lower) & (ref < cut)))
    h = (inside - (1.0 - v) * c) / (1.0 - c)
    se = math.sqrt(inside * (1.0 - inside) / x.size + (1.0 - v) ** 2 * c * (1.0 - c) / ref.size) / (1.0 - c)
    return 100.0 * h, 100.0 * se


@dataclass(frozen=True)
class ControlAlignment:
    """How the control's negatives sit against the tube's: ``shift`` of the middle and
    ``scale`` of the lower spread (tube / control, in control lower-flank SD), whether they
    differ beyond noise (``differs``), the control moved onto the tube (``aligned``; the
    control itself when they do not differ), and ``effect``: by how much the value, % of
    the parent, moves when the control is aligned (background the tube's negatives add
    above the cut, or producers a too-bright control's cut misses)."""

    shift: float
    scale: float
    differs: bool
    aligned: np.ndarray
    effect: float


def control_alignment(x: np.ndarray, xc: np.ndarray, cut: float) -> ControlAlignment:
    """The control's negatives ``xc`` against the stimulated tube's ``x``, on their lower halves.

    Method: below their medians the two tubes hold negatives only (producers sit above),
    so with v the share of ``x`` at or above ``cut`` the tube's negatives' median and
    15.87th percentile are Q_x(0.5 (1 - v)) and Q_x(0.1587 (1 - v)). With s_c = Q_c(0.5) -
    Q_c(0.1587) (one SD of a normal lower flank):

        shift = (Q_x(0.5 (1 - v)) - Q_c(0.5)) / s_c,
        scale = (Q_x(0.5 (1 - v)) - Q_x(0.1587 (1 - v))) / s_c,

    with standard errors 1.2533 sqrt(1/n + 1/n_c) and 1.485 scale sqrt(1/n + 1/n_c)
    (asymptotic variance of sample quantiles of a normal, p (1 - p) / (n f(Q_p)²), and of
    the difference of two; Serfling, *Approximation Theorems of Mathematical Statistics*,
    1980, 2.3.3). They differ when either exceeds :data:`ALIGN_Z` SE: the aligned control
    is Q_x(0.5 (1 - v)) + (xc - Q_c(0.5)) scale. ``effect``: the tube's negatives' share
    above ``cut`` beyond the control's (aligned control above ``cut`` less the control's own
    share) when the aligned 99.9th percentile c' lies above ``cut``; else the tube's
    events in [c', ``cut``) less the negatives expected there, the producers the control's
    too-high cut misses.
    """
    x = np.asarray(x, dtype=float)
    xc = np.asarray(xc, dtype=float)
    v = float(np.mean(x >= cut))
    low_c, mid_c = np.percentile(xc, [15.87, 50.0])
    low_x, mid_x = np.quantile(x, [0.1587 * (1.0 - v), 0.5 * (1.0 - v)])
    spread = max(float(mid_c - low_c), 1e-9)
    shift = float(mid_x - mid_c) / spread
    scale = float(mid_x - low_x) / spread
    k = math.sqrt(1.0 / x.size + 1.0 / xc.size)
    if abs(shift) <= ALIGN_Z * 1.2533 * k and abs(scale - 1.0) <= ALIGN_Z * 1.485 * scale * k:
        return ControlAlignment(shift, scale, False, xc, 0.0)
    aligned = mid_x + (xc - mid_c) * scale
    own = float(np.mean(xc >= cut))
    moved = float(np.mean(aligned >= cut))
    top = float(np.percentile(aligned, CONTROL_PERCENTILE))
    if top >= cut:
        effect = 100.0 * (moved - own)
    else:
        effect = 100.0 * (float(np.mean((x >= top) & (x < cut))) - (1.0 - v) * max(own - moved, 0.0))
    return ControlAlignment(shift, scale, True, aligned, effect)


def control_background(n: int, n_control: int, above_control: int, z: float = BACKGROUND_Z) -> float:
    """Upper bound of the negatives a control's cut leaves above it in the tube, % of the parent.

    Formula: q = max(k, 1) / n_c, the control's share at or above its own cut (k events of
    n_c; at least one: the top event of a small control), and

        B = 100 (q + z sqrt(q / n + q / n_c)),

    q plus ``z`` SE of the tube's count of negatives above the cut (Poisson, q/n) and of the
    control's share itself (q/n_c). A control of a few hundred events puts its 99.9th
    percentile at its top event or two: q is then a few per mille, and the tube's
    background is known only to about a point.
    """
    q = max(above_control, 1) / max(n_control, 1)
    return 100.0 * (q + z * math.sqrt(q / max(n, 1) + q / max(n_control, 1)))


def control_cytokine_cut(x: np.ndarray, x_control: np.ndarray,
                         percentile: float = CONTROL_PERCENTILE) -> CytokineCut | None:
    """Cytokine cut from the unstimulated control, and whether the control supports a value.

    Cut: the control's ``percentile`` (:func:`~gating.adaptive.thresholds.control_threshold`)
    on the same parent. The value v is the tube's share at or above it; A = :func:`value_bound`
    of v. Checks, in order (not resolved at the first that fails, with its reason):

    0. Size: :func:`control_background` > A: the control is too small to set the cut within
       the bound; returns None and the caller uses the tube's own negatives
       (:func:`cytokine_threshold`), as without a control.
    1. The negatives match: :func:`control_alignment`; when they differ beyond noise and
       aligning the control would move the value by more than :data:`MIRROR_SHARE` x A.
       When they differ by less, the aligned control is the reference of the checks below.
    2. Producers above the cut form a population (a density valley with its upper peak above
       the cut, or :func:`positive_mode` of the events above it, SD from the control's
       :func:`negative_mode_spread`): the share below the cut by :func:`mirrored_hidden` at
       most :data:`MIRROR_SHARE` x A, and the producers just below the cut,
       H = :func:`control_excess` between the reference's 97.72th and 99.9th percentiles,
       not significantly beyond A: H - :data:`FLANK_Z` SE <= A.
       No population above the cut: H + :data:`CONTROL_NOPOP_Z` SE <= A (a value near 0
       only when the control excludes hidden producers).
    3. Producers as dim as the negatives: :func:`control_excess` from the reference's
       84.13th percentile, H - :data:`FLANK_Z` SE <= A.

    The tube's own cut (:func:`cytokine_threshold`) is not consulted when the control
    decides: on the seeded sweeps (20,000 and 2,000 events, controls of the tube's size and
    a quarter of it, brighter and dimmer controls; 3,192 cuts) the two disagreed beyond
    the bound on 7 cuts, and the control's value was the right one on all 7.

    Measured on seeded sweeps (``benchmarks/sweep_th_subsets.py``, figures in its
    docstring): at 20,000 events 0.1 % of Th values outside the bound (before these checks
    8.2 %), 67 % NULL (without a control 75 %), no NULL on log-normal negatives at half or
    full brightness. Failure modes: producers inside the negatives' spread (below their 84th
    percentile) are not counted, so a few tenths of a point of very dim producers can be
    missed; a control whose negatives differ from the tube's in the upper tail only
    (shape, not location or spread) is not detected and reads as producers (NULL) or
    hides them.
    """
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    xc = np.asarray(x_control, dtype=float)
    xc = xc[np.isfinite(xc)]
    cut = control_threshold(xc, percentile)
    how = f"control P{percentile:g}"
    above = x[x >= cut]
    value = 100.0 * above.size / max(x.size, 1)
    allowed = value_bound(value)
    if control_background(x.size, xc.size, int(np.count_nonzero(xc >= cut))) > allowed:
        return None
    align = control_alignment(x, xc, cut)
    if align.differs and abs(align.effect) > MIRROR_SHARE * allowed:
        side = "lower" if align.shift > 0 else "higher"
        return CytokineCut(cut, how, abs(align.effect), MIRROR_SHARE * allowed, False,
                           f"the control's negative cells do not match this tube's (their middle sits "
                           f"{abs(align.shift):.2g} SD {side}, their spread x{1 / align.scale:.2f}); aligned to "
                           f"this tube the control would move the value by about {align.effect:+.2g} % of the "
                           f"parent", "check that the control tube is this sample's and was acquired with the "
                           "same settings (or leave it out to gate on the tube's own negatives)")
    ref = align.aligned
    near, deep, top = np.percentile(ref, [CONTROL_NEAR_PERCENTILE, CONTROL_DEEP_PERCENTILE, percentile])
    hidden, se = control_excess(x, ref, float(near), float(top))
    centre = _population_above(x, above, cut, xc)
    if centre is not None:
        _mirror, through = _cut_through(x, cut, centre, above, allowed, how, _DIM_REMEDY)
        if through is not None:
            return through
        if hidden - FLANK_Z * se > allowed:
            return CytokineCut(cut, how, hidden, allowed, False,
                               f"about {hidden:.2g} ± {se:.1g} % of the parent sit just below the cut "
                               f"(between the control's {CONTROL_NEAR_PERCENTILE:.3g}th and {percentile:g}th "
                               f"percentiles) beyond the control's own share there: producers too dim to "
                               f"separate from the negatives", _DIM_REMEDY)
    elif hidden + CONTROL_NOPOP_Z * se > allowed:
        return CytokineCut(cut, how, hidden + CONTROL_NOPOP_Z * se, allowed, False,
                           f"no producer population stands above the control's cut, and up to "
                           f"{max(hidden + CONTROL_NOPOP_Z * se, 0):.2g} % of the parent could be dim producers "
                           f"just below it (excess over the control between its {CONTROL_NEAR_PERCENTILE:.3g}th and "
                           f"{percentile:g}th percentiles: {hidden:.2g} ± {se:.1g} %)", _DIM_REMEDY)
    dim, dim_se = control_excess(x, ref, float(deep), float(top))
    if dim - FLANK_Z * dim_se > allowed:
        return CytokineCut(cut, how, dim, allowed, False,
                           f"about {dim:.2g} ± {dim_se:.1g} % of the parent sit among the control's upper "
                           f"negatives ({CONTROL_DEEP_PERCENTILE:.3g}th to {percentile:g}th percentile) beyond the "
                           f"control's own share there: producers as dim as the negative cells", _DIM_REMEDY)
    return CytokineCut(cut, how, max(hidden, 0.0), allowed, True)


def _population_above(x: np.ndarray, above: np.ndarray, cut: float, xc: np.ndarray) -> float | None:
    """Centre of a producer population above a control's ``cut``, or None: the upper peak of
    a density valley of ``x`` that lies above the cut (the valley at most half a control SD
    below it), else :func:`positive_mode` of ``above`` in bins of the control's upper-flank SD."""
    s = negative_mode_spread(xc)[1]
    found = valley_and_peak(x)
    if found is not None and found[0] >= cut - 0.5 * s and found[1] > cut:
        return found[1]
    mode = positive_mode(above, cut, s)
    return None if mode is None else mode[1]
