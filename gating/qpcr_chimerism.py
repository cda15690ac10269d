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
    """Ct = slope x log10(quantity) + intercept, fitted on standard wells."""

    slope: float
    intercept: float
    r2: float
    n_points: int


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
    return StandardCurve(float(slope), float(intercept), r2, int(q.size))


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
    z: float = 1.96,
) -> tuple[float, float]:
    """Approximate 95 % CI of a ΔΔCt donor %: pct x E^(-+z x SE(ΔΔCt)).

    SE(ΔΔCt)² = sum over the four Ct means of SD²/n (marker and reference, sample and
    donor); a mean of a single replicate uses ``default_sd`` (no SD is estimable).
    """
    se = se_of_mean(summaries, default_sd)
    return pct * efficiency ** (-z * se), pct * efficiency ** (z * se)


def pct_from_dilution(dct_sample: float, curve: StandardCurve) -> float:
    """Donor % read off a donor-in-recipient dilution series (DESIGN.md, qPCR).

    ``curve`` is ΔCt = slope x log10(donor %) + intercept fitted on the series' levels, so
    donor % = 10^((ΔCt_sample - intercept) / slope). Interpolating between nearby levels
    avoids the long extrapolation from 100 % donor, where a small efficiency error is
    multiplied by ~11 cycles at 0.05 %.
    """
    return 10.0 ** ((dct_sample - curve.intercept) / curve.slope)


def dilution_ci(pct: float, curve: StandardCurve, se_dct: float, z: float = 1.96) -> tuple[float, float]:
    """Approximate CI of :func:`pct_from_dilution`: pct x 10^(-+z x SE(ΔCt) / |slope|)."""
    half = z * se_dct / abs(curve.slope)
    return pct * 10.0 ** (-half), pct * 10.0 ** half


def se_of_mean(summaries: Sequence[CtSummary], default_sd: float = 0.25) -> float:
    """sqrt(sum SD²/n) over independent Ct means (``default_sd`` for single replicates)."""
    var = 0.0
    for s in summaries:
        sd = s.sd if s.sd is not None else default_sd
        var += sd * sd / max(s.n_detected, 1)
    return math.sqrt(var)
