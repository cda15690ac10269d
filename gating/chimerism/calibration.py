"""qPCR calibration from the plate: standard curve, efficiency, dilution-series readout
and the limits of detection / quantification read off a donor-in-recipient series.

Efficiency from the standard curve E = 10^(-1/slope) (Pfaffl, Nucleic Acids Res 2001;
DESIGN.md accepts slope -3.6..-3.1 and R² >= 0.98); LOD = the lowest dilution level
with all replicates detected, LOQ = the lowest with acceptable replicate SD (MIQE,
Bustin et al., Clin Chem 2009); a value read off the series carries the classical
calibration interval (Draper & Smith, Applied Regression Analysis, 3rd ed., 1998, 3.2).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from assays.records import QpcrWell
from gating.chimerism.records import ChimerismConfig
from gating.chimerism.replicates import CtSummary, satterthwaite, summarize_ct, t_quantile


@dataclass(frozen=True)
class StandardCurve:
    """Ct = slope x log10(quantity) + intercept, fitted on standard wells.

    ``s_res`` (residual SD, n - 2 df), ``x_mean`` and ``sxx`` (mean and sum of squared
    deviations of log10(quantity)) carry the fit's own uncertainty into the CI of a
    value read off the curve (:func:`calibration_var`). NaN when not known.
    """

    slope: float
    intercept: float
    r2: float
    n_points: int
    s_res: float = math.nan
    x_mean: float = math.nan
    sxx: float = math.nan

    @property
    def df(self) -> int:
        return self.n_points - 2


def fit_standard_curve(quantities: Sequence[float], cts: Sequence[float]) -> StandardCurve | None:
    """Least-squares Ct = slope x log10(quantity) + intercept; None with < 3 points or < 2 levels.

    Parameters
    ----------
    quantities : sequence of float
        Known quantity (copies, or donor %) of each standard well; non-positive and
        non-finite entries are skipped.
    cts : sequence of float
        Ct (or ΔCt) of the same wells.

    Returns
    -------
    StandardCurve or None
        Slope, intercept, R² = 1 - SS_res / SS_tot and the fit statistics (residual SD
        with n - 2 df, mean and Sxx of log10(quantity)).
    """
    q = np.asarray(quantities, dtype=float)
    c = np.asarray(cts, dtype=float)
    ok = np.isfinite(q) & np.isfinite(c) & (q > 0)
    q, c = q[ok], c[ok]
    if q.size < 3 or np.unique(q).size < 2:
        return None
    x = np.log10(q)
    slope, intercept = np.polyfit(x, c, 1)
    fitted = slope * x + intercept
    ss_res = float(np.sum((c - fitted) ** 2))
    ss_tot = float(np.sum((c - c.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0
    s_res = math.sqrt(ss_res / (q.size - 2)) if q.size > 2 else math.nan
    sxx = float(np.sum((x - x.mean()) ** 2))
    return StandardCurve(float(slope), float(intercept), r2, int(q.size), s_res, float(x.mean()), sxx)


def efficiency_from_slope(slope: float) -> float:
    """E = 10^(-1/slope) (2.0 for the ideal slope -3.32).  (DESIGN.md; Pfaffl 2001)

    Parameters
    ----------
    slope : float
        Slope of Ct against log10(quantity) (:func:`fit_standard_curve`).

    Returns
    -------
    float
        Amplification factor per cycle E (efficiency in % = 100 x (E - 1)).

    Examples
    --------
    >>> round(efficiency_from_slope(-3.3219), 3)
    2.0
    """
    return 10.0 ** (-1.0 / slope)


def standard_curve_acceptable(
    curve: StandardCurve,
    slope_range: tuple[float, float] = (-3.6, -3.1),
    min_r2: float = 0.98,
) -> bool:
    """Accept slope -3.6..-3.1 (E 90-110 %) and R² >= 0.98 (DESIGN.md).

    Parameters
    ----------
    curve : StandardCurve
        The fitted curve.
    slope_range : tuple of float
        Accepted slopes (either order).
    min_r2 : float
        Smallest accepted R².

    Returns
    -------
    bool
        True when the curve may set the efficiency.
    """
    lo, hi = min(slope_range), max(slope_range)
    return lo <= curve.slope <= hi and curve.r2 >= min_r2


def lod_from_dilution(levels: Sequence[tuple[float, CtSummary]]) -> float | None:
    """LOD = lowest dilution level (donor %) at which all replicates were detected.  (DESIGN.md)

    Parameters
    ----------
    levels : sequence of (float, CtSummary)
        Donor % of each dilution level and its replicate wells.

    Returns
    -------
    float or None
        The LOD in donor %; None when no level was fully detected.
    """
    ok = [pct for pct, s in levels if s.all_detected]
    return min(ok) if ok else None


def loq_from_dilution(levels: Sequence[tuple[float, CtSummary]], max_sd: float = 0.5) -> float | None:
    """LOQ = lowest level with all (>= 2) replicates detected and replicate SD <= ``max_sd`` Ct.

    Below it the Ct scatter (Poisson sampling of few copies) makes the number
    imprecise: reported as "detected, not quantifiable" (MIQE).

    Parameters
    ----------
    levels : sequence of (float, CtSummary)
        Donor % of each dilution level and its replicate wells.
    max_sd : float
        Largest acceptable replicate SD in cycles.

    Returns
    -------
    float or None
        The LOQ in donor %; None when no level qualifies.
    """
    ok = [
        pct
        for pct, s in levels
        if s.all_detected and s.n_total >= 2 and s.sd is not None and s.sd <= max_sd
    ]
    return min(ok) if ok else None


def pct_from_dilution(dct_sample: float, curve: StandardCurve) -> float:
    """Donor % read off a donor-in-recipient dilution series (DESIGN.md, qPCR).

    ``curve`` is ΔCt = slope x log10(donor %) + intercept fitted on the series' levels, so
    donor % = 10^((ΔCt_sample - intercept) / slope). Interpolating between nearby levels
    avoids the long extrapolation from 100 % donor, where a small efficiency error is
    multiplied by ~11 cycles at 0.05 %.

    Parameters
    ----------
    dct_sample : float
        ΔCt (marker - reference) of the post sample.
    curve : StandardCurve
        ΔCt against log10(donor %) of the plate's dilution series.

    Returns
    -------
    float
        Donor share in percent.
    """
    return 10.0 ** ((dct_sample - curve.intercept) / curve.slope)


def calibration_var(curve: StandardCurve, dct_sample: float) -> float:
    """Variance of the fitted curve at the sample's read-off point, in ΔCt units².

    Inverse prediction on a least-squares line (Draper & Smith, Applied Regression
    Analysis, 3rd ed., 1998, 3.2; ISO 11095): with x0 = (y0 - intercept) / slope,
    Var(fitted line at x0) = s_res² x (1/n + (x0 - x_mean)² / Sxx). It grows away from
    the middle of the series, e.g. when 50-95 % donor is read off a 0.01-10 % series.
    0 when the curve carries no fit statistics.

    Parameters
    ----------
    curve : StandardCurve
        The dilution curve with its fit statistics.
    dct_sample : float
        The sample's ΔCt (the read-off point y0).

    Returns
    -------
    float
        Var(fitted line at x0) in ΔCt².
    """
    if not (math.isfinite(curve.s_res) and curve.sxx > 0 and curve.n_points > 0):
        return 0.0
    x0 = (dct_sample - curve.intercept) / curve.slope
    return curve.s_res**2 * (1.0 / curve.n_points + (x0 - curve.x_mean) ** 2 / curve.sxx)


def dilution_ci(
    pct: float,
    curve: StandardCurve,
    se_dct: float,
    z: float | None = None,
    df_dct: float = math.inf,
    level: float = 0.95,
) -> tuple[float, float]:
    """CI of :func:`pct_from_dilution`: pct x 10^(-+q x sqrt(SE(ΔCt)² + Var_cal) / |slope|).

    Classical calibration interval (Draper & Smith 1998, 3.2; delta method on
    log10(pct) = (ΔCt - intercept) / slope): SE(ΔCt)² is the sample's own replicate
    variance (``se_dct``, ``df_dct`` degrees of freedom, see :func:`se_and_df`) and
    Var_cal = :func:`calibration_var`, the fitted line's uncertainty at the read-off
    point (n - 2 df). q is the Student t quantile at ``level`` with the
    Welch-Satterthwaite df of the two parts; ``z`` forces a quantile.

    Parameters
    ----------
    pct : float
        Donor % of :func:`pct_from_dilution`.
    curve : StandardCurve
        The dilution curve it was read off.
    se_dct, df_dct : float
        Standard error of the sample's ΔCt and its degrees of freedom.
    z, level : float
        Fixed quantile (optional, replaces Student's t) and two-sided level.

    Returns
    -------
    tuple of float
        Lower and upper bound, donor %.
    """
    dct_sample = curve.intercept + curve.slope * math.log10(pct) if pct > 0 else curve.intercept
    parts = [(se_dct * se_dct, df_dct), (calibration_var(curve, dct_sample), float(max(curve.df, 1)))]
    var, df = satterthwaite(parts)
    q = z if z is not None else t_quantile(level, df)
    half = q * math.sqrt(var) / abs(curve.slope)
    return pct * 10.0 ** (-half), pct * 10.0 ** half


# ---------------------------------------------------------------- one plate's target


@dataclass
class QpcrCalibration:
    efficiency: float
    lod_pct: float | None  # None: no dilution series and no configured floor
    loq_pct: float | None
    flags: list[str]
    dilution: StandardCurve | None = None  # ΔCt vs log10(donor %), when usable
    efficiency_curve: StandardCurve | None = None  # Ct vs log10(quantity), when it set E


def calibrate_target(
    target: str, reference: str, wells: Sequence[QpcrWell], config: ChimerismConfig
) -> QpcrCalibration:
    """Efficiency from the target's standard wells; LOD/LOQ and a ΔCt readout curve from them
    when they are a donor-in-recipient % series.

    E = 10^(-1/slope) (:func:`efficiency_from_slope`) from the standard wells' linear range
    (levels fully detected with replicate SD within ``qpcr_max_replicate_sd``), when the
    curve is acceptable, else the configured efficiency with the flag
    ``standard_curve_rejected``; LOD/LOQ by :func:`lod_from_dilution` /
    :func:`loq_from_dilution` when the standards are a donor-% series, the configured LOD a
    floor (LOQ >= LOD).

    Parameters
    ----------
    target : str
        The marker target.
    reference : str
        The plate's reference-gene target (for the ΔCt readout curve).
    wells : sequence of QpcrWell
        Every well of the plate.
    config : ChimerismConfig
        Efficiency, slope/R² acceptance, Ct cutoff, LOD floor and LOQ settings.

    Returns
    -------
    QpcrCalibration
        Efficiency, LOD and LOQ in donor % (None when neither the plate nor the
        configuration gives one), flags, and the curves used.
    """
    standards = [w for w in wells if w.target == target and (w.task or "").upper() == "STANDARD" and w.quantity]
    flags: list[str] = []
    efficiency = config.qpcr_efficiency
    lod, loq, dilution, efficiency_curve = None, config.qpcr_loq_pct, None, None
    if standards:
        by_level = defaultdict(list)
        for w in standards:
            by_level[w.quantity].append(w.ct)
        summaries = {q: summarize_ct(cts, config.qpcr_ct_cutoff) for q, cts in by_level.items()}
        # Fit the linear range only (MIQE): a level with dropouts or scattered replicates is
        # Poisson-limited and would tilt the slope.
        linear = {q for q, s in summaries.items()
                  if s.all_detected and (s.sd is None or s.sd <= config.qpcr_max_replicate_sd)}
        if len(linear) < 3:
            linear = set(by_level)
        detected = [w for w in standards if w.ct is not None and w.quantity in linear]
        curve = fit_standard_curve([w.quantity for w in detected], [w.ct for w in detected])
        if curve is not None and standard_curve_acceptable(curve, config.qpcr_slope_range, config.qpcr_min_r2):
            efficiency = efficiency_from_slope(curve.slope)
            efficiency_curve = curve
        else:
            flags.append("standard_curve_rejected")
        if config.qpcr_standards_are_donor_pct:
            pairs = sorted(summaries.items())
            lod = lod_from_dilution(pairs)
            loq = loq_from_dilution(pairs, config.qpcr_max_replicate_sd) or loq
            dilution = _dilution_curve(standards, reference, wells, linear, config)
    # the configured LOD is a floor the lab sets, never a replacement for the plate's own
    floor = config.qpcr_lod_pct
    lod = floor if lod is None else (lod if floor is None else max(lod, floor))
    if lod is not None:
        loq = lod if loq is None else max(loq, lod)
    return QpcrCalibration(efficiency, lod, loq, flags, dilution, efficiency_curve)


def blank_ct_limit(blank_cts: Sequence[float | None], ct_cutoff: float | None = None) -> float | None:
    """Limit of blank in Ct: the earliest Ct among the blank wells that amplified.

    Blank wells hold no donor DNA: the recipient's pre-transplant wells of the marker
    (the same genomic background as a post sample at 0 % donor) and the no-template
    controls. CLSI EP17-A2 sets the LoB at the 95th percentile of blank results; with
    the few blank wells of one plate (< 20) the non-parametric estimate of that
    percentile is the most extreme blank, here the earliest Ct (highest signal). None
    when no blank amplified: then any amplification is above the blank.

    Parameters
    ----------
    blank_cts : sequence of float or None
        Ct of the blank wells (Undetermined = None), with ``ct_cutoff`` the latest Ct
        still counted as amplification (optional).

    Returns
    -------
    float or None
        The limit of blank in Ct.
    """
    amplified = [c for c in blank_cts if c is not None and (ct_cutoff is None or c <= ct_cutoff)]
    return min(amplified) if amplified else None


def replicates_above_blank(cts: Sequence[float | None], limit: float | None, ct_cutoff: float | None = None) -> int:
    """Replicate wells that amplified earlier than the blank limit (:func:`blank_ct_limit`).

    Parameters
    ----------
    cts : sequence of float or None
        Ct of the sample's replicate wells of one marker.
    limit : float or None
        :func:`blank_ct_limit` (None: every amplification counts).
    ct_cutoff : float, optional
        Highest Ct still counted as amplification.

    Returns
    -------
    int
        How many replicates amplified before the blank limit.
    """
    return sum(1 for c in cts if c is not None and (ct_cutoff is None or c <= ct_cutoff)
               and (limit is None or c < limit))


def _dilution_curve(standards, reference, wells, levels, config) -> StandardCurve | None:
    """ΔCt (marker - reference of the same standard sample) against log10(donor %)."""
    ref_ct: dict[str, list] = defaultdict(list)
    names = {w.sample_id for w in standards}
    for w in wells:
        if w.target == reference and w.sample_id in names:
            ref_ct[w.sample_id].append(w.ct)
    qty, dct = [], []
    for w in standards:
        ref = summarize_ct(ref_ct.get(w.sample_id, []), config.qpcr_ct_cutoff)
        if w.ct is not None and ref.detected and w.quantity in levels:
            qty.append(w.quantity)
            dct.append(w.ct - ref.mean)
    curve = fit_standard_curve(qty, dct)
    if curve is None or not standard_curve_acceptable(curve, config.qpcr_slope_range, config.qpcr_min_r2):
        return None
    return curve
