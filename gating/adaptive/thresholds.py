"""Threshold statistics on one marker: where a 1-D population of logicle values splits.

Each function states its method and failure mode; :func:`marker_threshold` is the order in
which the adaptive panel tries them for a ``valley`` marker (valley, then resolved mixture,
then one peak on the side of the expected minority).
"""

from __future__ import annotations

import math

import numpy as np

CONTROL_PERCENTILE = 99.9
NEGATIVE_K = 4.0
VALLEY_HOW = "density valley"
MIXTURE_HOW = "no valley: two-component mixture boundary"
# Suffix of a cut's label when its parent shows one population only (no split to trust).
SINGLE_HOW = "in a single population"


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
    found = valley_and_peak(x, min_prominence, min_separation, max_dip, bandwidth)
    return None if found is None else found[0]


def valley_and_peak(x: np.ndarray, min_prominence: float = 0.02, min_separation: float = 0.06,
                    max_dip: float = 0.7, bandwidth: float | None = None) -> tuple[float, float] | None:
    """:func:`density_valley` and the position of the other peak it lies against (the
    minority population's mode), or None when there is no valley."""
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
    return float(centers[a] + step * (best[0] + best[-1]) / 2), float(centers[other])


def mixture_threshold(x: np.ndarray, min_d: float = 2.0, seed: int = 0,
                      max_fit: int = 5_000) -> float | None:
    """Boundary of a two-component 1-D Gaussian mixture, when the two are resolved.

    Method: ``GaussianMixture(2)`` on the logicle values; the threshold is where the two
    posterior probabilities are equal, between the means. Accepted only if Ashman's D
    (:func:`two_component_fit`) is at least ``min_d`` (2 is the usual bound for a clean
    bimodal split); otherwise None.

    Used when the density has no valley because compensation spread fills it (dim CD3 on an
    older instrument). Failure mode: a skewed single population can be split in two with
    D just above 2, putting the threshold inside it; the separation check reports it.
    """
    fit = two_component_fit(x, seed, max_fit)
    if fit is None or fit[1] < min_d:
        return None
    g = fit[0]
    mu = g.means_.ravel()
    grid = np.linspace(mu.min(), mu.max(), 512)
    post = g.predict_proba(grid[:, None])[:, 0]
    return float(grid[np.argmin(np.abs(post - 0.5))])


def two_component_fit(x: np.ndarray, seed: int = 0, max_fit: int = 5_000):
    """A two-component 1-D Gaussian mixture of ``x`` and its Ashman's D, or None (< 100 values).

    Ashman's D = sqrt(2)·|mu1 - mu2| / sqrt(s1² + s2²) (Ashman, Bird & Zepf 1994, AJ 108:2348);
    D >= 2 is the usual bound for two resolved populations. A single population, however
    skewed or rippled, gives D well below 2: the mixture then splits it into overlapping
    halves. Fitted on at most ``max_fit`` values (seeded subsample).
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
    return g, math.sqrt(2) * abs(mu[0] - mu[1]) / math.sqrt(sd[0] ** 2 + sd[1] ** 2)


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


def marker_threshold(values: np.ndarray, majority: str = "negative") -> tuple[float, str]:
    """Cut of a ``valley`` marker on its parent's logicle values, and how it was found.

    :func:`density_valley` first; without a valley :func:`mixture_threshold` (two resolved
    Gaussian components); with a single population :func:`peak_threshold`, the cut going
    on the side of the expected minority (``majority`` = "positive": below the mode).

    Parameters
    ----------
    values : numpy.ndarray
        Logicle values of the parent population's events on the marker.
    majority : {"negative", "positive"}
        Which side the parent's majority is expected on (panel key ``majority``).

    Returns
    -------
    (float, str)
        The cut (events ``>=`` it are positive) and a label of the method for ``flow_qc``.
    """
    t = density_valley(values)
    if t is not None:
        return t, VALLEY_HOW
    t = mixture_threshold(values)
    if t is not None:
        return t, MIXTURE_HOW
    side = "below" if majority == "positive" else "above"
    return peak_threshold(values, side=side), f"one peak: mode {'-' if side == 'below' else '+'} {NEGATIVE_K:g} rSD"
