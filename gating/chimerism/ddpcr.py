"""Digital-PCR chimerism: donor fraction from droplet (partition) counts.

Pure functions, one per formula of DESIGN.md ("Chimerism and microchimerism", ddPCR).
Copies from droplets follow the Poisson partition model (Hindson et al., Anal Chem 2011;
dMIQE, Huggett et al., Clin Chem 2013); the ratio CI combines the two targets' exact
binomial bounds with the MOVER method on the log scale (Donner & Zou, Stat Methods Med
Res 2012); LoB/LoD follow CLSI EP17-A2 applied to droplet counts (Poisson false-positive
droplets of the blank wells, :mod:`gating.chimerism.droplet_limits`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from assays.records import DdpcrWell
from gating.chimerism.droplet_limits import blank_rate, droplets_to_fraction, lob_count, lod_count, poisson_lod_fraction
from gating.chimerism.limits import combine_markers
from gating.chimerism.pairing import (
    Pairing,
    computable_donors,
    no_reference_results,
    split_targets,
)
from gating.chimerism.records import (
    BELOW_LOD,
    NOT_DETECTED,
    REFERENCE_FAILED,
    ChimerismConfig,
    ChimerismMarkerResult,
    ChimerismResult,
    empty_result,
    join_flags,
)


def lambda_from_counts(negatives: int, total: int) -> float:
    """Mean copies per droplet: λ = -ln(negatives / total).  (DESIGN.md; Poisson)

    ``inf`` when every droplet is positive (saturated well), ``nan`` without droplets.

    Parameters
    ----------
    negatives : int
        Droplets negative for the target.
    total : int
        Accepted droplets.

    Returns
    -------
    float
        λ, mean target copies per droplet (Hindson et al. 2011).

    Examples
    --------
    >>> round(lambda_from_counts(negatives=9048, total=10000), 4)
    0.1
    """
    if total <= 0:
        return math.nan
    if negatives <= 0:
        return math.inf
    return -math.log(negatives / total)


def copies_from_counts(negatives: int, total: int) -> float:
    """Copies in the accepted droplets: total x λ (λ of :func:`lambda_from_counts`,
    same parameters); expected target copies, as a float."""
    return total * lambda_from_counts(negatives, total)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial CI of the positive-droplet proportion k/n (Clopper & Pearson 1934).

    Bounds: Beta(α/2; k, n - k + 1) and Beta(1 - α/2; k + 1, n - k), α = 1 - level
    (0 and 1 at the edges).

    Parameters
    ----------
    k : int
        Positive droplets.
    n : int
        Accepted droplets.
    level : float
        Two-sided confidence level.

    Returns
    -------
    tuple of float
        ``(p_low, p_high)``.
    """
    from scipy import stats

    alpha = 1.0 - level
    lo = 0.0 if k <= 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def lambda_ci(positives: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """CI of λ: the exact bounds of the positive proportion p mapped by λ = -ln(1 - p).

    Parameters
    ----------
    positives, total, level
        As ``k``, ``n`` and ``level`` of :func:`clopper_pearson`.

    Returns
    -------
    tuple of float
        ``(λ_low, λ_high)``; ``λ_high`` is ``inf`` when every droplet may be positive.
    """
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

    Parameters
    ----------
    lam_marker : float
        λ of the donor-specific marker (copies per droplet).
    lam_reference : float
        λ of the reference gene in the same sample.
    reference_copies_per_genome : float
        Reference copies per genome (2 for a diploid autosomal gene).
    marker_copies_per_donor_genome : float
        Marker copies per donor genome (1 for a heterozygous InDel or a Y marker).

    Returns
    -------
    float
        Donor fraction (0..1, not clipped); NaN without a usable reference λ.

    Examples
    --------
    >>> donor_fraction(0.001, 0.5)
    0.004
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

    Parameters
    ----------
    est_num, est_den : float
        Estimates of the numerator and the denominator.
    ci_num, ci_den : tuple of float
        Their own confidence intervals.

    Returns
    -------
    tuple of float
        ``(low, high)`` of num/den; NaN, NaN without a usable denominator.
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

    Parameters
    ----------
    wells : sequence of (int, int)
        ``(positives, accepted droplets)`` of each replicate well.

    Returns
    -------
    float
        λ = sum_i N_i λ_i / sum_i N_i; NaN without droplets.
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

    Parameters
    ----------
    marker_positives, marker_total : int
        Marker-positive and accepted droplets (pooled over the sample's wells).
    reference_positives, reference_total : int
        The same for the reference gene.
    factor : float
        Reference copies per genome / marker copies per donor genome.
    level : float
        Two-sided confidence level.
    lam_marker, lam_reference : float, optional
        Merged-well λ (:func:`merged_lambda`) to use as the estimates.

    Returns
    -------
    tuple of float
        ``(f, f_low, f_high)``, donor fractions (0..1).
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


# ---------------------------------------------------------------- per post sample


@dataclass
class DropletCounts:
    """Marker- or reference-positive droplets and accepted droplets of one target."""

    positives: int
    total: int
    wells: list[tuple[int, int]] | None = None  # per-well (positives, accepted) when merged

    @property
    def lam(self) -> float:
        if self.wells:
            return merged_lambda(self.wells)
        return lambda_from_counts(self.total - self.positives, self.total)


def droplet_index(wells: Sequence[DdpcrWell]) -> dict[str, dict[str, dict[str, DropletCounts]]]:
    """sample -> target -> well -> counts (wells without droplet counts are skipped)."""
    index: dict = defaultdict(lambda: defaultdict(dict))
    for w in wells:
        if w.positives is None or not w.accepted:
            continue
        c = index[w.sample_id][w.target].setdefault(w.well, DropletCounts(0, 0))
        c.positives += w.positives
        c.total += w.accepted
    return index


def pooled_counts(index, sample, target) -> DropletCounts:
    """A sample's wells of one target merged (λ by :func:`merged_lambda`)."""
    wells = index.get(sample, {}).get(target, {})
    return DropletCounts(sum(c.positives for c in wells.values()), sum(c.total for c in wells.values()),
                         [(c.positives, c.total) for c in wells.values()])


@dataclass
class DdpcrLimits:
    """LoD/LoQ (%) of one marker of one post sample, with the counts its detection call pools."""

    lod_pct: float
    loq_pct: float
    #: count-based limits (None with a configured LoD): marker-positive droplets of the
    #: post sample, expected blank droplets mu_b = r x N_s, and expected droplets per
    #: donor fraction 1.0 (N_s x λ_reference / factor), to pool markers of one donor
    positives: int | None = None
    mu_blank: float | None = None
    droplets_per_fraction: float | None = None
    floor_pct: float | None = None


def quantify_post_sample(
    pairing: Pairing, index: dict, config: ChimerismConfig
) -> tuple[list[ChimerismMarkerResult], list[ChimerismResult]]:
    """ddPCR donor % of one post sample, per donor: mean over its informative markers.

    Per marker, with λ = -ln(negative / accepted droplets) of the merged wells:

        f = (λ_marker / λ_reference) x (reference copies per genome / marker copies per donor genome)

    (:func:`donor_fraction`; the marker's copies per donor genome, 1 or 2, taken from
    the donor sample when clear), CI from the exact Poisson (Clopper-Pearson) bounds of
    both targets combined by MOVER (:func:`fraction_ci`). A marker is informative when
    positive in the donor and below ``config.informative_max_recipient_pct`` in the
    recipient's pre-transplant sample and in every other donor. Detection: the pooled
    marker droplets exceed the limit of blank of the recipient's pre-transplant wells;
    LoD = the donor fraction detected with 95 % probability (:func:`marker_limits`,
    :func:`donor_call`; CLSI EP17-A2), unless ``config.ddpcr_lod_pct`` fixes it.

    Parameters
    ----------
    pairing : Pairing
        The post sample, its recipient pre-transplant sample and donor samples.
    index : dict
        Droplet counts (:func:`droplet_index`).
    config : ChimerismConfig
        Reference genes, copy numbers, CI level, LoD settings.

    Returns
    -------
    (list of ChimerismMarkerResult, list of ChimerismResult)
        One marker row per target and donor, one result per donor.

    References
    ----------
    Hindson et al., Anal Chem 2011;83:8604-8610; Donner & Zou, Stat Methods Med Res
    2012;21:347-359; CLSI EP17-A2 (2012).
    """
    sid = pairing.post.sample_id
    ref, marker_targets = split_targets(index[sid], config.reference_genes)
    if ref is None:
        return [], no_reference_results(pairing, "ddpcr", config)
    results, pairs = computable_donors(pairing, "ddpcr")
    if not pairs:
        return [], results
    post_ref = pooled_counts(index, sid, ref)
    pre_ref = pooled_counts(index, pairing.pre_id, ref)
    if post_ref.positives == 0 or pre_ref.positives == 0 or not math.isfinite(post_ref.lam):
        which = "post" if post_ref.positives == 0 or not math.isfinite(post_ref.lam) else "pre-transplant recipient"
        return [], results + [empty_result(sid, "ddpcr", d, REFERENCE_FAILED,
                                     f"The reference {ref} has no usable droplet counts in the {which} sample "
                                     "(no positives, or every droplet positive): repeat with suitable DNA input.")
                              for d, _ in pairs]
    base_factor = config.ddpcr_reference_copies_per_genome / config.ddpcr_marker_copies_per_donor_genome
    markers: list[ChimerismMarkerResult] = []
    for donor_id, donor_sample in pairs:
        donor_ref = pooled_counts(index, donor_sample, ref)
        rows = []
        for t in marker_targets:
            d_m, r_m, s_m = (pooled_counts(index, s, t) for s in (donor_sample, pairing.pre_id, sid))
            flags: list[str] = []
            apparent = lambda m, r: 100 * donor_fraction(m.lam, r.lam, base_factor, 1.0)  # noqa: E731
            reason = None
            if donor_ref.positives == 0 or d_m.total == 0:
                reason = "donor_reference_failed"
            elif d_m.positives == 0 or apparent(d_m, donor_ref) < config.informative_max_recipient_pct:
                reason = "negative_in_donor"
            elif r_m.total == 0:
                reason = "marker_not_run_on_recipient"
            elif apparent(r_m, pre_ref) >= config.informative_max_recipient_pct:
                reason = "positive_in_recipient"
            elif any(apparent(pooled_counts(index, o, t), pooled_counts(index, o, ref)) >= config.informative_max_recipient_pct
                     for d, o in pairs if d != donor_id and pooled_counts(index, o, ref).positives):
                reason = "positive_in_other_donor"
            if reason is not None:
                markers.append(ChimerismMarkerResult(sid, "ddpcr", t, "non_informative", None, False, donor_id, reason))
                continue
            factor = base_factor
            if config.ddpcr_infer_marker_copies and math.isfinite(d_m.lam):
                copies = (d_m.lam / donor_ref.lam) * config.ddpcr_reference_copies_per_genome
                if round(copies) in (1, 2) and abs(copies - round(copies)) < 0.3:
                    factor = config.ddpcr_reference_copies_per_genome / round(copies)
                else:
                    flags.append("marker_copies_unclear")
            if s_m.total == 0:
                markers.append(ChimerismMarkerResult(sid, "ddpcr", t, "informative", None, False, donor_id, "marker_not_run"))
                continue
            f, lo, hi = fraction_ci(s_m.positives, s_m.total, post_ref.positives, post_ref.total,
                                       factor, config.ddpcr_ci_level, s_m.lam, post_ref.lam)
            limits = marker_limits(index, pairing.pre_id, t, ref, s_m, post_ref, factor, config)
            if r_m.positives:
                flags.append("recipient_background")
            if s_m.positives == 0:
                flags.append("not_detected")
            markers.append(ChimerismMarkerResult(sid, "ddpcr", t, "informative", 100 * f, True, donor_id, join_flags(flags)))
            rows.append((100 * f, (100 * lo, 100 * hi), limits))
        result = combine_markers(sid, "ddpcr", donor_id, rows, *donor_call([r[2] for r in rows], config))
        if result.donor_pct == 0.0 and result.status == BELOW_LOD:
            result.status, result.message = NOT_DETECTED, "No donor-marker droplet: donor DNA not detected."
        results.append(result)
    return markers, results


def marker_limits(index, pre_id, marker, ref, post_marker, post_ref, factor, config) -> DdpcrLimits:
    """Count-based LoB/LoD of one marker (CLSI EP17-A2 on Poisson droplet counts).

    Blank = the recipient's pre-transplant wells of this marker (no donor DNA): their
    marker-positive droplets x over their accepted droplets N_b give the false-positive
    rate per droplet r = x / N_b; the post sample's N_s droplets then hold
    Poisson(mu_b = r x N_s) blank droplets. LoB = smallest k with P(Poisson(mu_b) <= k)
    >= 95 % (at least ``ddpcr_min_positive_droplets`` - 1), LoD = the donor droplets mu_d
    with P(Poisson(mu_b + mu_d) > LoB) = 95 %, as a fraction (mu_d / N_s) / λ_ref x factor
    (see above), floored by the Poisson LoD. ``config.ddpcr_lod_pct``
    overrides both (detection is then donor % >= that LoD).
    """
    if config.ddpcr_lod_pct is not None:
        return DdpcrLimits(config.ddpcr_lod_pct, config.ddpcr_lod_pct)
    blank = pooled_counts(index, pre_id, marker)
    mu_b = blank_rate(blank.positives, blank.total) * post_marker.total
    per_fraction = post_marker.total * post_ref.lam / factor
    floor = 100 * poisson_lod_fraction(post_marker.total, post_ref.lam, factor, config.ddpcr_lod_min_positives)
    lob = lob_count(mu_b, 0.05, config.ddpcr_min_positive_droplets)
    lod = max(100 * droplets_to_fraction(lod_count(lob, mu_b), post_marker.total, post_ref.lam, factor), floor)
    return DdpcrLimits(lod, lod, post_marker.positives, mu_b, per_fraction, floor)


def donor_call(limits: Sequence[DdpcrLimits], config) -> tuple[bool | None, float | None]:
    """Detected flag and LoD (%) of one donor's ddPCR result from its markers' counts.

    The markers' blank counts are independent Poisson, so their sum is
    Poisson(sum mu_b): detected = pooled marker droplets > LoB of that sum (one test at
    5 %, not one per marker), LoD = the donor fraction whose expected droplets over all
    markers, sum(N_s x λ_ref / factor) x f, reach the EP17 LoD count. With one marker
    this is that marker's own LoB/LoD. (None, None) with a configured LoD.
    """
    if not limits or any(lim.positives is None for lim in limits):
        return None, None
    mu_b = sum(lim.mu_blank for lim in limits)
    lob = lob_count(mu_b, 0.05, config.ddpcr_min_positive_droplets)
    detected = sum(lim.positives for lim in limits) > lob
    per_fraction = sum(lim.droplets_per_fraction for lim in limits)
    lod = 100 * lod_count(lob, mu_b) / per_fraction if per_fraction > 0 else math.nan
    return detected, max(lod, max(lim.floor_pct for lim in limits))
