"""Placement of a quadrant (CD4/CD8 inside CD3+): both axis cuts together, from 1-D
thresholds or, where those are missing or implausible, a 2-D Gaussian mixture."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gating.adaptive.state import MIN_PLACEMENT_EVENTS, Walk
from gating.adaptive.thresholds import MIXTURE_HOW, VALLEY_HOW, SINGLE_HOW, marker_threshold, two_component_fit
from gating.panel import Panel
from gating.qc import quadrant_check

# A quadrant cut leaving less than this share of the parent on one side is implausible
# for CD4/CD8 inside CD3+ (blood T cells hold several % of each): the 2-D method is tried.
QUADRANT_MIN_SHARE = 0.01
# A 1-D density valley is taken for a quadrant cut only when the axis holds two resolved
# populations: Ashman's D of its two-component mixture at least this (the usual bound).
# A single smear has ripples a valley finder takes for a dip (SEB tube INF124: CD4 and CD8
# one population each in CD3+, D 1.9 and 1.1, valleys on noise; resolved tubes: D >= 3.5).
QUADRANT_MIN_D = 2.0
# Events the D above is measured on (seeded subsample): its value is stable from ~1000
# events, and the fit is the placement's dearest step after the scatter mixture.
QUADRANT_D_EVENTS = 2_000
# A 2-D placement whose populations keep less than this modelled share in their own
# quadrant (diagonal clouds cut by axis-parallel lines) is flagged for review.
QUADRANT_MIN_RECOVERY = 0.9
# How a quadrant's cuts are placed: "auto" (1-D valleys, 2-D mixture for an axis whose
# 1-D cut is missing or implausible), "mixture_2d" (always the 2-D mixture when it
# resolves the pair), "valley_1d" (never the 2-D mixture).
QUADRANT_MODES = ("auto", "mixture_2d", "valley_1d")


@dataclass
class QuadrantFit:
    """Result of :func:`quadrant_mixture`: the two axis cuts and how well they fit.

    ``cut_x``/``cut_y`` are logicle values on the first (x, e.g. CD4) and second (y, e.g.
    CD8) marker; ``separation`` is the Mahalanobis distance between the x+y- and x-y+
    components; ``recovery`` is the modelled share of events lying in the same quadrant as
    most of their mixture component (1 when no component is cut by a line); ``k`` is the
    number of mixture components chosen by BIC.
    """

    cut_x: float
    cut_y: float
    separation: float
    recovery: float
    k: int
    means: tuple[tuple[float, float], tuple[float, float]]  # (x+y- mean, x-y+ mean)
    weights: tuple[float, float]


def quadrant_mixture(x: np.ndarray, y: np.ndarray, seed: int = 0, k_range: tuple[int, int] = (2, 6),
                     min_weight: float = 0.01, min_d: float = 2.0,
                     max_fit: int = 10_000) -> QuadrantFit | None:
    """Quadrant cuts for two markers (x, y: e.g. CD4, CD8) from a 2-D Gaussian mixture.

    Used for a quadrant (CD4/CD8 inside CD3+) when the 1-D density valley of an axis is
    missing or implausible: compensation spread, or a population that is dim on one axis,
    can fill both 1-D valleys while the two populations stay apart in the plane, in
    particular along the anti-diagonal when their spread is correlated.

    Method: ``GaussianMixture`` with full covariances on the (x, y) logicle values of up to
    ``max_fit`` events (seeded subsample, fixed ``random_state``); the number of
    components k in ``k_range`` minimises the BIC. Up to 6, not 4: besides the four
    quadrant populations, a negative population is skewed on the logicle scale and takes a
    second component; with k capped at 4 the mixture then merged CD4-CD8- into CD4+CD8-
    on simulated tubes and put the CD4 cut inside the CD8 T cells. Components are labelled by their means:
    among those holding at least ``min_weight`` of the events, the one with the largest
    contrast mean_x - mean_y is the x+y- population (CD4+CD8-) and the one with the smallest
    is x-y+ (CD4-CD8+). This ordering holds whatever the brightness of either marker, since
    x+y- has the highest x and lowest y level of the four quadrant populations. The pair is
    accepted only if (1) the x+y- component is higher on x and lower on y than the x-y+
    component (they are offset across the anti-diagonal, not along the diagonal), and (2)
    their Mahalanobis distance under the average of their two covariances is at least
    ``min_d`` (the 2-D form of Ashman's D; 2 is the usual bound for resolved populations).
    Each cut lies between the two components' means on its axis, at the point of equal
    standardised distance from both, t = (mu1*s2 + mu2*s1) / (s1 + s2) with s the
    components' marginal SDs: each population is cut at the same number of its own SDs, so
    neither loses a larger share of its events to the other, whatever their sizes. Cuts stay
    axis-parallel, i.e. Gating-ML rectangle gates. ``recovery`` checks the cuts against the
    whole model: for each component holding at least ``min_weight`` of the events, the
    largest of its four quadrant probabilities (bivariate normal), averaged with the
    components' weights; i.e. the share of events that the quadrant puts with the majority
    of their component. A cut through a large population (or through pieces of one the
    mixture split) lowers it by about half that population's share.

    Returns None when the pair is not accepted (e.g. a single cloud elongated along the
    diagonal: every component is high or low on both markers at once).

    Failure modes: a population far from Gaussian on the logicle scale (curved by
    compensation spread) is split into several components; the extreme-contrast component
    is then only its tip and the cut moves into the population. Populations elongated along
    the diagonal can be resolved in 2-D yet overlap the axis-parallel quadrants. Both show as
    ``recovery`` well below 1 (the caller flags the sample; the percentages are then biased
    by up to about 1 - recovery). A population smaller than ``min_weight``, or one the
    mixture merges into a neighbour, is not seen: the result is None.
    """
    from scipy.stats import multivariate_normal, norm
    from sklearn.mixture import GaussianMixture

    pts = np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) < MIN_PLACEMENT_EVENTS:
        return None
    if len(pts) > max_fit:
        pts = pts[np.random.default_rng(seed).choice(len(pts), max_fit, replace=False)]
    best = None
    for k in range(k_range[0], k_range[1] + 1):
        g = GaussianMixture(k, covariance_type="full", random_state=seed, n_init=1, max_iter=300,
                            reg_covar=1e-6).fit(pts)
        bic = g.bic(pts)
        if best is None or bic < best[0]:
            best = (bic, g)
    g = best[1]
    big = [i for i in range(g.n_components) if g.weights_[i] >= min_weight]
    if len(big) < 2:
        return None
    contrast = {i: g.means_[i, 0] - g.means_[i, 1] for i in big}
    a = max(big, key=contrast.get)  # x+y-
    b = min(big, key=contrast.get)  # x-y+
    ma, mb = g.means_[a], g.means_[b]
    if not (ma[0] > mb[0] and mb[1] > ma[1]):
        return None
    ca, cb = g.covariances_[a], g.covariances_[b]
    d = ma - mb
    sep = float(np.sqrt(d @ np.linalg.solve((ca + cb) / 2, d)))
    if sep < min_d:
        return None
    sa, sb = np.sqrt(np.diag(ca)), np.sqrt(np.diag(cb))
    cut = (ma * sb + mb * sa) / (sa + sb)
    kept = 0.0
    for i in big:
        mu, cov = g.means_[i], g.covariances_[i]
        sd = np.sqrt(np.diag(cov))
        px, py = norm.cdf(cut[0], mu[0], sd[0]), norm.cdf(cut[1], mu[1], sd[1])
        both = float(multivariate_normal(mu, cov).cdf(cut))  # P(x < tx, y < ty)
        quadrants = (both, py - both, px - both, 1.0 - px - py + both)
        kept += g.weights_[i] * max(quadrants)
    # Weighted, not the worst component: a small broad component gathering two minor
    # populations (double positives and a tail) may straddle a cut without biasing much.
    recovery = kept / float(sum(g.weights_[i] for i in big))
    return QuadrantFit(float(cut[0]), float(cut[1]), sep, float(recovery), g.n_components,
                       ((float(ma[0]), float(ma[1])), (float(mb[0]), float(mb[1]))),
                       (float(g.weights_[a]), float(g.weights_[b])))


def quadrant_pairs(panel: Panel) -> dict[tuple[str, frozenset], tuple[str, str]]:
    """(parent, {x, y}) -> (x, y) for every quadrant of the panel.

    A quadrant is four populations of one parent whose gates are the four sign combinations
    of the same two ``valley`` markers (CD4+CD8-, CD4-CD8+, CD4+CD8+, CD4-CD8-); x is the
    marker named first. Recognised from the hierarchy, so a panel needs no extra key.
    """
    groups: dict[tuple[str, frozenset], set] = {}
    order: dict[tuple[str, frozenset], tuple[str, str]] = {}
    for spec in panel.populations:
        if spec.method != "markers" or len(spec.gate) != 2:
            continue
        a, b = spec.gate
        if a.marker == b.marker or any(panel.markers[t.marker].threshold != "valley" for t in spec.gate):
            continue
        if any(t.sign == "lo" for t in spec.gate):
            continue
        key = (spec.parent, frozenset((a.marker, b.marker)))
        signs = {a.marker: a.positive, b.marker: b.positive}
        order.setdefault(key, (a.marker, b.marker))
        x, y = order[key]
        groups.setdefault(key, set()).add((signs[x], signs[y]))
    return {k: order[k] for k, combos in groups.items() if len(combos) == 4}


def place(x: str, y: str, parent: str, walk: Walk) -> None:
    """Cuts of both quadrant axes, put in ``walk.cache``; one quadrant QC row.

    Both axes are placed together (not one marker at a time) because the 2-D fallback
    needs the two markers on the same events and sets both cuts from one model.
    """
    pmask = walk.masks[parent]
    panel, cache = walk.panel, walk.cache
    sel = pmask if pmask.sum() >= MIN_PLACEMENT_EVENTS else np.ones_like(pmask)
    if sel is not pmask:
        walk.too_few(parent, int(pmask.sum()))
    vals = {m: walk.prep.fluor[m][sel] for m in (x, y)}
    plausible = {}
    for m in (x, y):
        t, how = marker_threshold(vals[m], panel.markers[m].majority)
        share = float(np.mean(vals[m] >= t))
        plausible[m] = how in (VALLEY_HOW, MIXTURE_HOW) and min(share, 1 - share) >= QUADRANT_MIN_SHARE
        if plausible[m] and how == VALLEY_HOW:
            fit = two_component_fit(vals[m], seed=walk.seed, max_fit=QUADRANT_D_EVENTS)
            if fit is not None and fit[1] < QUADRANT_MIN_D:
                plausible[m] = False
                how = f"{how} {SINGLE_HOW} (Ashman's D {fit[1]:.2f} < {QUADRANT_MIN_D:g})"
        cache[(m, parent)] = (t, how)
    if walk.quadrant == "mixture_2d":
        redo = [x, y]
    elif walk.quadrant == "valley_1d":
        redo = []
    else:
        redo = [m for m in (x, y) if not plausible[m]]
    fit = quadrant_mixture(vals[x], vals[y], seed=walk.seed) if redo else None
    if fit is not None:
        label = f"2-D mixture (k={fit.k}, D={fit.separation:.1f}, recovery={fit.recovery:.2f})"
        for m, cut in ((x, fit.cut_x), (y, fit.cut_y)):
            if m in redo:
                cache[(m, parent)] = (cut, label)
    for m in (x, y):
        walk.axis_qc(m, parent, vals[m])
    tx, ty = cache[(x, parent)][0], cache[(y, parent)][0]
    sides = [float(np.mean(vals[x] >= tx)), float(np.mean(vals[y] >= ty))]
    smallest = min(min(v, 1 - v) for v in sides)
    where = (x, y, walk.ids[parent], parent)
    if fit is not None:
        walk.qc.append(quadrant_check(*where, "mixture_2d", fit.recovery, fit.recovery >= QUADRANT_MIN_RECOVERY,
                                      QUADRANT_MIN_RECOVERY))
    elif all(plausible.values()):
        # Also reached when mixture_2d is forced but the mixture refuses the pair:
        # the 1-D cuts are sound, so nothing is flagged.
        walk.qc.append(quadrant_check(*where, "valley_1d", smallest, True))
    else:
        # Neither method resolves the pair: the 1-D cuts stay (one of them implausible)
        # and the sample goes to review.
        walk.qc.append(quadrant_check(*where, "unresolved", smallest, False))
