"""Combining per-locus STR donor fractions into one value per sample: outlier rule, mean, CI.

The per-locus formulas are in :mod:`gating.chimerism.str`; these functions see only the
loci's values (and, with several donors, their weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def weighted_summary(values: Sequence[float], weights: Sequence[float]) -> tuple[float, float | None, int]:
    """Inverse-variance weighted mean of per-locus values, with an SD that :func:`mean_ci` can use.

    m = sum w x / sum w; its standard error from the loci's own scatter,
    SE^2 = sum w (x - m)^2 / ((n - 1) sum w) (the weights fix only the loci's relative
    precision); the returned SD is SE x sqrt(n), so SD / sqrt(n) is that SE and equal
    weights give the plain mean and sample SD of :func:`summarize`.
    """
    x, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    if x.size == 0:
        return math.nan, None, 0
    mean = float(np.sum(w * x) / np.sum(w))
    if x.size < 2:
        return mean, None, 1
    se2 = float(np.sum(w * (x - mean) ** 2) / ((x.size - 1) * np.sum(w)))
    return mean, math.sqrt(se2 * x.size), int(x.size)


def outlier_mask(
    values: Sequence[float], z: float = 3.5, min_remaining: int = 3, min_spread: float = 0.0,
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """Loci kept by the robust outlier rule (modified z-score), applied only if >= ``min_remaining`` stay.

    M_i = 0.6745 (x_i - median) / MAD, MAD = median |x_i - median|; a locus with
    |M_i| > ``z`` (3.5) is left out (Iglewicz & Hoaglin, How to Detect and Handle
    Outliers, ASQC 1993). Unlike the mean +- 2 SD rule of DESIGN.md it works with few
    loci: with n loci no value can lie more than (n - 1) / sqrt(n) SD from the mean, so
    that rule can never fire at n <= 5, while a locus reading 0 % among loci at 50 %
    has an unbounded modified z-score. ``min_spread`` floors MAD / 0.6745 (in the units
    of ``values``) so loci agreeing to a tenth of a point do not turn a one-point
    difference into an outlier. With ``weights`` (each locus' precision, 1 / Var) the
    deviations are first put on the scale of a typical locus,
    d_i = (x_i - median) sqrt(w_i / median w), so an imprecise locus (one unique allele
    beside a shared one) is judged by its own scatter: its expected larger deviation
    is no outlier, and leaving it out would shrink the SD and the CI below what the
    loci support. Returns a boolean mask, True = kept.

    Parameters
    ----------
    values : sequence of float
        Per-locus donor fractions of one sample and donor.
    z : float
        Largest |M_i| kept.
    min_remaining : int
        The rule applies only if at least this many loci stay.
    min_spread : float
        Floor of MAD / 0.6745, in the units of ``values``.
    weights : sequence of float, optional
        Relative precision of each locus; None = equal.

    Returns
    -------
    numpy.ndarray of bool
        True = locus kept (all True with fewer than 3 loci).
    """
    x = np.asarray(values, dtype=float)
    keep = np.ones(x.size, dtype=bool)
    if x.size < 3:
        return keep
    deviation = x - float(np.median(x))
    if weights is not None:
        w = np.asarray(weights, dtype=float)
        deviation = deviation * np.sqrt(w / float(np.median(w)))
    spread = max(float(np.median(np.abs(deviation))) / 0.6745, min_spread)
    if spread <= 0:
        return keep
    candidate = np.abs(deviation) / spread <= z
    return candidate if candidate.sum() >= min_remaining else keep


def summarize(values: Sequence[float]) -> tuple[float, float | None, int]:
    """Mean, sample SD (None for one locus) and n of the per-locus donor fractions.

    Parameters
    ----------
    values : sequence of float
        Donor fractions of the loci kept.

    Returns
    -------
    tuple
        ``(mean, SD with ddof = 1 or None, n)``; mean NaN without loci.

    Examples
    --------
    >>> mean, sd, n = summarize([0.1, 0.2, 0.3])
    >>> round(mean, 6), round(sd, 6), n
    (0.2, 0.1, 3)
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, None, 0
    sd = float(x.std(ddof=1)) if x.size > 1 else None
    return float(x.mean()), sd, int(x.size)


def mean_ci(mean: float, sd: float | None, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Confidence interval of the mean over loci: mean +- t(level, n-1) x SD / sqrt(n).

    Parameters
    ----------
    mean, sd : float
        Mean and sample SD over the loci (:func:`summarize`).
    n : int
        Number of loci.
    level : float
        Two-sided confidence level.

    Returns
    -------
    tuple of float or None
        ``(low, high)``, same units as ``mean``; None for fewer than 2 loci.
    """
    if sd is None or n < 2:
        return None
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half
