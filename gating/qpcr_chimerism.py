"""qPCR chimerism: donor % from a donor-specific marker against a reference gene.

Pure functions, one per formula of DESIGN.md ("Chimerism and microchimerism", qPCR):
calibrated ΔΔCt (Alizadeh et al., Blood 2002; Jiménez-Velasco et al., Leukemia 2005),
efficiency from a standard curve (Pfaffl, Nucleic Acids Res 2001), replicate QC and the
limits of detection / quantification read off a donor-in-recipient dilution series
(MIQE, Bustin et al., Clin Chem 2009).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CtSummary:
    """Replicate wells of one sample x target."""

    mean: float | None  # over detected replicates; None when none amplified
    sd: float | None  # sample SD over detected replicates (None for < 2)
    n_detected: int
    n_total: int

    @property
    def detected(self) -> bool:
        return self.n_detected > 0

    @property
    def all_detected(self) -> bool:
        return self.n_total > 0 and self.n_detected == self.n_total


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


def summarize_ct(cts: Sequence[float | None], ct_cutoff: float | None = None) -> CtSummary:
    """Mean Ct over replicates; ``None`` (Undetermined) = not detected (DESIGN.md).

    A Ct above ``ct_cutoff`` (late non-specific amplification) counts as not detected.
    """
    detected = [c for c in cts if c is not None and (ct_cutoff is None or c <= ct_cutoff)]
    arr = np.asarray(detected, dtype=float)
    mean = float(arr.mean()) if arr.size else None
    sd = float(arr.std(ddof=1)) if arr.size > 1 else None
    return CtSummary(mean=mean, sd=sd, n_detected=int(arr.size), n_total=len(cts))


def replicate_sd_flag(summary: CtSummary, max_sd: float = 0.5) -> bool:
    """True when the replicate SD exceeds ``max_sd`` Ct (DESIGN.md: flag SD > 0.5)."""
    return summary.sd is not None and summary.sd > max_sd


def delta_ct(ct_marker: float, ct_reference: float) -> float:
    """ΔCt = Ct_marker - Ct_reference."""
    return ct_marker - ct_reference


def donor_pct_ddct(dct_sample: float, dct_donor100: float, efficiency: float = 2.0) -> float:
    """Calibrated ΔΔCt: donor % = 100 x E^-(ΔCt_sample - ΔCt_donor100).  (DESIGN.md)

    ΔCt_donor100 is the pure donor sample's ΔCt: it calibrates the marker's copy
    number per donor genome (heterozygous InDel, Y marker) and the primer efficiencies.
    """
    return 100.0 * efficiency ** (-(dct_sample - dct_donor100))


def fit_standard_curve(quantities: Sequence[float], cts: Sequence[float]) -> StandardCurve | None:
    """Least-squares Ct = slope x log10(quantity) + intercept; None with < 3 points or < 2 levels."""
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
    """E = 10^(-1/slope) (2.0 for the ideal slope -3.32).  (DESIGN.md; Pfaffl 2001)"""
    return 10.0 ** (-1.0 / slope)


def standard_curve_acceptable(
    curve: StandardCurve,
    slope_range: tuple[float, float] = (-3.6, -3.1),
    min_r2: float = 0.98,
) -> bool:
    """Accept slope -3.6..-3.1 (E 90-110 %) and R² >= 0.98 (DESIGN.md)."""
    lo, hi = min(slope_range), max(slope_range)
    return lo <= curve.slope <= hi and curve.r2 >= min_r2


def lod_from_dilution(levels: Sequence[tuple[float, CtSummary]]) -> float | None:
    """LOD = lowest dilution level (donor %) at which all replicates were detected.  (DESIGN.md)"""
    ok = [pct for pct, s in levels if s.all_detected]
    return min(ok) if ok else None


def loq_from_dilution(levels: Sequence[tuple[float, CtSummary]], max_sd: float = 0.5) -> float | None:
    """LOQ = lowest level with all (>= 2) replicates detected and replicate SD <= ``max_sd`` Ct.

    Below it the Ct scatter (Poisson sampling of few copies) makes the number
    imprecise: reported as "detected, not quantifiable" (MIQE).
    """
    ok = [
        pct
        for pct, s in levels
        if s.all_detected and s.n_total >= 2 and s.sd is not None and s.sd <= max_sd
    ]
    return min(ok) if ok else None


def is_informative(donor: CtSummary, recipient: CtSummary) -> bool:
    """Marker informative: positive in the donor, negative in the recipient's pre sample.  (DESIGN.md)"""
    return donor.detected and not recipient.detected


