"""STR chimerism: donor fraction from capillary-electrophoresis peak areas.

Pure functions, one per formula of DESIGN.md ("Chimerism and microchimerism", STR).
Notation: R and D are the recipient's and the donor's pre-transplant allele sets at a
locus, A(x) the post-transplant sample's signal (peak area, or height when the export
has no areas) at allele x, f the donor fraction (0..1).

Source of the four informative-locus formulas: DESIGN.md, which follows the standard
peak-area method for STR chimerism (Thiede et al., Leukemia 2004; Kristt et al., Bone
Marrow Transplant 2007): every genome contributes two allele copies per locus, so each
allele's signal is proportional to the number of copies that carry it.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from assays.records import StrPeak
from gating.chimerism.limits import below_lod_interval, classify
from gating.chimerism.pairing import Pairing, computable_donors
from gating.chimerism.records import (
    NO_INFORMATIVE_MARKER,
    ChimerismConfig,
    ChimerismMarkerResult,
    ChimerismResult,
    empty_result,
    join_flags,
)

NON_INFORMATIVE = "non_informative"
NO_SHARED = "no_shared_allele"
SHARED_BOTH_HET = "one_shared_both_heterozygous"
DONOR_HET_RECIPIENT_HOM = "donor_heterozygous_recipient_homozygous"
DONOR_HOM_RECIPIENT_HET = "donor_homozygous_recipient_heterozygous"
DONOR_UNIQUE = "donor_unique_allele"  # several donors
NOT_CLASSIFIABLE = "not_classifiable"  # e.g. a tri-allelic pattern
SEX_LOCUS = "sex_locus"

_NON_ALLELE_CALLS = frozenset({"OL", "?", ""})


def allele_signal(peaks: Iterable[tuple[str, float | None, float | None]]) -> dict[str, float]:
    """Signal per allele of one sample at one locus: ``{allele: area}``.

    ``peaks`` are ``(allele, area, height)``; the area is used when the export has it,
    else the height (R re-saved GeneMapper tables drop areas). Off-ladder calls are
    ignored: they are not alleles. Duplicate calls of an allele are summed.
    """
    signal: dict[str, float] = {}
    for allele, area, height in peaks:
        if allele is None or allele.strip().upper() in _NON_ALLELE_CALLS:
            continue
        value = area if area is not None else height
        if value is None or not math.isfinite(value) or value <= 0:
            continue
        signal[allele.strip()] = signal.get(allele.strip(), 0.0) + float(value)
    return signal


def call_genotype(signal: Mapping[str, float], min_fraction: float = 0.25) -> frozenset[str]:
    """Alleles of a pure (pre-transplant or donor) sample: signal >= ``min_fraction`` x the highest.

    Stutter (about 5-10 % of its parent) and noise fall below the cut-off; heterozygote
    imbalance rarely does.
    """
    if not signal:
        return frozenset()
    top = max(signal.values())
    return frozenset(a for a, s in signal.items() if s >= min_fraction * top)


def is_sex_locus(marker: str) -> bool:
    """Amelogenin and Y-chromosome loci (AMEL, DYS..., Y-indel): never averaged (DESIGN.md).

    Their copy number differs between sexes, so the diploid formulas do not hold.
    """
    key = re.sub(r"[^a-z0-9]", "", marker.casefold())
    return key.startswith("amel") or key.startswith("dys") or key in {"y", "yindel", "yin"}


def classify_locus(recipient: frozenset[str], donor: frozenset[str]) -> str:
    """Informativity class of a locus for one donor (DESIGN.md, STR).

    R = D: non informative; R and D disjoint: no shared allele; one shared allele with
    both heterozygous; donor heterozygous with the recipient homozygous for the shared
    allele; donor homozygous with the recipient heterozygous. Anything else (three or
    more alleles in one person, or an empty genotype) cannot use these formulas.
    """
    if not recipient or not donor or len(recipient) > 2 or len(donor) > 2:
        return NOT_CLASSIFIABLE
    if recipient == donor:
        return NON_INFORMATIVE
    shared = recipient & donor
    if not shared:
        return NO_SHARED
    if len(shared) == 1:
        if len(recipient) == 2 and len(donor) == 2:
            return SHARED_BOTH_HET
        if len(recipient) == 1 and len(donor) == 2:
            return DONOR_HET_RECIPIENT_HOM
        if len(recipient) == 2 and len(donor) == 1:
            return DONOR_HOM_RECIPIENT_HET
    return NOT_CLASSIFIABLE


def f_no_shared(donor_only: Sequence[float], recipient_only: Sequence[float]) -> float:
    """No shared allele: f = sum A(D only) / (sum A(D only) + sum A(R only)).  (DESIGN.md)"""
    d, r = float(np.sum(donor_only)), float(np.sum(recipient_only))
    return d / (d + r) if d + r > 0 else math.nan


def f_shared_both_het(a_d: float, a_r: float) -> float:
    """One shared allele, both heterozygous: f = A(d) / (A(d) + A(r)) over the unique alleles.  (DESIGN.md)"""
    return a_d / (a_d + a_r) if a_d + a_r > 0 else math.nan


def f_donor_het_recipient_hom(a_d: float, a_shared: float) -> float:
    """Donor heterozygous, recipient homozygous for the shared allele: f = 2 A(d) / (A(d) + A(shared)).  (DESIGN.md)"""
    return 2.0 * a_d / (a_d + a_shared) if a_d + a_shared > 0 else math.nan


def f_donor_hom_recipient_het(a_r: float, a_shared: float) -> float:
    """Donor homozygous, recipient heterozygous: f = 1 - 2 A(r) / (A(r) + A(shared)).  (DESIGN.md)"""
    return 1.0 - 2.0 * a_r / (a_r + a_shared) if a_r + a_shared > 0 else math.nan


def f_donor_unique(a_unique: float, unique_copies: int, a_total: float) -> float:
    """Several donors: f_k = 2 sum A(U_k) / (c_k x sum A(all contributors' alleles)).

    U_k are donor k's alleles found in no other contributor, c_k the number of copies
    of those alleles in donor k's genome (1 per heterozygous allele, 2 if homozygous).
    Derived from the same two-copies-per-genome mixture model as the DESIGN.md
    formulas; with one donor and no shared allele it reduces to :func:`f_no_shared`.
    """
    if a_total <= 0 or unique_copies <= 0:
        return math.nan
    return 2.0 * a_unique / (unique_copies * a_total)


def _repeat_value(allele: str) -> float | None:
    try:
        return float(allele)
    except ValueError:
        return None


def stutter_position(unique: Iterable[str], others: Iterable[str], repeat: float = 1.0) -> bool:
    """True when a unique allele sits one repeat below another contributor's allele.

    The polymerase's n-1 stutter of that (major) allele lands on the unique allele and
    inflates its area, so the locus over-estimates the minor contributor (DESIGN.md).
    Microvariants compare on their repeat number (``9.3`` is one repeat below ``10.3``).
    """
    majors = [v for v in (_repeat_value(a) for a in others) if v is not None]
    for allele in unique:
        value = _repeat_value(allele)
        if value is not None and any(abs(value + repeat - m) < 1e-6 for m in majors):
            return True
    return False


def locus_fraction(
    recipient: frozenset[str], donor: frozenset[str], post: Mapping[str, float]
) -> tuple[str, float | None, bool]:
    """Informativity class, donor fraction and stutter flag of one locus, one donor.

    Dispatches to the DESIGN.md formula of the class; alleles missing from the post
    sample count as signal 0 (a donor allele not seen means no donor signal).
    """
    kind = classify_locus(recipient, donor)
    if kind in (NON_INFORMATIVE, NOT_CLASSIFIABLE):
        return kind, None, False
    shared = recipient & donor
    d_only, r_only = donor - recipient, recipient - donor
    area = {a: post.get(a, 0.0) for a in recipient | donor}
    if kind == NO_SHARED:
        f = f_no_shared([area[a] for a in d_only], [area[a] for a in r_only])
    elif kind == SHARED_BOTH_HET:
        (d,), (r,) = tuple(d_only), tuple(r_only)
        f = f_shared_both_het(area[d], area[r])
    elif kind == DONOR_HET_RECIPIENT_HOM:
        (d,), (s,) = tuple(d_only), tuple(shared)
        f = f_donor_het_recipient_hom(area[d], area[s])
    else:
        (r,), (s,) = tuple(r_only), tuple(shared)
        f = f_donor_hom_recipient_het(area[r], area[s])
    flagged = stutter_position(d_only, recipient) or stutter_position(r_only, donor)
    return kind, (None if math.isnan(f) else f), flagged


def locus_fraction_multi(
    donor: frozenset[str],
    others: Sequence[frozenset[str]],
    post: Mapping[str, float],
) -> tuple[str, float | None, bool]:
    """One donor among several contributors (recipient + other donors), one locus.

    Informative when the donor has an allele found in no other contributor (DESIGN.md,
    several donors); the fraction is :func:`f_donor_unique` over all contributors' alleles.
    """
    if not donor or len(donor) > 2 or any(not o or len(o) > 2 for o in others):
        return NOT_CLASSIFIABLE, None, False
    everyone_else = frozenset().union(*others)
    unique = donor - everyone_else
    if not unique:
        return NON_INFORMATIVE, None, False
    copies = 2 if len(donor) == 1 else len(unique)
    a_unique = sum(post.get(a, 0.0) for a in unique)
    a_total = sum(post.get(a, 0.0) for a in donor | everyone_else)
    f = f_donor_unique(a_unique, copies, a_total)
    flagged = stutter_position(unique, everyone_else | (donor - unique))
    return DONOR_UNIQUE, (None if math.isnan(f) else f), flagged


def outlier_mask(values: Sequence[float], n_sd: float = 2.0, min_remaining: int = 3) -> np.ndarray:
    """Loci kept: those within ``n_sd`` SD of the mean, applied only if >= ``min_remaining`` stay.

    One pass over all informative loci (DESIGN.md: leave out loci more than 2 SD from
    the mean when at least 3 remain). Returns a boolean mask, True = kept.
    """
    x = np.asarray(values, dtype=float)
    keep = np.ones(x.size, dtype=bool)
    if x.size < 3:
        return keep
    sd = x.std(ddof=1)
    if sd == 0:
        return keep
    candidate = np.abs(x - x.mean()) <= n_sd * sd
    return candidate if candidate.sum() >= min_remaining else keep


def summarize(values: Sequence[float]) -> tuple[float, float | None, int]:
    """Mean, sample SD (None for one locus) and n of the per-locus donor fractions."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, None, 0
    sd = float(x.std(ddof=1)) if x.size > 1 else None
    return float(x.mean()), sd, int(x.size)


def truncation_sd_factor(n_sd: float = 2.0) -> float:
    """SD of a normal sample kept within +-``n_sd`` SD, relative to the untruncated SD.

    Var(X | |X| <= c) = 1 - 2 c phi(c) / (2 Phi(c) - 1) for a standard normal X (truncated
    normal moments; Johnson, Kotz & Balakrishnan, Continuous Univariate Distributions,
    vol. 1, 2nd ed., 1994, ch. 13.10.1): 0.880 at c = 2. After the 2-SD outlier rule has
    left loci out, the SD of the remaining loci under-estimates the locus scatter by this
    factor and a CI built on it is too narrow; dividing by it restores the width.
    """
    from scipy import stats

    c = float(n_sd)
    if not math.isfinite(c) or c <= 0:
        return 1.0
    mass = 2.0 * stats.norm.cdf(c) - 1.0
    return math.sqrt(max(1.0 - 2.0 * c * stats.norm.pdf(c) / mass, 1e-12))


def mean_ci(mean: float, sd: float | None, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Confidence interval of the mean over loci: mean +- t(level, n-1) x SD / sqrt(n)."""
    if sd is None or n < 2:
        return None
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


# ---------------------------------------------------------------- per post sample


def signals_by_sample(peaks: Sequence[StrPeak]) -> dict[str, dict[str, dict[str, float]]]:
    """sample_id -> marker -> ``{allele: signal}`` (:func:`allele_signal`) of a peak table."""
    raw: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for p in peaks:
        raw[p.sample_id][p.marker].append((p.allele, p.area, p.height))
    return {s: {m: allele_signal(v) for m, v in loci.items()} for s, loci in raw.items()}


def quantify_post_sample(
    pairing: Pairing, signals: Mapping[str, Mapping[str, Mapping[str, float]]], config: ChimerismConfig
) -> tuple[list[ChimerismMarkerResult], list[ChimerismResult]]:
    """STR donor % of one post sample, per donor: mean over informative loci with SD and CI.

    Per locus, the recipient's and each donor's genotypes are called from their
    pre-transplant samples (:func:`call_genotype`) and the donor fraction f is computed
    from the post sample's allele signals with the DESIGN.md formula of the locus'
    informativity class (:func:`locus_fraction`; with several donors the unique-allele
    formula :func:`locus_fraction_multi`). Amelogenin and Y loci are left out
    (:func:`is_sex_locus`). Stutter-position loci are left out of the mean while
    ``config.str_min_loci`` other loci remain; then loci further than
    ``config.str_outlier_sd`` SD from the mean are left out (:func:`outlier_mask`).

    donor % = mean of 100 f over the kept loci, clipped to 0..100; SD over loci;
    CI = mean +- t(0.975, n-1) SD / sqrt(n) (:func:`mean_ci`), the SD rescaled by
    :func:`truncation_sd_factor` when the outlier rule removed loci. Detected when
    donor % >= ``config.str_lod_pct``; below it the CI is [0, max(CI high, LOD)]
    (:func:`gating.chimerism.limits.below_lod_interval`).

    Parameters
    ----------
    pairing : Pairing
        The post sample, its recipient pre-transplant sample and donor samples.
    signals : mapping
        sample_id -> marker -> ``{allele: area}`` (:func:`signals_by_sample`).
    config : ChimerismConfig
        LOD, genotype-calling threshold, outlier rule.

    Returns
    -------
    (list of ChimerismMarkerResult, list of ChimerismResult)
        One marker row per locus and donor (``used`` = in the mean, ``flag`` says why
        not), one result per donor; missing samples give results with a status.

    References
    ----------
    Thiede et al., Leukemia 2004;18:248-254; Kristt et al., Bone Marrow Transplant
    2007;39:255-268 (peak-area formulas, as in DESIGN.md).
    """
    sid = pairing.post.sample_id
    results, pairs = computable_donors(pairing, "str")
    if not pairs:
        return [], results
    post = signals[sid]
    recipient = {m: call_genotype(s, config.str_allele_min_fraction) for m, s in signals[pairing.pre_id].items()}
    genotypes = {
        d: {m: call_genotype(s, config.str_allele_min_fraction) for m, s in signals[sample].items()}
        for d, sample in pairs
    }
    markers: list[ChimerismMarkerResult] = []
    multi = len(pairs) > 1
    for donor_id, _ in pairs:
        loci = []  # (marker, kind, f, stutter)
        for marker in sorted(set(recipient) & set(genotypes[donor_id])):
            if is_sex_locus(marker):
                markers.append(ChimerismMarkerResult(sid, "str", marker, SEX_LOCUS, None, False, donor_id, "sex_locus"))
                continue
            if not post.get(marker):
                markers.append(ChimerismMarkerResult(sid, "str", marker, NOT_CLASSIFIABLE, None, False, donor_id, "no_peaks_in_post_sample"))
                continue
            if multi:
                others = [recipient[marker]] + [g.get(marker, frozenset()) for d, g in genotypes.items() if d != donor_id]
                kind, f, stutter = locus_fraction_multi(genotypes[donor_id][marker], others, post[marker])
            else:
                kind, f, stutter = locus_fraction(recipient[marker], genotypes[donor_id][marker], post[marker])
            loci.append((marker, kind, f, stutter))
        informative = [x for x in loci if x[2] is not None]
        clean = [x for x in informative if not x[3]]
        pool = clean if config.str_avoid_stutter_position and len(clean) >= config.str_min_loci else informative
        values = [100.0 * x[2] for x in pool]
        keep = outlier_mask(values, config.str_outlier_sd, config.str_min_loci)
        used = {x[0] for x, k in zip(pool, keep) if k}
        outliers = {x[0] for x, k in zip(pool, keep) if not k}
        for marker, kind, f, stutter in loci:
            flag = join_flags(["stutter_position" if stutter else None, "outlier" if marker in outliers else None])
            markers.append(ChimerismMarkerResult(
                sid, "str", marker, kind, None if f is None else 100.0 * f, marker in used, donor_id, flag))
        kept = [v for v, k in zip(values, keep) if k]
        if not kept:
            results.append(empty_result(sid, "str", donor_id, NO_INFORMATIVE_MARKER,
                                  "No informative STR locus: recipient and donor share the same alleles "
                                  "at every locus typed in both (or the post sample has no peaks there). "
                                  "Use another STR kit or a qPCR/ddPCR marker.", config.str_lod_pct))
            continue
        mean, sd, n = summarize(kept)
        # the SD of the loci kept after the 2-SD outlier rule is the SD of a truncated
        # sample: rescale it before it sets the CI width (truncation_sd_factor)
        ci_sd = sd if sd is None or not outliers else sd / truncation_sd_factor(config.str_outlier_sd)
        ci = mean_ci(mean, ci_sd, n)
        pct = min(max(mean, 0.0), 100.0)
        detected, status = classify(pct, config.str_lod_pct)
        message = None if detected else (
            f"Donor signal {pct:.2g} % is below the STR limit of detection ({config.str_lod_pct:g} %): "
            "reported as not detected; use qPCR or ddPCR for microchimerism.")
        lo, hi = (None, None) if ci is None else (max(ci[0], 0.0), min(ci[1], 100.0))
        if not detected:
            lo, hi = below_lod_interval(lo, hi, config.str_lod_pct)
        results.append(ChimerismResult(
            sid, "str", donor_id, pct, lo, hi,
            config.str_lod_pct, detected, n, status, message, sd_pct=sd))
    return markers, results
