"""The built-in adaptive T-cell panel: gate positions computed from each sample's own data.

The hierarchy and marker aliases come from a :class:`gating.panel.Panel` (default
``gating/panels/tcell.toml``). :func:`build_adaptive_gating` places every gate on the
sample and returns a flowkit ``GatingStrategy`` made of ordinary Gating-ML 2.0 gates
(polygon gates on linear scatter, rectangle gates on logicle-transformed compensated
fluorescence, the file's spillover embedded as a ``spectrumMatrix``). Counts are then taken
by evaluating that strategy (``gating.evaluator.apply_strategy``), so the Gating-ML exported to
``flow_gates`` re-applied by flowkit to the same file gives the same counts.

Placement methods (each function's docstring gives its failure mode):

* ``Lymphocytes`` - :func:`lymphocyte_polygon`: Gaussian mixture on forward/side scatter:
  FSC-A/SSC-A, else height (FSC-H/SSC-H: FACSCalibur, FACScan), else unsuffixed scatter
  (FSC/SSC, FS/SS), each axis separately, with the vendor spellings of the panel's
  ``[scatter]`` table (:func:`assays.names.name_key`: case, spaces, ``_``/``-``
  ignored). Only a file without any forward or any side scatter channel is an
  ``InputError`` (quarantined).
* ``Singlets`` - :func:`singlet_band`: band of the FSC-H/FSC-A ratio. A file without a
  forward-scatter area/height pair gets no singlet gate (none is invented): ``Singlets``
  is left out, its children (``Live``, or ``CD3+`` without a viability dye) hang from
  ``Lymphocytes``, and ``flow_qc`` gets the passing row ``singlets_not_gated``
  (:data:`SINGLETS_NOT_GATED`), whose value says which half of the pair is missing:
  1 = no forward area (height or unsuffixed scatter only: FACSCalibur), 2 = no forward
  height, 3 = neither (a single unsuffixed forward scatter). Percentages of lymphocytes
  are then of the (Live) lymphocytes with any doublets the scatter gate lets in: most
  doublets already fall outside it (their side scatter adds up; on the simulated tubes
  the singlet gate removes < 0.1 % of the lymphocyte gate), but doublets of two small
  cells can stay and count once, with the markers of both cells.
* ``Live``, ``CD3+``, CD4/CD8 quadrant, CD25/CD127/FOXP3 - :func:`density_valley` on the
  parent population; without a valley :func:`mixture_threshold` (two resolved Gaussian
  components), and with a single population :func:`peak_threshold` on the side of the
  marker's expected minority (panel key ``majority``).
* a quadrant (four populations of one parent gated on the four sign combinations of two
  ``valley`` markers: CD4/CD8 inside CD3+) - each axis as above; an axis whose cut is not a
  valley or resolved 1-D mixture, or leaves less than ``QUADRANT_MIN_SHARE`` of the parent
  on one side, takes its cut from :func:`quadrant_mixture` (2-D Gaussian mixture on both
  markers). If that does not resolve the pair either, the 1-D cut stays and the quadrant QC
  row fails. The ``quadrant_<x>_<y>@<parent>:<method>`` row of ``flow_qc`` says which method
  placed the cuts (``valley_1d``, ``mixture_2d`` or ``unresolved``).
* cytokines - :func:`control_threshold` on the unstimulated control tube when given, else
  :func:`cytokine_threshold` on the negative population.

Gate positions are computed on at most ``max_events`` randomly chosen events (seeded):
the positions of a 1M-event tube are as good from 100k events and cost a tenth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from assays.errors import InputError
from assays.markers import match_markers
from assays.names import name_key
from assays.records import Channel, FcsSample
from gating.compensation import compensate_array
from gating.panel import GateTerm, Panel, PopulationSpec, load_panel
from gating.qc import (QcCheck, channel_ranges, events_acquired, margin_events, quadrant_check, separation,
                       separation_check, singlet_share, singlets_not_gated, stable_flow, unresolved_marker)

__all__ = [
    "AdaptiveGating",
    "GatePlacement",
    "build_adaptive_gating",
    "lymphocyte_polygon",
    "singlet_band",
    "density_valley",
    "mixture_threshold",
    "peak_threshold",
    "cytokine_threshold",
    "control_threshold",
    "QuadrantFit",
    "quadrant_mixture",
    "QUADRANT_MODES",
    "SINGLETS_NOT_GATED",
    "find_scatter",
]

COMP_ID = "spill"
SCATTER_XFORM = "scatter_linear"
FLUOR_XFORM = "logicle"
CONTROL_PERCENTILE = 99.9
NEGATIVE_K = 4.0
MIN_PLACEMENT_EVENTS = 100
# A quadrant cut leaving less than this share of the parent on one side is implausible
# for CD4/CD8 inside CD3+ (blood T cells hold several % of each): the 2-D method is tried.
QUADRANT_MIN_SHARE = 0.01
# A 2-D placement whose populations keep less than this modelled share in their own
# quadrant (diagonal clouds cut by axis-parallel lines) is flagged for review.
QUADRANT_MIN_RECOVERY = 0.9
# How a quadrant's cuts are placed: "auto" (1-D valleys, 2-D mixture for an axis whose
# 1-D cut is missing or implausible), "mixture_2d" (always the 2-D mixture when it
# resolves the pair), "valley_1d" (never the 2-D mixture).
QUADRANT_MODES = ("auto", "mixture_2d", "valley_1d")
# flow_qc row written instead of ``singlet_share`` when the file has no FSC area/height
# pair; passes; value = 1 (no forward area), 2 (no forward height) or 3 (neither).
SINGLETS_NOT_GATED = "singlets_not_gated"
VALLEY_HOW = "density valley"
MIXTURE_HOW = "no valley: two-component mixture boundary"


@dataclass
class GatePlacement:
    """How one adaptive gate was placed (kept for review and for ``flow_qc``)."""

    gate_id: str
    population: str
    method: str
    thresholds: dict[str, float] = field(default_factory=dict)  # marker -> logicle value
    note: str = ""


@dataclass
class AdaptiveGating:
    """Result of :func:`build_adaptive_gating`.

    ``strategy`` is a flowkit ``GatingStrategy``; ``names`` maps Gating-ML gate ids to the
    DESIGN.md population names; ``missing_optional`` lists populations left out because the
    file lacks their markers (NULL in ``immune_timeline``) and optional markers not found.
    """

    strategy: object
    names: dict[str, str]
    qc: list[QcCheck]
    missing_optional: list[str]
    channels: dict[str, Channel] = field(default_factory=dict)
    placements: list[GatePlacement] = field(default_factory=list)


# ----------------------------------------------------------------- placement functions

def lymphocyte_polygon(fsc: np.ndarray, ssc: np.ndarray, n_components: int = 5, seed: int = 0,
                       distance2: float = 5.991, n_vertices: int = 48,
                       max_fit: int = 20_000) -> tuple[np.ndarray, float]:
    """Polygon around the lymphocyte cloud on linear FSC-A/SSC-A.

    Method: a ``GaussianMixture`` (full covariances, ``n_components``) is fitted to the
    robustly standardised scatter of up to ``max_fit`` events. The lymphocyte component is the
    lowest-SSC component among those holding >= 5 % of events whose FSC mean is at least half
    the median FSC (which excludes debris). The gate is that component's ellipse at squared
    Mahalanobis distance ``distance2`` (95 % of a 2-D normal), written as a polygon.
    Returns the vertices (same units as the input) and a separation score: the smallest
    Mahalanobis distance from the lymphocyte mean to another component's mean, under the
    average of the two covariances.

    Failure mode: when lymphocytes are a minority among many small components (e.g. a lysed
    whole-blood tube with dominant granulocytes and debris), or when the lymphocyte cloud is
    split across two components, the chosen ellipse can be too small or sit on dead cells;
    the separation score and the ``lymphocytes`` count check flag such tubes.
    """
    from sklearn.mixture import GaussianMixture

    x = np.column_stack([fsc, ssc]).astype(float)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < 50:
        raise ValueError("too few events for the scatter mixture")
    rng = np.random.default_rng(seed)
    fit = x if len(x) <= max_fit else x[rng.choice(len(x), max_fit, replace=False)]
    center = np.median(fit, axis=0)
    scale = np.subtract(*np.percentile(fit, [75, 25], axis=0)) / 1.349
    scale[scale <= 0] = 1.0
    z = (fit - center) / scale
    gmm = GaussianMixture(n_components=n_components, covariance_type="full", random_state=seed,
                          n_init=1, max_iter=200, reg_covar=1e-4).fit(z)
    means = gmm.means_ * scale + center
    covs = gmm.covariances_ * np.outer(scale, scale)
    fsc_floor = 0.5 * float(np.median(fit[:, 0]))
    ok = [i for i in range(n_components) if gmm.weights_[i] >= 0.05 and means[i, 0] >= fsc_floor]
    if not ok:
        ok = [int(np.argmax(gmm.weights_))]
    k = min(ok, key=lambda i: means[i, 1])
    others = [i for i in range(n_components) if i != k and gmm.weights_[i] >= 0.02]
    sep = float("inf")
    for i in others:
        d = means[i] - means[k]
        sep = min(sep, float(np.sqrt(d @ np.linalg.solve((covs[i] + covs[k]) / 2, d))))
    vals, vecs = np.linalg.eigh(covs[k])
    angles = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    circle = np.column_stack([np.cos(angles), np.sin(angles)])
    vertices = means[k] + (circle * np.sqrt(vals * distance2)) @ vecs.T
    return vertices, sep


def singlet_band(area: np.ndarray, height: np.ndarray, k: float = 4.0,
                 top: float = 1.1) -> tuple[np.ndarray, float, float]:
    """Triangle (from the origin) holding events whose FSC-H/FSC-A ratio is in a band.

    Method: the ratio r = H/A of the parent's events has its median m and robust SD s
    (1.4826 MAD); singlets are m - k*s <= r <= m + k*s, written as a polygon with vertices
    (0,0), (top, top*lo), (top, top*hi) on the linear scale (``top`` above the largest value).
    Doublets, with area growing faster than height, fall below the band.
    Returns (vertices, lo, hi).

    Failure mode: if doublets are more than about a third of the parent, the median moves
    towards them and the band widens; the singlet-share check flags the tube.
    """
    ok = (area > 0) & np.isfinite(area) & np.isfinite(height)
    r = height[ok] / area[ok]
    m = float(np.median(r))
    s = 1.4826 * float(np.median(np.abs(r - m)))
    s = max(s, 1e-3 * m)
    lo, hi = m - k * s, m + k * s
    vertices = np.array([[0.0, 0.0], [top, top * lo], [top, top * hi]])
    return vertices, lo, hi


def _smoothed_density(x: np.ndarray, bins: int = 512, bandwidth: float | None = None):
    lo, hi = np.percentile(x, [0.05, 99.95])
    pad = 0.05 * (hi - lo + 1e-9)
    lo, hi = lo - pad, hi + pad
    hist, edges = np.histogram(x, bins=bins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    step = edges[1] - edges[0]
    if bandwidth is None:
        iqr = np.subtract(*np.percentile(x, [75, 25]))
        spread = min(float(np.std(x)), iqr / 1.349) or float(np.std(x)) or step
        # Half of Silverman's rule: Silverman over-smooths bimodal data, the very case here.
        bandwidth = 0.5 * 1.06 * spread * len(x) ** -0.2
    sd_bins = max(bandwidth / step, 1.0)
    half = int(4 * sd_bins) + 1
    kern = np.exp(-0.5 * (np.arange(-half, half + 1) / sd_bins) ** 2)
    dens = np.convolve(hist.astype(float), kern / kern.sum(), mode="same")
    return centers, dens


def density_valley(x: np.ndarray, min_prominence: float = 0.02, min_separation: float = 0.06,
                   max_dip: float = 0.7, bandwidth: float | None = None) -> float | None:
    """Position of the density minimum between the negative and positive peaks, or None.

    Method: a Gaussian-smoothed histogram (kernel density estimate, half Silverman
    bandwidth) of the logicle-transformed compensated values; peaks with a prominence of at
    least ``min_prominence`` of the highest peak are found (``scipy.signal.find_peaks``);
    the highest peak and the most prominent other peak at least ``min_separation`` away
    bound the search, and the threshold is the middle of the lowest stretch of density
    between them. It is accepted only if that density is below ``max_dip`` times the lower
    of the two peaks (a real valley, not a shoulder).

    Failure mode: a positive population smaller than ~1-2 % of the parent, or a smear with
    no dip (dim, continuous expression), gives no valley (None) and the caller falls back
    to :func:`peak_threshold`; three or more populations (dim and bright) put the valley
    between the two largest, which may not be the biologically meaningful one.
    """
    from scipy.signal import find_peaks

    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 100:
        return None
    centers, dens = _smoothed_density(x, bandwidth=bandwidth)
    peaks, props = find_peaks(dens, prominence=min_prominence * dens.max())
    if len(peaks) < 2:
        return None
    main = peaks[np.argmax(dens[peaks])]
    step = centers[1] - centers[0]
    far = [(p, pr) for p, pr in zip(peaks, props["prominences"])
           if abs(centers[p] - centers[main]) >= min_separation and p != main]
    if not far:
        return None
    other = max(far, key=lambda t: t[1])[0]
    a, b = sorted((main, other))
    seg = dens[a:b + 1]
    low = seg.min()
    if low > max_dip * min(dens[a], dens[b]):
        return None
    # The middle of the lowest stretch, not its first bin: a wide empty valley is common.
    flat = np.flatnonzero(seg <= low + 0.05 * (min(dens[a], dens[b]) - low))
    runs = np.split(flat, np.flatnonzero(np.diff(flat) > 1) + 1)
    best = min(runs, key=lambda r: seg[r].min())
    return float(centers[a] + step * (best[0] + best[-1]) / 2)


def mixture_threshold(x: np.ndarray, min_d: float = 2.0, seed: int = 0,
                      max_fit: int = 5_000) -> float | None:
    """Boundary of a two-component 1-D Gaussian mixture, when the two are resolved.

    Method: ``GaussianMixture(2)`` on the logicle values; the threshold is where the two
    posterior probabilities are equal, between the means. Accepted only if Ashman's
    D = sqrt(2)·|mu1 - mu2| / sqrt(s1² + s2²) is at least ``min_d`` (2 is the usual bound for a
    clean bimodal split); otherwise None.

    Used when the density has no valley because compensation spread fills it (dim CD3 on an
    older instrument). Failure mode: a skewed single population can be split in two with
    D just above 2, putting the threshold inside it; the separation check reports it.
    """
    from sklearn.mixture import GaussianMixture

    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 100:
        return None
    if x.size > max_fit:
        x = np.random.default_rng(seed).choice(x, max_fit, replace=False)
    g = GaussianMixture(2, random_state=seed).fit(x[:, None])
    mu = g.means_.ravel()
    sd = np.sqrt(g.covariances_.ravel())
    d = math.sqrt(2) * abs(mu[0] - mu[1]) / math.sqrt(sd[0] ** 2 + sd[1] ** 2)
    if d < min_d:
        return None
    grid = np.linspace(mu.min(), mu.max(), 512)
    post = g.predict_proba(grid[:, None])[:, 0]
    return float(grid[np.argmin(np.abs(post - 0.5))])


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


def peak_threshold(x: np.ndarray, k: float = NEGATIVE_K, side: str = "above") -> float:
    """Threshold ``k`` robust SDs away from the main (most frequent) population.

    Method: the mode m of the smoothed density is the centre of the main population; its
    spread s is measured on the side facing away from the rare population only (for
    ``side='above'``, s = m - P(0.3173·q) where q is the share of events below m: one SD
    below the mode of a normal population), so a positive tail does not inflate it.
    The threshold is m + k*s (``side='above'``) or m - k*s (``side='below'``).

    Failure mode: a main population that is not normal on the logicle scale (skewed by
    compensation spread) gives a few ‰ of false positives or misses the dimmest positives.
    """
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    centers, dens = _smoothed_density(x)
    m = float(centers[np.argmax(dens)])
    if side == "above":
        q = float(np.mean(x < m))
        s = m - float(np.quantile(x, q * 0.3173)) if q > 0 else 0.0
        return m + k * max(s, 1e-3)
    q = float(np.mean(x > m))
    s = float(np.quantile(x, 1 - q * 0.3173)) - m if q > 0 else 0.0
    return m - k * max(s, 1e-3)


def cytokine_threshold(x: np.ndarray, k: float = NEGATIVE_K, min_k: float = 2.0) -> tuple[float, str]:
    """Cytokine threshold without a control tube, from the stimulated tube's negatives.

    Method: :func:`peak_threshold` (mode + ``k`` robust SD of the cytokine-negative main
    population). When the density also shows a valley above the negatives (a clearly
    separated positive population), the valley is used instead, provided it lies at least
    ``min_k`` robust SD above the mode: the valley keeps dim producers (IL-4 is dim) that a
    fixed k·SD cut loses, and the floor keeps a ripple in the negative peak from being taken
    for a valley.

    Failure mode: producers that form a continuous smear out of the negatives (weak
    stimulation) give no valley, and the k·SD cut then misses the dimmest producers; a
    negative population much wider than normal on the logicle scale gives false positives.
    Give the unstimulated control (``control_of``) for such panels.
    """
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    cut = peak_threshold(x, k=k, side="above")
    floor = peak_threshold(x, k=min_k, side="above")
    valley = density_valley(x)
    if valley is not None and floor <= valley:
        return valley, "density valley above the negatives"
    return cut, f"negative mode + {k:g} rSD"


def control_threshold(x_control: np.ndarray, percentile: float = CONTROL_PERCENTILE) -> float:
    """Cytokine threshold from the unstimulated control: its ``percentile`` on the same parent.

    Method: the control tube is gated with the same adaptive hierarchy up to the parent
    population (CD4+CD8-); the threshold is the 99.9th percentile of its cytokine values,
    i.e. at most 0.1 % background called positive. (Not 99.5: every background event called
    positive adds straight to Th17 or Th2, and 0.5 points is half their error budget.)

    Failure mode: a control with few parent events (< 1000) gives a noisy percentile, and a
    control acquired with different settings than the stimulated tube shifts the threshold.
    """
    x = np.asarray(x_control, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.percentile(x, percentile))


# ----------------------------------------------------------------- preparation

@dataclass
class _Prepared:
    n_total: int
    rows: np.ndarray  # indices of the events used for placement
    scatter: dict[str, np.ndarray]  # scatter parameter (FSC-A, FSC-H, ...) -> linear-scaled values
    fluor: dict[str, np.ndarray]  # marker -> logicle values of compensated data
    channels: dict[str, Channel]
    pnn: list[str]
    has_comp: bool = False
    scatter_pnn: dict[str, str] = field(default_factory=dict)  # scatter parameter -> $PnN
    scatter_index: dict[str, int] = field(default_factory=dict)  # scatter parameter -> column


def _scatter_params(panel: Panel) -> dict[str, tuple[str, ...]]:
    """Scatter parameter -> spellings: the panel's ``[scatter]`` table, plus any parameter
    a gate names that the table lacks (matched by its own name)."""
    params = {k: tuple(v) for k, v in panel.scatter.items()}
    for spec in panel.populations:
        for axis in spec.channel_choices or tuple((c,) for c in spec.channels):
            for c in axis:
                params.setdefault(c, (c,))
    return params


def find_scatter(sample: FcsSample, panel: Panel) -> dict[str, Channel]:
    """The file's channel for each scatter parameter of ``panel`` it has, by ``$PnN``.

    A parameter's spellings are tried in the panel's order; a channel serves one
    parameter only (the first that claims it, in the table's order).
    """
    by_key: dict[str, Channel] = {}
    for c in sample.channels:
        by_key.setdefault(name_key(c.pnn), c)
    out: dict[str, Channel] = {}
    taken: set[int] = set()
    for param, spellings in _scatter_params(panel).items():
        for name in spellings:
            ch = by_key.get(name_key(name))
            if ch is not None and ch.index not in taken:
                out[param] = ch
                taken.add(ch.index)
                break
    return out


def _unsaturated(v: np.ndarray) -> np.ndarray:
    """Events below the top of a linear-scaled scatter channel: below 0.999 of the scale,
    and not in a pile-up at the channel's largest value (a saturated detector whose
    range is below the panel's ``scatter_range``, e.g. 1024-channel FACSCalibur data)."""
    ok = v < 0.999
    if v.size:
        top = float(np.max(v))
        at_top = v >= top
        if 1 < int(at_top.sum()) < 0.5 * v.size:
            ok &= ~at_top
    return ok


def _find_channel(sample: FcsSample, name: str) -> int | None:
    for c in sample.channels:
        if c.pnn.strip().upper() == name:
            return c.index
    return None


def _prepare(sample: FcsSample, panel: Panel, matched: dict[str, Channel], max_events: int,
             seed: int) -> _Prepared:
    import flowkit as fk

    n = sample.events.shape[0]
    rows = np.arange(n)
    if n > max_events:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_events, replace=False))
    ev = sample.events[rows]
    comp = compensate_array(ev, sample.pnn, sample.spillover) if sample.spillover else ev
    lin = fk.transforms.LinearTransform(param_t=panel.scatter_range, param_a=0.0)
    scatter, scatter_pnn, scatter_index = {}, {}, {}
    for param, ch in find_scatter(sample, panel).items():
        scatter[param] = lin.apply(ev[:, [ch.index]])[:, 0]
        scatter_pnn[param] = ch.pnn
        scatter_index[param] = ch.index
    lg = panel.logicle
    logicle = fk.transforms.LogicleTransform(param_t=lg["t"], param_w=lg["w"], param_m=lg["m"],
                                             param_a=lg["a"])
    fluor = {m: logicle_by_table(logicle, comp[:, ch.index]) for m, ch in matched.items()}
    return _Prepared(n, rows, scatter, fluor, matched, sample.pnn, scatter_pnn=scatter_pnn,
                     scatter_index=scatter_index)


