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
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from assays.names import name_key
from assays.records import StrPeak
from gating.chimerism.limits import below_lod_interval, classify
from gating.chimerism.locus_statistics import mean_ci, outlier_mask, summarize, weighted_summary
from gating.chimerism.pairing import Pairing, computable_donors
from gating.chimerism.str_mixture import fit_contributors, share_interval
from gating.chimerism.str_calling import (
    ArtefactRules,
    LocusCall,
    degradation_slope,
    undo_degradation,
    repeat_value,
    INFERRED,
    ScreenedSample,
    call_reference,
    infer_missing_call,
    describe,
    screen_sample,
    stutter_ratios,
    subtract_stutter,
)
from gating.chimerism.records import (
    NO_INFORMATIVE_MARKER,
    RECIPIENT,
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
#: several donors: no allele of its own here, but allele doses that differ (12/12 beside 12/13),
#: which the joint fit uses (gating.chimerism.str_mixture)
DOSE_ONLY = "dose_differs_no_unique_allele"



def is_sex_locus(marker: str) -> bool:
    """Amelogenin and Y-chromosome loci (AMEL, DYS..., Y-indel): never averaged (DESIGN.md).

    Their copy number differs between sexes, so the diploid formulas do not hold.
    """
    key = name_key(marker)
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
    """No shared allele: f = sum A(D only) / (sum A(D only) + sum A(R only)).  (DESIGN.md)

    Parameters
    ----------
    donor_only, recipient_only : sequence of float
        Post-sample peak areas of the alleles only the donor / only the recipient carries.

    Returns
    -------
    float
        Donor fraction (0..1); NaN when both sums are 0.

    Examples
    --------
    >>> f_no_shared([300.0, 100.0], [600.0])
    0.4
    """
    d, r = float(np.sum(donor_only)), float(np.sum(recipient_only))
    return d / (d + r) if d + r > 0 else math.nan


def f_shared_both_het(a_d: float, a_r: float) -> float:
    """One shared allele, both heterozygous: f = A(d) / (A(d) + A(r)) over the unique alleles.  (DESIGN.md)

    Parameters
    ----------
    a_d, a_r : float
        Post-sample peak areas of the donor's and the recipient's unique allele.

    Returns
    -------
    float
        Donor fraction (0..1); NaN when both areas are 0.
    """
    return a_d / (a_d + a_r) if a_d + a_r > 0 else math.nan


def f_donor_het_recipient_hom(a_d: float, a_shared: float) -> float:
    """Donor heterozygous, recipient homozygous for the shared allele: f = 2 A(d) / (A(d) + A(shared)).  (DESIGN.md)

    Parameters
    ----------
    a_d : float
        Post-sample peak area of the donor's unique allele.
    a_shared : float
        Peak area of the shared allele (two recipient copies, one donor copy).

    Returns
    -------
    float
        Donor fraction (0..1 for consistent areas); NaN when both areas are 0.
    """
    return 2.0 * a_d / (a_d + a_shared) if a_d + a_shared > 0 else math.nan


def f_donor_hom_recipient_het(a_r: float, a_shared: float) -> float:
    """Donor homozygous, recipient heterozygous: f = 1 - 2 A(r) / (A(r) + A(shared)).  (DESIGN.md)

    Parameters
    ----------
    a_r, a_shared : float
        Post-sample peak areas of the recipient's unique allele and of the shared allele
        (two donor copies, one recipient copy).

    Returns
    -------
    float
        Donor fraction, NaN when both areas are 0.
    """
    return 1.0 - 2.0 * a_r / (a_r + a_shared) if a_r + a_shared > 0 else math.nan


def f_donor_unique(a_unique: float, unique_copies: int, a_total: float) -> float:
    """Several donors: f_k = 2 sum A(U_k) / (c_k x sum A(all contributors' alleles)).

    U_k are donor k's alleles found in no other contributor, c_k the number of copies
    of those alleles in donor k's genome (1 per heterozygous allele, 2 if homozygous).
    Derived from the same two-copies-per-genome mixture model as the DESIGN.md
    formulas; with one donor and no shared allele it reduces to :func:`f_no_shared`.

    Parameters
    ----------
    a_unique : float
        Post-sample peak area summed over donor k's unique alleles U_k.
    unique_copies : int
        c_k, copies of those alleles in donor k's genome.
    a_total : float
        Peak area summed over every contributor's alleles.

    Returns
    -------
    float
        Donor k's fraction (0..1); NaN without signal or unique copies.
    """
    if a_total <= 0 or unique_copies <= 0:
        return math.nan
    return 2.0 * a_unique / (unique_copies * a_total)


def stutter_position(unique: Iterable[str], others: Iterable[str], repeat: float = 1.0) -> bool:
    """True when a unique allele sits one repeat below another contributor's allele.

    The polymerase's n-1 stutter of that (major) allele lands on the unique allele and
    inflates its area, so the locus over-estimates the minor contributor (DESIGN.md).
    Microvariants compare on their repeat number (``9.3`` is one repeat below ``10.3``).
    """
    majors = [v for v in (repeat_value(a) for a in others) if v is not None]
    for allele in unique:
        value = repeat_value(allele)
        if value is not None and any(abs(value + repeat - m) < 1e-6 for m in majors):
            return True
    return False


def locus_fraction(
    recipient: frozenset[str], donor: frozenset[str], post: Mapping[str, float]
) -> tuple[str, float | None, bool]:
    """Informativity class, donor fraction and stutter flag of one locus, one donor.

    Dispatches to the DESIGN.md formula of the class; alleles missing from the post
    sample count as signal 0 (a donor allele not seen means no donor signal).

    Parameters
    ----------
    recipient, donor : frozenset of str
        Pre-transplant alleles of the recipient and of the donor at this locus.
    post : mapping of str to float
        Post-sample peak area per allele.

    Returns
    -------
    tuple
        ``(informativity class, donor fraction 0..1 or None, stutter flag)``; the
        fraction is None for a non-informative or unclassifiable locus.
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

    Parameters
    ----------
    donor : frozenset of str
        This donor's alleles at the locus.
    others : sequence of frozenset of str
        The recipient's and the other donors' alleles.
    post : mapping of str to float
        Post-sample peak area per allele.

    Returns
    -------
    tuple
        ``(class, donor fraction 0..1 or None, stutter flag)``.
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


def locus_fraction_joint(
    donor: frozenset[str],
    others: Sequence[frozenset[str]],
    post: Mapping[str, float],
    floor: float = 0.02,
    iterations: int = 4,
) -> tuple[str, float | None, bool, float | None]:
    """One contributor among several, one locus: every allele's signal fitted at once.

    Same informativity rule as :func:`locus_fraction_multi` (the contributor needs an
    allele no other contributor carries), but the fraction uses all contributors'
    alleles, shared ones included: each allele's signal is the sum over contributors
    of their copies of it times their share, A(a) = sum_k b_k c_k(a) (c_k(a) = 0, 1,
    or 2 for a homozygote), and the shares b_k are fitted by non-negative weighted
    least squares with weights 1 / A_hat(a)^2, iterated (peak signals scatter in
    proportion to their size; ``floor`` x the locus' largest signal bounds the weight
    of absent alleles). f = b_donor / sum_k b_k. On exact mixtures it equals
    :func:`f_donor_unique`; on real peaks a shared allele adds what it says about the
    shares (least-squares deconvolution of STR mixtures: Wang, Xue & Birdwell, J Forensic
    Sci 2006;51:1284-1297).

    Returns
    -------
    (kind, f, stutter flag, variance)
        ``variance`` is Var(f) from the fit's covariance (delta method), up to the common
        factor of the peak-signal scatter: relative weights of loci, not an interval.
    """
    from scipy.optimize import nnls

    kind, f_unique, flagged = locus_fraction_multi(donor, others, post)
    if kind != DONOR_UNIQUE or f_unique is None:
        return kind, f_unique, flagged, None
    genotypes = [donor, *others]
    alleles = sorted(frozenset().union(*genotypes))
    copies = np.array([[(2 if len(g) == 1 else 1) if a in g else 0 for g in genotypes] for a in alleles], float)
    signal = np.array([post.get(a, 0.0) for a in alleles], float)
    signal = signal / signal.sum()
    fitted, low = signal.copy(), floor * signal.max()
    for _ in range(iterations):
        scale = np.maximum(fitted, low)
        shares, _ = nnls(copies / scale[:, None], signal / scale)
        fitted = copies @ shares
    total = float(shares.sum())
    if total <= 0:
        return kind, f_unique, flagged, None
    f = float(shares[0]) / total
    grad = -shares / total**2
    grad[0] += 1.0 / total
    cov = np.linalg.pinv(copies.T @ (copies / np.maximum(fitted, low)[:, None] ** 2))
    return kind, f, flagged, float(grad @ cov @ grad)


# ---------------------------------------------------------------- per post sample


def screen_samples(peaks: Sequence[StrPeak], rules: ArtefactRules) -> dict[str, ScreenedSample]:
    """sample_id -> its peaks after the artefact screen (:func:`~gating.chimerism.str_calling.screen_sample`)."""
    by_sample: dict[str, list[StrPeak]] = defaultdict(list)
    for p in peaks:
        by_sample[p.sample_id].append(p)
    return {s: screen_sample(v, rules) for s, v in by_sample.items()}


@dataclass
class _Locus:
    marker: str
    kind: str
    f: float | None
    stutter: bool  # a unique allele in stutter position
    corrected: bool  # the expected stutter was subtracted
    artefact: bool  # an artefact sits on a contributor allele of the post sample
    flags: list[str]
    record: dict
    weight: float = 1.0  # relative precision among the loci (several donors: 1 / Var f)
    signal: dict | None = None  # the post signal after degradation and stutter corrections
    unreadable: frozenset = frozenset()  # contributor alleles whose post peak an artefact took


_NO_CALL = LocusCall(frozenset())


def _alleles(call: LocusCall | None) -> str | None:
    if call is None or not call.alleles:
        return None
    return "/".join(sorted(call.alleles, key=lambda a: (repeat_value(a) is None, repeat_value(a) or 0, a)))


def quantify_post_sample(
    pairing: Pairing, samples: Mapping[str, ScreenedSample], config: ChimerismConfig
) -> tuple[list[ChimerismMarkerResult], list[ChimerismResult]]:
    """STR donor % of one post sample, per donor: mean over informative loci with SD and CI.

    Per locus, the recipient's and each donor's genotypes are called from their
    screened pre-transplant peaks (:func:`~gating.chimerism.str_calling.call_reference`:
    pull-up, spikes, dye blobs and off-ladder peaks removed, alleles at >= half the
    locus maximum height); where exactly one reference has no call at a locus, its
    genotype is read off the post sample when that is certain (two post alleles no
    available reference carries, :func:`~gating.chimerism.str_calling.infer_missing_call`;
    marker flag ``inferred_genotype_<who>``), else the locus stays unused
    (``no_reference_call_<who>``) unless, with several donors, the shares fitted on the
    other loci allow one genotype only (flag ``genotype_from_fit_<who>``, see below).
    The donor fraction f is computed from the post sample's allele signals with the DESIGN.md formula of the locus' informativity class
    (:func:`locus_fraction`; with several donors, at loci where the contributor has an
    allele no other contributor carries, the joint fit of every allele
    :func:`locus_fraction_joint`). Before that, the back-stutter ratio measured on the
    reference samples is subtracted from the post signals
    (:func:`~gating.chimerism.str_calling.subtract_stutter`) and the post sample's
    degradation slope undone (:func:`~gating.chimerism.str_calling.degradation_slope`:
    long alleles of degraded DNA read low), so stutter-position loci
    stay in the mean; a locus whose stutter ratio could not be measured is left out
    while ``config.str_min_loci`` other loci remain, as is a locus with an artefact on a
    contributor allele of the post sample. Amelogenin and Y loci are left out
    (:func:`is_sex_locus`). Loci whose modified z-score exceeds ``config.str_outlier_z``
    are outliers (:func:`outlier_mask`, median/MAD; it still works with 4-6 loci; with
    several donors each locus' deviation is judged on its own precision).

    One donor: donor % = mean of 100 f over the kept loci, clipped to 0..100; SD over
    loci; CI = mean +- t(0.975, n-1) SD / sqrt(n) (:func:`mean_ci`). Several donors:
    every contributor's share (recipient included) is fitted at once over every usable
    locus (:func:`gating.chimerism.str_mixture.fit_contributors`: shared alleles and dose
    differences count, an unreadable allele or one in an unremoved stutter position
    leaves the rest of its locus in, loci the mixture model does not explain, judged
    first at the shares of the per-locus means below, are left out with flag
    ``outlier``); CI: the wider of the delete-one-locus jackknife interval and the
    per-locus mean's, centred on the fitted share
    (:func:`~gating.chimerism.str_mixture.share_interval`; n = the loci fitted); a marker row's
    ``donor_pct`` is that locus' own value (:func:`locus_fraction_joint`) and ``used``
    says whether the locus entered the fit. When the loci cannot tell the contributors
    apart, each falls back to the precision-weighted mean of its per-locus values
    (1 / Var f: :func:`weighted_summary`). Detected when
    donor % >= ``config.str_lod_pct``; below it the CI is [0, max(CI high, LOD)]
    (:func:`gating.chimerism.limits.below_lod_interval`).

    Parameters
    ----------
    pairing : Pairing
        The post sample, its recipient pre-transplant sample and donor samples.
    samples : mapping
        sample_id -> screened peaks (:func:`screen_samples`).
    config : ChimerismConfig
        LOD, genotype-calling and artefact rules, outlier rule.

    Returns
    -------
    (list of ChimerismMarkerResult, list of ChimerismResult)
        One marker row per locus and donor (``used`` = in the mean, ``flag`` says why
        not, ``recipient_alleles``/``donor_alleles`` the calls and ``excluded`` every
        peak left out with its reason), one result per donor; missing samples give
        results with a status.

    References
    ----------
    Thiede et al., Leukemia 2004;18:248-254; Kristt et al., Bone Marrow Transplant
    2007;39:255-268 (peak-area formulas, as in DESIGN.md); Iglewicz & Hoaglin, How to
    Detect and Handle Outliers, ASQC 1993 (modified z-score).
    """
    sid = pairing.post.sample_id
    results, pairs = computable_donors(pairing, "str")
    if not pairs:
        return [], results
    refs = {RECIPIENT: samples[pairing.pre_id]} | {d: samples[sample] for d, sample in pairs}
    calls = {
        who: {m: call_reference(s.height.get(m, {}), s.excluded.get(m, ()), config.str_allele_min_fraction,
                                config.str_min_het_balance)
              for m in set(s.height) | set(s.excluded)}
        for who, s in refs.items()
    }
    ratios = stutter_ratios(list(refs.values()), list(calls.values())) if config.str_stutter_correction else {}
    post = samples[sid]
    decay = degradation_slope(post, [m for m in post.signal if not is_sex_locus(m)]) \
        if config.str_degradation_correction else 0.0
    for marker, signal in post.signal.items():
        inferred = None if is_sex_locus(marker) else infer_missing_call(
            {who: c.get(marker, _NO_CALL) for who, c in calls.items()}, signal, ratios.get(marker),
            min_balance=config.str_min_het_balance)
        if inferred is not None:
            calls[inferred[0]][marker] = inferred[1]
    markers: list[ChimerismMarkerResult] = []
    multi = len(pairs) > 1
    # beside several donors the recipient is a contributor like them: fitted with them, or
    # (fallback) estimated on its own unique alleles and closed to 100 % (gating.chimerism.shares)
    everyone = [d for d, _ in pairs] + ([RECIPIENT] if multi else [])
    names = sorted(set().union(*calls.values()) | set(post.signal))
    per = {who: [_locus(marker, who, calls, post, ratios, multi, decay) for marker in names] for who in everyone}
    means = {who: _per_locus_mean(per[who], config, multi) for who in everyone}
    fit, fitted = None, {}
    if multi:  # the per-locus means, closed to 1, are the fit's robust start
        start = [weighted_summary(*means[who][:2])[0] if means[who][0] else math.nan for who in calls]
        start = np.array(start) / np.sum(start) if all(v > 0 for v in start) else None
        fit, fitted = fit_contributors(next(iter(per.values())), calls, ratios, config.str_outlier_z,
                                       config.str_min_loci, start)
    for donor_id in everyone:
        loci = per[donor_id]
        kept, weights, used, outliers = means[donor_id]
        if fit is not None:
            used, outliers = set(fit.markers), set(fit.misfits)
        for x in loci if donor_id != RECIPIENT else ():
            flag = join_flags(x.flags + ["outlier" if x.marker in outliers else None]
                              + ([f"genotype_from_fit_{fitted[x.marker][0]}"] if x.marker in fitted else []))
            kind = DOSE_ONLY if x.kind == NON_INFORMATIVE and x.marker in used else x.kind
            record = dict(x.record)
            if x.marker in fitted:  # the genotype read off the fit goes where the call would be
                whose, alleles = fitted[x.marker]
                key = {RECIPIENT: "recipient_alleles", donor_id: "donor_alleles"}.get(whose)
                if key:
                    record[key] = _alleles(LocusCall(alleles))
            markers.append(ChimerismMarkerResult(
                sid, "str", x.marker, kind, None if x.f is None else 100.0 * x.f, x.marker in used, donor_id, flag,
                **record))
        if fit is not None:
            mean, sd, n, ci = share_interval(fit, list(calls).index(donor_id), kept, weights)
        elif not kept and donor_id == RECIPIENT:
            continue  # the recipient's share then follows from the donors' (shares.py)
        elif not kept:
            results.append(empty_result(sid, "str", donor_id, NO_INFORMATIVE_MARKER,
                                        "No informative STR locus: recipient and donor share the same alleles "
                                        "at every locus typed in both (or the post sample has no peaks there). "
                                        "Use another STR kit or a qPCR/ddPCR marker.", config.str_lod_pct))
            continue
        else:
            mean, sd, n = weighted_summary(kept, weights) if multi else summarize(kept)
            ci = mean_ci(mean, sd, n)
        pct = min(max(mean, 0.0), 100.0)
        detected, status = classify(pct, config.str_lod_pct)
        message = None if detected else (
            f"Donor signal {pct:.2g} % is below the STR limit of detection ({config.str_lod_pct:g} %): "
            "reported as not detected; use qPCR or ddPCR for microchimerism.")
        lo, hi = (None, None) if ci is None else (max(ci[0], 0.0), min(ci[1], 100.0))
        if not detected:
            lo, hi = below_lod_interval(lo, hi, config.str_lod_pct)
        who = {"donor_id": None, "contributor": RECIPIENT} if donor_id == RECIPIENT else {"donor_id": donor_id}
        results.append(ChimerismResult(
            sample_id=sid, method="str", donor_pct=pct, ci_low=lo, ci_high=hi, lod_pct=config.str_lod_pct,
            detected=detected, n_markers=n, status=status, message=message, sd_pct=sd, **who))
    return markers, results


def _per_locus_mean(loci: Sequence[_Locus], config: ChimerismConfig, multi: bool):
    """The loci kept for one contributor's per-locus mean: (values %, weights, used, outliers).

    Stutter-position loci without a measured ratio and loci with an artefact on an allele
    are left out while ``config.str_min_loci`` others remain; then the outlier rule.
    """
    informative = [x for x in loci if x.f is not None]
    clean = [x for x in informative if not x.artefact and not (x.stutter and not x.corrected)]
    pool = clean if config.str_avoid_stutter_position and len(clean) >= config.str_min_loci else informative
    values = [100.0 * x.f for x in pool]
    keep = outlier_mask(values, config.str_outlier_z, config.str_min_loci, config.str_outlier_min_spread_pct,
                        [x.weight for x in pool] if multi else None)
    return ([v for v, k in zip(values, keep) if k], [x.weight for x, k in zip(pool, keep) if k],
            {x.marker for x, k in zip(pool, keep) if k}, {x.marker for x, k in zip(pool, keep) if not k})


def _locus(marker, donor_id, calls, post: ScreenedSample, ratios, multi: bool, decay: float) -> _Locus:
    """One locus of one donor: class, fraction and what to flag and record."""
    rec_call, don_call = calls[RECIPIENT].get(marker, _NO_CALL), calls[donor_id].get(marker, _NO_CALL)
    excluded = describe(rec_call.excluded, "recipient") + describe(don_call.excluded, f"donor {donor_id}")
    record = {"recipient_alleles": _alleles(rec_call), "donor_alleles": _alleles(don_call)}
    flags = [f"{who}_{f}" for who, call in (("recipient", rec_call), ("donor", don_call))
             for f in call.flags if f != INFERRED]
    flags += [f"inferred_genotype_{w}" for w, c in calls.items() if INFERRED in c.get(marker, _NO_CALL).flags]
    if is_sex_locus(marker):
        record["excluded"] = "; ".join(excluded) or None
        return _Locus(marker, SEX_LOCUS, None, False, False, False, ["sex_locus"], record)
    contributors = rec_call.alleles | frozenset().union(*(c[marker].alleles for w, c in calls.items()
                                                          if w != RECIPIENT and marker in c))
    at_alleles = [(a, r) for a, r in post.excluded.get(marker, ()) if a in contributors]
    excluded += describe(at_alleles, "post")
    record["excluded"] = "; ".join(excluded) or None
    # a reference without alleles here (failed locus, or every peak an artefact) leaves the
    # mixture's alleles unassignable: say whose, so the lab sees why the locus is unused
    uncalled = [w for w, c in calls.items() if not c.get(marker, _NO_CALL).alleles]
    signal = post.signal.get(marker)
    # an artefact beside a clean peak of the allele is simply dropped; when no clean peak
    # is left (a true allele taken for pull-up, or merged with one) the allele is unknown
    on_allele = [a for a, _ in at_alleles if not (signal or {}).get(a)]
    corrected = marker in ratios
    if signal:
        signal = undo_degradation(signal, post.size.get(marker, {}), decay)
        signal = subtract_stutter(signal, ratios[marker]) if corrected else signal
    if uncalled:  # the signal stays: the joint fit may still read the genotype off it (_joint_fit)
        return _Locus(marker, NOT_CLASSIFIABLE, None, False, corrected, False,
                      flags + [f"no_reference_call_{w}" for w in uncalled], record, signal=signal or None,
                      unreadable=frozenset(on_allele))
    if not signal:
        return _Locus(marker, NOT_CLASSIFIABLE, None, False, False, False, flags + ["no_peaks_in_post_sample"], record)
    if multi:
        others = [c[marker].alleles if marker in c else frozenset() for w, c in calls.items() if w != donor_id]
        kind, f, stutter, variance = locus_fraction_joint(don_call.alleles, others, signal)
        weight = 1.0 / variance if variance and variance > 0 else 1.0
    else:
        kind, f, stutter = locus_fraction(rec_call.alleles, don_call.alleles, signal)
        weight = 1.0
    flags += ["stutter_corrected" if stutter and corrected else "stutter_position" if stutter else None,
              "artefact_on_allele" if on_allele else None]
    return _Locus(marker, kind, f, stutter, corrected, bool(on_allele), flags, record, weight, signal,
                  frozenset(on_allele))
