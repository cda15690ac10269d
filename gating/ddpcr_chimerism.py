"""Digital-PCR chimerism: donor fraction from droplet (partition) counts.

Pure functions, one per formula of DESIGN.md ("Chimerism and microchimerism", ddPCR).
Copies from droplets follow the Poisson partition model (Hindson et al., Anal Chem 2011;
dMIQE, Huggett et al., Clin Chem 2013); the ratio CI combines the two targets' exact
binomial bounds with the MOVER method on the log scale (Donner & Zou, Stat Methods Med
Res 2012); LoB/LoD follow CLSI EP17-A2 applied to droplet counts (Poisson false-positive
droplets of the blank wells, :func:`lob_count`, :func:`lod_count`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence



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


def blank_rate(blank_positives: int, blank_droplets: int) -> float:
    """False-positive rate per droplet of the blank wells: r = x / N_b.

    ``x`` = marker-positive droplets pooled over the blank wells (the recipient's
    pre-transplant wells: no donor DNA), ``N_b`` = their accepted droplets. The point
    estimate, as CLSI EP17-A2 takes the LoB from the observed blank distribution; the
    minimum call count of :func:`lob_count` guards the case x = 0 (see there). 0 without
    blank droplets.
    """
    return blank_positives / blank_droplets if blank_droplets > 0 else 0.0


def lob_count(mu_blank: float, alpha: float = 0.05, min_call: int = 1) -> int:
    """Limit of blank in droplets: smallest k with P(Poisson(mu_b) <= k) >= 1 - alpha.

    CLSI EP17-A2 (LoB = the 95th percentile of blank results; Armbruster & Pry, Clin
    Biochem Rev 2008;29 Suppl 1:S49-52) applied to droplet counts, whose blank count
    in a sample of N_s droplets is Poisson(mu_b = r x N_s) (false-positive droplets
    modelled as Poisson, Milbury et al., Biomol Detect Quantif 2014;1:8-22). A result is
    *detected* when its marker-positive droplets exceed this k (EP17: measured > LoB),
    so at most ``alpha`` of blank samples are called detected.

    ``min_call`` (>= 1) is the fewest positive droplets that make a call: the LoB is at
    least ``min_call - 1``. It matters when the blanks show no false positive (x = 0,
    mu_b = 0, LoB 0): blank wells hold fewer droplets than a merged post sample (e.g. 4
    against 8 wells), so x = 0 often hides a rate that gives the post a stray droplet
    (simulated at 0.05 per well: 27 % of 0 % samples would be "detected" on one droplet).
    With ``min_call`` = 3, a clean blank keeps the old Poisson-floor rule (a call needs
    >= 3 droplets), false positives ~1 % at that rate. The one-sided 95 % upper bound of
    r (3 / N_b for x = 0) was not used: it makes the clean-blank LoB ~10 droplets and
    the LoD ~3.7x the Poisson floor (detection at 0.005 % donor ~17 %).
    """
    if not (mu_blank > 0) or not math.isfinite(mu_blank):
        k = 0
    else:
        from scipy import stats

        k = int(stats.poisson.ppf(1.0 - alpha, mu_blank))
        while k > 0 and stats.poisson.cdf(k - 1, mu_blank) >= 1.0 - alpha:  # ppf rounding guard
            k -= 1
    return max(k, int(min_call) - 1, 0)


def lod_count(lob: int, mu_blank: float, beta: float = 0.05) -> float:
    """Limit of detection in expected donor droplets: mu_d with P(Poisson(mu_b + mu_d) > LoB) = 1 - beta.

    CLSI EP17-A2: the LoD is the level detected (result > LoB) with probability
    1 - beta = 95 %. With P(Poisson(λ) <= k) = P(χ²(2k + 2) > 2λ), the total mean is
    λ = χ²_{1-beta}(2 LoB + 2) / 2 exactly, and mu_d = λ - mu_b. For LoB = 0 and a
    clean blank this is -ln 0.05 = 3.0 droplets, the Poisson floor of
    :func:`poisson_lod_fraction`; for LoB = 2 it is 6.3 droplets.
    """
    from scipy import stats

    lam = float(stats.chi2.ppf(1.0 - beta, 2 * int(lob) + 2)) / 2.0
    return max(lam - max(mu_blank, 0.0), 0.0)


def droplets_to_fraction(droplets: float, total_droplets: int, lam_reference: float, factor: float = 2.0) -> float:
    """Donor fraction of ``droplets`` expected marker droplets among ``total_droplets``.

    Same conversion as :func:`donor_fraction` and :func:`poisson_lod_fraction`:
    (droplets / N_s) / λ_reference x factor, the marker λ being droplets / N_s when
    λ_marker << 1 (microchimerism, where the LoD lies).
    """
    if total_droplets <= 0 or not lam_reference or not math.isfinite(lam_reference):
        return math.nan
    return (droplets / total_droplets) / lam_reference * factor


def poisson_lod_fraction(
    total_droplets: int,
    lam_reference: float,
    factor: float = 2.0,
    min_positives: float = 3.0,
) -> float:
    """Smallest donor fraction expected to give a positive droplet with 95 % probability.

    With ``min_positives`` = 3 expected marker copies, P(no copy) = e^-3 = 5 %; as a
    fraction: (3 / droplets) / λ_reference x factor. The count-based LoD of
    :func:`lod_count` with a clean blank and LoB = 0; kept as the LoD's floor.
    """
    if total_droplets <= 0 or not lam_reference or not math.isfinite(lam_reference):
        return math.nan
    return (min_positives / total_droplets) / lam_reference * factor