def ddct_ci(
    pct: float,
    summaries: Sequence[CtSummary],
    efficiency: float = 2.0,
    default_sd: float = 0.25,
    z: float | None = None,
    curve: StandardCurve | None = None,
    level: float = 0.95,
) -> tuple[float, float]:
    """CI of a ΔΔCt donor %, by the delta method on ln(donor %).

    ln(pct) = ln 100 - ΔΔCt x ln E, so (first-order Taylor expansion, the delta method;
    Casella & Berger, Statistical Inference, 2002, 5.5.4)

        Var(ln pct) = (ln E)² x SE(ΔΔCt)² + ΔΔCt² x Var(ln E),

    SE(ΔΔCt)² = sum over the four Ct means (marker and reference, sample and donor) of
    SD²/n (:func:`se_of_mean`; a single replicate uses ``default_sd``). When the
    efficiency comes from a fitted ``curve`` (E = 10^(-1/slope)), ln E = -ln 10 / slope
    and Var(ln E) = (ln 10 / slope²)² x s_res² / Sxx (least-squares SE of the slope):
    the efficiency error is multiplied by ΔΔCt, about 11 cycles at 0.05 %. The bounds
    are pct x exp(-+q x sqrt(Var)), q the Student t quantile at ``level`` with the
    Welch-Satterthwaite degrees of freedom of the two variance parts (replicate SDs
    from 2-4 wells have few df; a normal 1.96 under-covers). ``z`` forces a quantile.
    """
    var_d, df_d = se_and_df(summaries, default_sd)
    dd = -math.log(pct / 100.0) / math.log(efficiency) if pct > 0 else 0.0
    parts = [((math.log(efficiency)) ** 2 * var_d, df_d)]
    if curve is not None and math.isfinite(curve.s_res) and curve.sxx > 0 and curve.df > 0:
        var_slope = curve.s_res**2 / curve.sxx
        var_ln_e = (math.log(10.0) / curve.slope**2) ** 2 * var_slope
        parts.append((dd * dd * var_ln_e, float(curve.df)))
    var, df = _satterthwaite(parts)
    q = z if z is not None else _t_quantile(level, df)
    half = q * math.sqrt(var)
    return pct * math.exp(-half), pct * math.exp(half)


def pct_from_dilution(dct_sample: float, curve: StandardCurve) -> float:
    """Donor % read off a donor-in-recipient dilution series (DESIGN.md, qPCR).

    ``curve`` is ΔCt = slope x log10(donor %) + intercept fitted on the series' levels, so
    donor % = 10^((ΔCt_sample - intercept) / slope). Interpolating between nearby levels
    avoids the long extrapolation from 100 % donor, where a small efficiency error is
    multiplied by ~11 cycles at 0.05 %.
    """
    return 10.0 ** ((dct_sample - curve.intercept) / curve.slope)


def calibration_var(curve: StandardCurve, dct_sample: float) -> float:
    """Variance of the fitted curve at the sample's read-off point, in ΔCt units².

    Inverse prediction on a least-squares line (Draper & Smith, Applied Regression
    Analysis, 3rd ed., 1998, 3.2; ISO 11095): with x0 = (y0 - intercept) / slope,
    Var(fitted line at x0) = s_res² x (1/n + (x0 - x_mean)² / Sxx). It grows away from
    the middle of the series, e.g. when 50-95 % donor is read off a 0.01-10 % series.
    0 when the curve carries no fit statistics.
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
    """
    dct_sample = curve.intercept + curve.slope * math.log10(pct) if pct > 0 else curve.intercept
    parts = [(se_dct * se_dct, df_dct), (calibration_var(curve, dct_sample), float(max(curve.df, 1)))]
    var, df = _satterthwaite(parts)
    q = z if z is not None else _t_quantile(level, df)
    half = q * math.sqrt(var) / abs(curve.slope)
    return pct * 10.0 ** (-half), pct * 10.0 ** half


def se_of_mean(summaries: Sequence[CtSummary], default_sd: float = 0.25) -> float:
    """sqrt(sum SD²/n) over independent Ct means (``default_sd`` for single replicates)."""
    return math.sqrt(se_and_df(summaries, default_sd)[0])


def se_and_df(summaries: Sequence[CtSummary], default_sd: float = 0.25) -> tuple[float, float]:
    """Variance sum SD²/n over independent Ct means and its Welch-Satterthwaite df.

    Each mean with k >= 2 replicates contributes SD²/k with k - 1 df; a single replicate
    contributes ``default_sd``²/1, treated as known (infinite df).
    """
    parts = []
    for s in summaries:
        if s.sd is not None:
            parts.append((s.sd * s.sd / max(s.n_detected, 1), float(s.n_detected - 1)))
        else:
            parts.append((default_sd * default_sd / max(s.n_detected, 1), math.inf))
    return _satterthwaite(parts)


def _satterthwaite(parts: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Sum of variance components and its Welch-Satterthwaite df: (sum v)² / sum(v²/df)."""
    total = float(sum(v for v, _ in parts))
    denom = sum(v * v / df for v, df in parts if df > 0 and math.isfinite(df))
    return total, (total * total / denom if denom > 0 else math.inf)


def _t_quantile(level: float, df: float) -> float:
    """Two-sided Student t quantile (normal when df is infinite)."""
    from scipy import stats

    if not math.isfinite(df):
        return float(stats.norm.ppf(0.5 + level / 2))
    return float(stats.t.ppf(0.5 + level / 2, max(df, 1.0)))
