"""qPCR replicate wells: mean Ct, replicate SD and the variance of Ct means.

Mean Ct over replicates, ``Undetermined`` = not detected, replicate SD flagged above
0.5 Ct (DESIGN.md, qPCR); standard errors combine by Welch-Satterthwaite (Welch,
Biometrika 1947; Satterthwaite, Biometrics Bulletin 1946) for the CIs of :mod:`.qpcr`
and :mod:`.calibration`.
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


def summarize_ct(cts: Sequence[float | None], ct_cutoff: float | None = None) -> CtSummary:
    """Mean Ct over replicates; ``None`` (Undetermined) = not detected (DESIGN.md).

    A Ct above ``ct_cutoff`` (late non-specific amplification) counts as not detected.

    Parameters
    ----------
    cts : sequence of float or None
        Ct of each replicate well; None = Undetermined.
    ct_cutoff : float, optional
        Highest Ct still counted as amplification.

    Returns
    -------
    CtSummary
        Mean and sample SD (ddof = 1) over the detected replicates, with the counts.
    """
    detected = [c for c in cts if c is not None and (ct_cutoff is None or c <= ct_cutoff)]
    arr = np.asarray(detected, dtype=float)
    mean = float(arr.mean()) if arr.size else None
    sd = float(arr.std(ddof=1)) if arr.size > 1 else None
    return CtSummary(mean=mean, sd=sd, n_detected=int(arr.size), n_total=len(cts))


def replicate_sd_flag(summary: CtSummary, max_sd: float = 0.5) -> bool:
    """True when the replicate SD exceeds ``max_sd`` Ct (DESIGN.md: flag SD > 0.5).

    Parameters
    ----------
    summary : CtSummary
        Replicates of one sample x target.
    max_sd : float
        Largest acceptable replicate SD in cycles.

    Returns
    -------
    bool
        True when the sample SD is above ``max_sd`` (None SD: False).
    """
    return summary.sd is not None and summary.sd > max_sd


def se_of_mean(summaries: Sequence[CtSummary], default_sd: float = 0.25) -> float:
    """sqrt(sum SD²/n) over independent Ct means (``default_sd`` for single replicates).

    Parameters
    ----------
    summaries : sequence of CtSummary
        Independent Ct means (e.g. marker and reference of sample and donor).
    default_sd : float
        Ct SD assumed for a mean of a single replicate.

    Returns
    -------
    float
        Standard error of a sum or difference of the means, in cycles.
    """
    return math.sqrt(se_and_df(summaries, default_sd)[0])


def se_and_df(summaries: Sequence[CtSummary], default_sd: float = 0.25) -> tuple[float, float]:
    """Variance sum SD²/n over independent Ct means and its Welch-Satterthwaite df.

    Each mean with k >= 2 replicates contributes SD²/k with k - 1 df; a single replicate
    contributes ``default_sd``²/1, treated as known (infinite df).

    Parameters
    ----------
    summaries : sequence of CtSummary
        Independent Ct means.
    default_sd : float
        Ct SD assumed for a mean of a single replicate.

    Returns
    -------
    tuple of float
        ``(variance, df)``: sum of SD²/n and its Welch-Satterthwaite degrees of freedom.
    """
    parts = []
    for s in summaries:
        if s.sd is not None:
            parts.append((s.sd * s.sd / max(s.n_detected, 1), float(s.n_detected - 1)))
        else:
            parts.append((default_sd * default_sd / max(s.n_detected, 1), math.inf))
    return satterthwaite(parts)


def satterthwaite(parts: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Sum of variance components and its Welch-Satterthwaite df: (sum v)² / sum(v²/df).

    Welch, Biometrika 1947; Satterthwaite, Biometrics Bulletin 1946.

    Parameters
    ----------
    parts : sequence of (float, float)
        ``(variance, df)`` of each independent component; infinite df = known variance.

    Returns
    -------
    tuple of float
        ``(total variance, df)``; df is infinite when every part is known.

    Examples
    --------
    >>> satterthwaite([(1.0, 2.0), (1.0, 2.0)])
    (2.0, 4.0)
    """
    total = float(sum(v for v, _ in parts))
    denom = sum(v * v / df for v, df in parts if df > 0 and math.isfinite(df))
    return total, (total * total / denom if denom > 0 else math.inf)


def t_quantile(level: float, df: float) -> float:
    """Two-sided Student t quantile (normal when df is infinite).

    Parameters
    ----------
    level : float
        Two-sided confidence level (0.95).
    df : float
        Degrees of freedom (at least 1 is used); infinite for the normal quantile.

    Returns
    -------
    float
        The quantile q with P(|T| <= q) = ``level``.
    """
    from scipy import stats

    if not math.isfinite(df):
        return float(stats.norm.ppf(0.5 + level / 2))
    return float(stats.t.ppf(0.5 + level / 2, max(df, 1.0)))
