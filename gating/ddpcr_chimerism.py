"""Digital-PCR chimerism: donor fraction from droplet (partition) counts.

Pure functions, one per formula of DESIGN.md ("Chimerism and microchimerism", ddPCR).
Copies from droplets follow the Poisson partition model (Hindson et al., Anal Chem 2011;
dMIQE, Huggett et al., Clin Chem 2013); the ratio CI combines the two targets' exact
binomial bounds with the MOVER method on the log scale (Donner & Zou, Stat Methods Med
Res 2012); LoB/LoD follow CLSI EP17-A2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def lambda_from_counts(negatives: int, total: int) -> float:
    """Mean copies per droplet: λ = -ln(negatives / total).  (DESIGN.md; Poisson)

    ``inf`` when every droplet is positive (saturated well), ``nan`` without droplets.
    """
    if total <= 0:
        return math.nan
    if negatives <= 0:
        return math.inf
    return -math.log(negatives / total)


def copies_from_counts(negatives: int, total: int) -> float:
    """Copies in the accepted droplets: total x λ."""
    return total * lambda_from_counts(negatives, total)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial CI of the positive-droplet proportion k/n (Clopper & Pearson 1934)."""
    from scipy import stats

    alpha = 1.0 - level
    lo = 0.0 if k <= 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def lambda_ci(positives: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """CI of λ: the exact bounds of the positive proportion p mapped by λ = -ln(1 - p)."""
    lo, hi = clopper_pearson(positives, total, level)
    return -math.log1p(-lo), (math.inf if hi >= 1.0 else -math.log1p(-hi))


def donor_fraction(
    lam_marker: float,
    lam_reference: float,
    reference_copies_per_genome: float = 2.0,
    marker_copies_per_donor_genome: float = 1.0,
) -> float:
    """f = (marker copies / reference copies) x (reference copies per genome / marker copies per donor genome).

    DESIGN.md: e.g. 2 x marker/ref for a heterozygous InDel or a Y marker against a
    diploid reference. Droplet volume cancels, so λ ratios are copy ratios.
    """
    if not lam_reference or not math.isfinite(lam_reference):
        return math.nan
    return (lam_marker / lam_reference) * (reference_copies_per_genome / marker_copies_per_donor_genome)


def ratio_ci_mover(
    est_num: float,
    ci_num: tuple[float, float],
    est_den: float,
    ci_den: tuple[float, float],
) -> tuple[float, float]:
    """CI of num/den from each one's own CI, by MOVER on the log scale (Donner & Zou 2012).

    ln L = ln(n/d) - sqrt((ln n - ln n_lo)² + (ln d_hi - ln d)²) and symmetrically for
    the upper bound: each bound borrows the far side of the other quantity's interval.
    A zero numerator (no marker droplet) gives L = 0 and U = n_hi / d_lo.
    """
    if est_den <= 0 or not math.isfinite(est_den):
        return math.nan, math.nan
    d_lo, d_hi = ci_den
    n_lo, n_hi = ci_num
    if est_num <= 0:
        return 0.0, (n_hi / d_lo if d_lo > 0 else math.inf)
    log_r = math.log(est_num) - math.log(est_den)
    down_n = math.log(est_num) - math.log(n_lo) if n_lo > 0 else math.inf
    up_n = math.log(n_hi) - math.log(est_num) if math.isfinite(n_hi) else math.inf
    down_d = math.log(est_den) - math.log(d_lo) if d_lo > 0 else math.inf
    up_d = math.log(d_hi) - math.log(est_den) if math.isfinite(d_hi) else math.inf
    lower = math.exp(log_r - math.hypot(down_n, up_d)) if math.isfinite(down_n + up_d) else 0.0
    upper = math.exp(log_r + math.hypot(up_n, down_d)) if math.isfinite(up_n + down_d) else math.inf
    return lower, upper


def merged_lambda(wells: Sequence[tuple[int, int]]) -> float:
    """λ of merged replicate wells: sum of per-well copies / sum of droplets.

    ``wells`` are (positives, accepted) per well. Summing copies well by well avoids the
    downward bias of pooling droplets first (-ln of an average of e^-λ) when λ differs
    between wells (droplet counts 15-20k, pipetting).
    """
    copies = 0.0
    droplets = 0
    for positives, total in wells:
        copies += copies_from_counts(total - positives, total)
        droplets += total
    return copies / droplets if droplets else math.nan


def fraction_ci(
    marker_positives: int,
    marker_total: int,
    reference_positives: int,
    reference_total: int,
    factor: float = 2.0,
    level: float = 0.95,
    lam_marker: float | None = None,
    lam_reference: float | None = None,
) -> tuple[float, float, float]:
    """Donor fraction and its CI from droplet counts: (f, f_low, f_high).

    ``factor`` = reference copies per genome / marker copies per donor genome. Each
    target's λ gets exact bounds at ``level``; MOVER combines them (see above). When
    the merged-well λ of :func:`merged_lambda` is given, it is the estimate and the
    pooled-count bounds are rescaled to it (same relative width).
    """
    pooled_m = lambda_from_counts(marker_total - marker_positives, marker_total)
    pooled_r = lambda_from_counts(reference_total - reference_positives, reference_total)
    lam_m = pooled_m if lam_marker is None else lam_marker
    lam_r = pooled_r if lam_reference is None else lam_reference
    ci_m = lambda_ci(marker_positives, marker_total, level)
    ci_r = lambda_ci(reference_positives, reference_total, level)
    if pooled_m > 0 and math.isfinite(pooled_m):
        ci_m = (ci_m[0] * lam_m / pooled_m, ci_m[1] * lam_m / pooled_m)
    if pooled_r > 0 and math.isfinite(pooled_r):
        ci_r = (ci_r[0] * lam_r / pooled_r, ci_r[1] * lam_r / pooled_r)
    f = donor_fraction(lam_m, lam_r, factor, 1.0)
    lo, hi = ratio_ci_mover(lam_m, ci_m, lam_r, ci_r)
    return f, lo * factor, hi * factor


def limit_of_blank(blank_values: Sequence[float], z: float = 1.645) -> float:
    """LoB = mean_blank + 1.645 x SD_blank (CLSI EP17-A2, parametric, 95 % one-sided)."""
    x = np.asarray(blank_values, dtype=float)
    if x.size == 0:
        return 0.0
    sd = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return float(x.mean()) + z * sd


def limit_of_detection(lob: float, low_sd: float, z: float = 1.645) -> float:
    """LoD = LoB + 1.645 x SD of a low-level sample (CLSI EP17-A2); the blank SD stands in for it."""
    return lob + z * low_sd


def poisson_lod_fraction(
    total_droplets: int,
    lam_reference: float,
    factor: float = 2.0,
    min_positives: float = 3.0,
) -> float:
    """Smallest donor fraction expected to give a positive droplet with 95 % probability.

    With ``min_positives`` = 3 expected marker copies, P(no copy) = e^-3 = 5 %; as a
    fraction: (3 / droplets) / λ_reference x factor. Used as the floor of the LoD when
    the negative controls are clean (LoB = 0).
    """
    if total_droplets <= 0 or not lam_reference or not math.isfinite(lam_reference):
        return math.nan
    return (min_positives / total_droplets) / lam_reference * factor