def logicle_by_table(xform, values: np.ndarray, points: int = 4097) -> np.ndarray:
    """``xform`` (a flowkit logicle) of ``values`` by interpolation in a table.

    For gate *placement* only: flowutils computes logicle one value at a time by root
    finding (~120 ns per value: a third of the placement time on 100k events x 9
    markers). Here the exact transform is computed once on ``points`` nodes evenly spaced
    in ``u = asinh(x / c)`` with ``c = T 10^(W - M)`` (where logicle turns from linear to
    logarithmic), a variable in which logicle is nearly linear everywhere; each value is
    then found by its node index (O(1)) and linear interpolation. The error is far below
    anything a density valley can resolve (tested < 1e-6 scale units); the gates placed are
    applied later with the exact transform (``gating.evaluator``).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size < 4 * points or not np.isfinite(values).all():
        return xform.apply(values.reshape(-1, 1))[:, 0]
    c = float(xform.param_t) * 10.0 ** (float(xform.param_w) - float(xform.param_m))
    u = np.arcsinh(values / c)
    u0, u1 = float(u.min()), float(u.max())
    if u1 <= u0:
        return xform.apply(values.reshape(-1, 1))[:, 0]
    nodes = xform.apply((c * np.sinh(np.linspace(u0, u1, points))).reshape(-1, 1))[:, 0]
    pos = (u - u0) * ((points - 1) / (u1 - u0))
    i = np.minimum(pos.astype(np.intp), points - 2)
    return nodes[i] + (pos - i) * (nodes[i + 1] - nodes[i])


# ----------------------------------------------------------------- the walk

@dataclass
class _Walk:
    masks: dict[str, np.ndarray]
    gates: list[tuple[PopulationSpec, object, tuple[str, ...]]]  # spec, flowkit gate, gate path
    placements: list[GatePlacement]
    qc: list[QcCheck]
    missing: list[str]
    scatter_used: list[str] = field(default_factory=list)  # scatter parameters the gates use


def _terms_for(spec: PopulationSpec, prep: _Prepared) -> tuple[GateTerm, ...] | None:
    if all(t.marker in prep.fluor for t in spec.gate):
        return spec.gate
    if spec.fallback and all(t.marker in prep.fluor for t in spec.fallback):
        return spec.fallback
    return None


def _marker_threshold(term: GateTerm | None, kind: str, values: np.ndarray,
                      control_values: np.ndarray | None, majority: str = "negative") -> tuple[float, str]:
    if kind == "cytokine":
        if control_values is not None and control_values.size >= 200:
            return control_threshold(control_values), f"control P{CONTROL_PERCENTILE:g}"
        return cytokine_threshold(values)
    t = density_valley(values)
    if t is not None:
        return t, VALLEY_HOW
    t = mixture_threshold(values)
    if t is not None:
        return t, MIXTURE_HOW
    # One population: the cut goes on the side of the expected minority.
    side = "below" if majority == "positive" else "above"
    return peak_threshold(values, side=side), f"one peak: mode {'-' if side == 'below' else '+'} {NEGATIVE_K:g} rSD"


def _quadrants(panel: Panel) -> dict[tuple[str, frozenset], tuple[str, str]]:
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


def _walk(prep: _Prepared, panel: Panel, control: _Walk | None = None,
          control_prep: _Prepared | None = None, seed: int = 0,
          with_cytokines: bool = True, quadrant: str = "auto") -> _Walk:
    import flowkit as fk
    from flowutils import gating as fu_gating

    comp_ref = COMP_ID if prep.has_comp else "uncompensated"
    masks: dict[str, np.ndarray] = {"root": np.ones(prep.rows.size, bool)}
    ids = {"root": "root"}
    paths: dict[str, tuple[str, ...]] = {"root": ("root",)}
    redirect: dict[str, str] = {}
    gates, placements, qc, missing = [], [], [], []
    cache: dict[tuple[str, str], tuple[float, str]] = {}
    quadrants = _quadrants(panel)

    def placement_values(marker, pmask):
        vals = prep.fluor[marker][pmask]
        if vals.size < MIN_PLACEMENT_EVENTS:
            # Too few events to place a gate: place it on all events so the strategy stays
            # complete; the count checks flag the sample.
            vals = prep.fluor[marker]
        return vals

    def axis_qc(marker, parent, vals):
        t, how = cache[(marker, parent)]
        above = vals >= t
        where = f"{marker}@{ids[parent]}"
        qc.append(separation(where, vals[~above], vals[above], what=f"{marker}+ gate in {parent}"))
        if how.startswith("one peak") and panel.markers[marker].required:
            # A required marker that does not resolve into two populations gives numbers
            # nobody should trust without looking.
            qc.append(unresolved_marker(marker, ids[parent], parent))

    def place_quadrant(x, y, parent, pmask):
        """Cuts of both quadrant axes, put in ``cache``; one quadrant QC row.

        Both axes are placed together (not one marker at a time) because the 2-D fallback
        needs the two markers on the same events and sets both cuts from one model.
        """
        sel = pmask if pmask.sum() >= MIN_PLACEMENT_EVENTS else np.ones_like(pmask)
        vals = {m: prep.fluor[m][sel] for m in (x, y)}
        plausible = {}
        for m in (x, y):
            t, how = _marker_threshold(None, "valley", vals[m], None, panel.markers[m].majority)
            cache[(m, parent)] = (t, how)
            share = float(np.mean(vals[m] >= t))
            plausible[m] = how in (VALLEY_HOW, MIXTURE_HOW) and min(share, 1 - share) >= QUADRANT_MIN_SHARE
        if quadrant == "mixture_2d":
            redo = [x, y]
        elif quadrant == "valley_1d":
            redo = []
        else:
            redo = [m for m in (x, y) if not plausible[m]]
        fit = quadrant_mixture(vals[x], vals[y], seed=seed) if redo else None
        if fit is not None:
            label = f"2-D mixture (k={fit.k}, D={fit.separation:.1f}, recovery={fit.recovery:.2f})"
            for m, cut in ((x, fit.cut_x), (y, fit.cut_y)):
                if m in redo:
                    cache[(m, parent)] = (cut, label)
        for m in (x, y):
            axis_qc(m, parent, vals[m])
        tx, ty = cache[(x, parent)][0], cache[(y, parent)][0]
        sides = [float(np.mean(vals[x] >= tx)), float(np.mean(vals[y] >= ty))]
        smallest = min(min(v, 1 - v) for v in sides)
        where = (x, y, ids[parent], parent)
        if fit is not None:
            qc.append(quadrant_check(*where, "mixture_2d", fit.recovery, fit.recovery >= QUADRANT_MIN_RECOVERY,
                                     QUADRANT_MIN_RECOVERY))
        elif all(plausible.values()):
            # Also reached when mixture_2d is forced but the mixture refuses the pair:
            # the 1-D cuts are sound, so nothing is flagged.
            qc.append(quadrant_check(*where, "valley_1d", smallest, True))
        else:
            # Neither method resolves the pair: the 1-D cuts stay (one of them implausible)
            # and the sample goes to review.
            qc.append(quadrant_check(*where, "unresolved", smallest, False))

    scatter_used: list[str] = []

    def scatter_dim(param):
        if param not in scatter_used:
            scatter_used.append(param)
        return fk.Dimension(prep.scatter_pnn[param], compensation_ref="uncompensated",
                            transformation_ref=SCATTER_XFORM)

    def scatter_axes(spec):
        """The parameter each axis uses: the first of its choices the file has, or None."""
        choices = spec.channel_choices or tuple((c,) for c in spec.channels)
        return [next((c for c in axis if c in prep.scatter), None) for axis in choices], choices

    for spec in panel.populations:
        parent = spec.parent
        while parent in redirect:
            parent = redirect[parent]
        if parent not in masks:  # parent left out: so is this population
            missing.append(spec.name)
            continue
        pmask = masks[parent]
        path = paths[parent]
        if spec.method == "scatter_gmm":
            axes, choices = scatter_axes(spec)
            if None in axes:
                spellings = _scatter_params(panel)
                lacking = " and ".join(
                    f"a {('forward', 'side')[i]} scatter channel ("
                    + ", ".join(n for c in choices[i] for n in spellings.get(c, (c,))) + ")"
                    for i, a in enumerate(axes) if a is None)
                raise InputError(f"{lacking} for the {spec.name} gate",
                                 "channels " + ", ".join(prep.pnn),
                                 "export the file with its forward and side scatter parameters "
                                 "(any of the names listed), or gate it with a Gating-ML or FlowJo template")
            fsc, ssc = (prep.scatter[c] for c in axes)
            sel = pmask & _unsaturated(fsc) & _unsaturated(ssc)  # saturated events distort the mixture
            verts, sep = lymphocyte_polygon(fsc[sel], ssc[sel], seed=seed)
            gate = fk.gates.PolygonGate(spec.gate_id, [scatter_dim(c) for c in axes],
                                        [[float(a), float(b)] for a, b in verts])
            inside = fu_gating.points_in_polygon(np.asarray(gate.vertices, dtype=np.float64),
                                                 np.column_stack([fsc, ssc]))
            mask = pmask & inside
            qc.append(separation_check(spec.gate_id, sep, 2.0, f"{spec.name} gate on scatter"))
            placements.append(GatePlacement(spec.gate_id, spec.name, "gaussian mixture ellipse",
                                            note="scatter " + " / ".join(prep.scatter_pnn[c] for c in axes)))
        elif spec.method == "singlet_band":
            axes, _choices = scatter_axes(spec)
            if None in axes:
                # No area/height pair (FACSCalibur: height only): no singlet gate is invented.
                redirect[spec.name] = parent
                missing.append(spec.name)
                code = (1.0 if axes[0] is None else 0.0) + (2.0 if axes[1] is None else 0.0)
                qc.append(singlets_not_gated(SINGLETS_NOT_GATED, code))
                continue
            area, height = (prep.scatter[c] for c in axes)
            verts, lo, hi = singlet_band(area[pmask], height[pmask])
            gate = fk.gates.PolygonGate(spec.gate_id, [scatter_dim(c) for c in axes],
                                        [[float(a), float(b)] for a, b in verts])
            inside = fu_gating.points_in_polygon(np.asarray(gate.vertices, dtype=np.float64),
                                                 np.column_stack([area, height]))
            mask = pmask & inside
            share = float(mask.sum() / max(pmask.sum(), 1))
            qc.append(singlet_share(share, 0.75))
            placements.append(GatePlacement(spec.gate_id, spec.name, "FSC-H/FSC-A band",
                                            {"ratio_low": lo, "ratio_high": hi},
                                            "scatter " + " / ".join(prep.scatter_pnn[c] for c in axes)))
        else:
            terms = _terms_for(spec, prep)
            if terms is None:
                if spec.bypass_when_missing:
                    redirect[spec.name] = parent
                missing.append(spec.name)
                continue
            if not with_cytokines and any(panel.markers[t.marker].threshold == "cytokine" for t in terms):
                continue
            dims, thresholds, notes = [], {}, []
            mask = pmask.copy()
            quad = quadrants.get((spec.parent, frozenset(t.marker for t in terms)))
            if quad is not None and terms == spec.gate \
                    and any((m, parent) not in cache for m in quad):
                place_quadrant(*quad, parent, pmask)
            for term in terms:
                key = (term.marker, parent)
                if key not in cache:
                    kind = panel.markers[term.marker].threshold
                    ctrl_vals = None
                    if kind == "cytokine" and control is not None and control_prep is not None \
                            and term.marker in control_prep.fluor and parent in control.masks:
                        ctrl_vals = control_prep.fluor[term.marker][control.masks[parent]]
                    vals = placement_values(term.marker, pmask)
                    cache[key] = _marker_threshold(term, kind, vals, ctrl_vals,
                                                   panel.markers[term.marker].majority)
                    if kind != "cytokine":
                        axis_qc(term.marker, parent, vals)
                t, how = cache[key]
                thresholds[term.marker] = t
                notes.append(f"{term.marker}: {how}")
                pnn = prep.channels[term.marker].pnn
                if term.positive:
                    dims.append(fk.Dimension(pnn, compensation_ref=comp_ref,
                                             transformation_ref=FLUOR_XFORM, range_min=float(t)))
                    mask &= prep.fluor[term.marker] >= t
                else:
                    dims.append(fk.Dimension(pnn, compensation_ref=comp_ref,
                                             transformation_ref=FLUOR_XFORM, range_max=float(t)))
                    mask &= prep.fluor[term.marker] < t
            gate = fk.gates.RectangleGate(spec.gate_id, dims)
            placements.append(GatePlacement(spec.gate_id, spec.name, "thresholds", thresholds,
                                            "; ".join(notes)))
        masks[spec.name] = mask
        ids[spec.name] = spec.gate_id
        paths[spec.name] = path + (spec.gate_id,)
        gates.append((spec, gate, path))
    return _Walk(masks, gates, placements, qc, missing, scatter_used)


def _strategy(sample: FcsSample, panel: Panel, walk: _Walk):
    import flowkit as fk

    strategy = fk.GatingStrategy()
    if sample.spillover is not None:
        by_pnn = {c.pnn: c for c in sample.channels}
        fluoro = [by_pnn[d].label if d in by_pnn else d for d in sample.spillover.detectors]
        strategy.add_comp_matrix(COMP_ID, fk.Matrix(np.asarray(sample.spillover.matrix, dtype=float),
                                                    list(sample.spillover.detectors), fluoro))
    strategy.add_transform(SCATTER_XFORM, fk.transforms.LinearTransform(param_t=panel.scatter_range,
                                                                        param_a=0.0))
    lg = panel.logicle
    strategy.add_transform(FLUOR_XFORM, fk.transforms.LogicleTransform(
        param_t=lg["t"], param_w=lg["w"], param_m=lg["m"], param_a=lg["a"]))
    for _spec, gate, path in walk.gates:
        strategy.add_gate(gate, gate_path=path)
    return strategy


def build_adaptive_gating(sample: FcsSample, panel: Panel | None = None,
                          control: FcsSample | None = None, max_events: int = 100_000,
                          seed: int = 0, quadrant: str = "auto") -> AdaptiveGating:
    """Place the panel's gates on ``sample`` and return them as a flowkit GatingStrategy.

    ``control`` is the unstimulated tube of the same specimen (sample-sheet ``control_of``):
    it is gated with the same method down to each cytokine's parent, and its 99.9th
    percentile sets the cytokine thresholds. Raises ``InputError`` naming a missing required
    marker and listing the channels found; a missing optional marker leaves its populations
    out (listed in ``missing_optional``). Scatter: the first forward and side scatter
    parameter of each axis the file has (area, else height, else unsuffixed; see the module
    docstring); ``InputError`` only when a file has no forward or no side scatter at all.
    Without a forward area/height pair ``Singlets`` is left out (in ``missing_optional``)
    and ``qc`` holds ``singlets_not_gated`` (:data:`SINGLETS_NOT_GATED`, passing; value 1 =
    no forward area, 2 = no forward height, 3 = neither) instead of ``singlet_share``.

    ``quadrant`` chooses how quadrant cuts (CD4/CD8) are placed, one of
    :data:`QUADRANT_MODES`: ``"auto"`` (default) uses the 1-D valley of each axis and the
    2-D mixture (:func:`quadrant_mixture`) only for an axis whose 1-D cut is missing or
    implausible; ``"mixture_2d"`` uses the 2-D mixture for both axes whenever it resolves
    the pair (for panels known to smear in 1-D, and to validate the method);
    ``"valley_1d"`` never uses it.
    """
    if quadrant not in QUADRANT_MODES:
        raise ValueError(f"quadrant must be one of {', '.join(QUADRANT_MODES)}, not {quadrant!r}")
    panel = panel or load_panel()
    matched = match_markers(sample.channels, panel.aliases, panel.required)
    prep = _prepare(sample, panel, matched, max_events, seed)
    prep.has_comp = sample.spillover is not None and _spill_covers(sample, matched)
    ctrl_walk = ctrl_prep = None
    if control is not None:
        c_matched = match_markers(control.channels, panel.aliases, panel.required)
        ctrl_prep = _prepare(control, panel, c_matched, max_events, seed)
        ctrl_prep.has_comp = control.spillover is not None and _spill_covers(control, c_matched)
        with _single_thread():
            ctrl_walk = _walk(ctrl_prep, panel, seed=seed, with_cytokines=False, quadrant=quadrant)
    with _single_thread():
        walk = _walk(prep, panel, ctrl_walk, ctrl_prep, seed=seed, quadrant=quadrant)
    strategy = _strategy(sample, panel, walk)

    qc = [events_acquired(sample.events.shape[0])]
    t = _find_channel(sample, "TIME")
    qc.append(stable_flow(sample.events[:, t] if t is not None else None))
    scat = [prep.scatter_index[p] for p in walk.scatter_used]
    used = scat + [c.index for c in matched.values()]
    qc.append(margin_events(sample.events[prep.rows], channel_ranges(sample, used)))
    qc.extend(walk.qc)
    missing = sorted(set(panel.markers) - set(matched))
    return AdaptiveGating(
        strategy=strategy,
        names={spec.gate_id: spec.name for spec, _g, _p in walk.gates},
        qc=qc,
        missing_optional=walk.missing + [f"marker {m}" for m in missing],
        channels=matched,
        placements=walk.placements,
    )


def _single_thread():
    """Mixtures here fit <= 20k points: one thread is faster than OpenMP/BLAS pools, which
    oversubscribe the cores when several files are gated in parallel (3x slower measured)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _spill_covers(sample: FcsSample, matched: dict[str, Channel]) -> bool:
    dets = set(sample.spillover.detectors)
    return any(ch.pnn in dets for ch in matched.values())
