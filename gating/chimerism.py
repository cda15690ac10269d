"""Donor chimerism per post-transplant sample: records, configuration and the one entry point.

:func:`quantify_chimerism` pairs each ``post`` sample of the sample sheet with its patient's
``recipient_pre`` sample and the patient's donors' samples (DESIGN.md, Chimerism), then
applies the STR, qPCR and ddPCR formulas of :mod:`gating.str_chimerism`,
:mod:`gating.qpcr_chimerism` and :mod:`gating.ddpcr_chimerism`. Missing pieces give a
result with ``donor_pct = None``, a ``status`` and a plain ``message``, never an exception.

Donor % is a percentage (0..100). Small values are kept as computed: a detected 0.03 %
is 0.03, and a value below the LOD keeps its number with ``detected = False``.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from assays.records import DdpcrWell, PatientCycle, QpcrWell, SampleSheetRow, StrPeak
from gating import ddpcr_chimerism as dd
from gating import qpcr_chimerism as qp
from gating import str_chimerism as st

DEFAULT_REFERENCE_GENES: tuple[str, ...] = (
    "RPP30",
    "RNaseP",
    "ALB",
    "GAPDH",
    "HBB",
    "ACTB",
    "TERT",
    "B2M",
    "CCR5",
)

# status values of ChimerismResult
OK = "ok"
BELOW_LOD = "below_lod"
NOT_DETECTED = "not_detected"
NOT_QUANTIFIABLE = "detected_not_quantifiable"
NO_PRE_SAMPLE = "no_pre_sample"
NO_DONOR_SAMPLE = "no_donor_sample"
NO_DONOR_LISTED = "no_donor_listed"
NO_INFORMATIVE_MARKER = "no_informative_marker"
REFERENCE_FAILED = "reference_failed"


@dataclass
class ChimerismConfig:
    """Settings of the chimerism quantification; every field has the DESIGN.md default."""

    reference_genes: tuple[str, ...] = DEFAULT_REFERENCE_GENES
    str_lod_pct: float = 1.0
    qpcr_lod_pct: float = 0.1
    #: LOQ without a dilution series; None = same as the LOD.
    qpcr_loq_pct: float | None = None
    #: fixed ddPCR LoD (%); None = from the recipient's pre-transplant wells (LoB) and Poisson.
    ddpcr_lod_pct: float | None = None
    str_allele_min_fraction: float = 0.25
    str_outlier_sd: float = 2.0
    str_min_loci: int = 3
    #: leave stutter-position loci out of the mean while >= str_min_loci other loci remain
    str_avoid_stutter_position: bool = True
    qpcr_max_replicate_sd: float = 0.5
    qpcr_efficiency: float = 2.0
    qpcr_slope_range: tuple[float, float] = (-3.6, -3.1)
    qpcr_min_r2: float = 0.98
    #: STANDARD wells of a marker are a donor-in-recipient dilution series, quantity = donor %
    qpcr_standards_are_donor_pct: bool = True
    #: Ct above this counts as not detected (late non-specific amplification); None = off
    qpcr_ct_cutoff: float | None = None
    #: with a usable % dilution series, read donor % off it (DESIGN.md alternative to ΔΔCt)
    qpcr_dilution_readout: bool = True
    ddpcr_reference_copies_per_genome: float = 2.0
    ddpcr_marker_copies_per_donor_genome: float = 1.0
    #: take the marker copies per donor genome (1 or 2) from the donor sample when clear
    ddpcr_infer_marker_copies: bool = True
    ddpcr_ci_level: float = 0.95
    #: expected copies of the Poisson LoD floor (P(no droplet) = e^-3 = 5 %)
    ddpcr_lod_min_positives: float = 3.0
    #: fewest marker-positive droplets that make a ddPCR detection call (LoB >= this - 1)
    ddpcr_min_positive_droplets: int = 3
    #: a pre-transplant recipient reading above this donor % makes a marker non-informative
    informative_max_recipient_pct: float = 1.0


@dataclass
class ChimerismMarkerResult:
    """One locus (STR) or target (qPCR/ddPCR) of one post sample for one donor."""

    sample_id: str
    method: str
    marker: str
    informative_type: str
    donor_pct: float | None
    used: bool
    donor_id: str | None
    flag: str | None = None


@dataclass
class ChimerismResult:
    """Donor % of one post sample by one method for one donor."""

    sample_id: str
    method: str  # str / qpcr / ddpcr
    donor_id: str | None
    donor_pct: float | None
    ci_low: float | None
    ci_high: float | None
    lod_pct: float | None
    detected: bool | None
    n_markers: int
    status: str
    message: str | None = None
    sd_pct: float | None = None  # SD over loci/markers (STR: DESIGN.md asks mean, SD, n)
    loq_pct: float | None = None


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def is_reference_target(target: str, reference_genes: Iterable[str]) -> bool:
    """True when ``target`` names a reference gene (case/punctuation-blind).

    ``RNase P``, ``rnasep`` and ``RPP30_HEX`` match; ``ACTBL2`` does not match ``ACTB``:
    the gene must be a whole leading run of the target's words.
    """
    words = [w for w in re.split(r"[^0-9A-Za-z]+", target.casefold()) if w]
    prefixes = {"".join(words[: k + 1]) for k in range(len(words))}
    return any(_norm(g) in prefixes for g in reference_genes)


# ---------------------------------------------------------------- roles


def _latest_rows(sheet: Sequence[SampleSheetRow]) -> list[SampleSheetRow]:
    rows: dict[str, SampleSheetRow] = {}
    for row in sheet:  # a later row for the same sample_id replaces the earlier one
        rows.pop(row.sample_id, None)
        rows[row.sample_id] = row
    return list(rows.values())


def _role(row: SampleSheetRow) -> str:
    return (row.role or "").strip().casefold()


def patient_donors(
    post: SampleSheetRow, sheet: Sequence[SampleSheetRow], registry: Sequence[PatientCycle]
) -> list[str]:
    """Donors that may contribute to ``post``: registry donors of cycles up to its collection
    date, plus donor sample rows of the same patient whose donor the registry does not list."""
    cycles = [c for c in registry if c.patient_id == post.patient_id and c.donor_id]
    ids = [c.donor_id for c in sorted(cycles, key=lambda c: c.mst_date) if c.mst_date <= post.collection_date]
    registered = {c.donor_id for c in cycles}
    ids += [
        r.donor_id
        for r in sheet
        if _role(r) == "donor" and r.patient_id == post.patient_id and r.donor_id
        and r.donor_id not in registered
    ]
    return list(dict.fromkeys(i for i in ids if i))


def _pick(rows: Iterable[SampleSheetRow], have: set[str], patient_id: str) -> str | None:
    candidates = [r for r in rows if r.sample_id in have]
    if not candidates:
        return None
    # the patient's own row first, then the most recent collection
    candidates.sort(key=lambda r: (r.patient_id == patient_id, r.collection_date), reverse=True)
    return candidates[0].sample_id


@dataclass
class _Pairing:
    post: SampleSheetRow
    pre_id: str | None
    donors: list[tuple[str, str | None]]  # (donor_id, donor sample_id or None)


def _pairing(post, sheet, registry, have: set[str]) -> _Pairing:
    pre = [r for r in sheet if _role(r) == "recipient_pre" and r.patient_id == post.patient_id]
    donors = []
    for donor_id in patient_donors(post, sheet, registry):
        rows = [r for r in sheet if _role(r) == "donor" and r.donor_id == donor_id]
        donors.append((donor_id, _pick(rows, have, post.patient_id)))
    return _Pairing(post, _pick(pre, have, post.patient_id), donors)


def _missing(pairing: _Pairing, method: str) -> tuple[list[ChimerismResult], list[tuple[str, str]]]:
    """Results for what is missing, and the (donor_id, sample_id) pairs that can be computed."""
    sid = pairing.post.sample_id
    label = method.upper() if method != "ddpcr" else "ddPCR"
    if not pairing.donors:
        return [
            _empty(sid, method, None, NO_DONOR_LISTED,
                   f"No donor is known for this sample's patient: add the donor_id to the patient "
                   f"registry (per MST cycle) or a donor row to the sample sheet.")
        ], []
    if pairing.pre_id is None:
        return [
            _empty(sid, method, d, NO_PRE_SAMPLE,
                   f"No pre-transplant recipient sample (role recipient_pre) of this patient was "
                   f"measured by {label}: run the recipient's pre-transplant DNA and list it in the sample sheet.")
            for d, _ in pairing.donors
        ], []
    out, ok = [], []
    for donor_id, donor_sample in pairing.donors:
        if donor_sample is None:
            out.append(
                _empty(sid, method, donor_id, NO_DONOR_SAMPLE,
                       f"No sample of donor {donor_id} (role donor) was measured by {label}: run the "
                       f"donor's DNA and list it in the sample sheet with donor_id {donor_id}.")
            )
        else:
            ok.append((donor_id, donor_sample))
    return out, ok


def _empty(sample_id, method, donor_id, status, message, lod=None) -> ChimerismResult:
    return ChimerismResult(sample_id, method, donor_id, None, None, None, lod, None, 0, status, message)


def _classify(pct: float, lod: float, loq: float | None = None) -> tuple[bool, str]:
    if pct < lod:
        return False, BELOW_LOD
    if loq is not None and pct < loq:
        return True, NOT_QUANTIFIABLE
    return True, OK


def _below_lod_interval(ci_low: float | None, ci_high: float | None, lod: float) -> tuple[float, float]:
    """CI reported for a result that is not detected (below the LOD): [0, max(CI high, LOD)].

    The LOD is the lowest donor % detected with 95 % probability (CLSI EP17-A2;
    Armbruster & Pry, Clin Biochem Rev 2008). Inverting that detection test, a
    non-detection is compatible at the 5 % level with every true value from 0 up to the
    LOD, so the lower bound is 0 and the upper bound at least the LOD. The measurement
    CI alone is not valid there: below the LOD the signal is censored (STR peaks under
    the analytical threshold count as 0, qPCR averages only the replicates that
    amplified) or dominated by blank signal (ddPCR false-positive droplets at 0 % donor).
    """
    high = lod if ci_high is None or not math.isfinite(ci_high) else max(ci_high, lod)
    return 0.0, high


def _join(flags: Iterable[str | None]) -> str | None:
    kept = [f for f in flags if f]
    return ";".join(dict.fromkeys(kept)) if kept else None


# ---------------------------------------------------------------- STR


def _str_signals(peaks: Sequence[StrPeak]) -> dict[str, dict[str, dict[str, float]]]:
    raw: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for p in peaks:
        raw[p.sample_id][p.marker].append((p.allele, p.area, p.height))
    return {s: {m: st.allele_signal(v) for m, v in loci.items()} for s, loci in raw.items()}


def _str_for_post(pairing, signals, config) -> tuple[list, list]:
    sid = pairing.post.sample_id
    results, pairs = _missing(pairing, "str")
    if not pairs:
        return [], results
    post = signals[sid]
    recipient = {m: st.call_genotype(s, config.str_allele_min_fraction) for m, s in signals[pairing.pre_id].items()}
    genotypes = {
        d: {m: st.call_genotype(s, config.str_allele_min_fraction) for m, s in signals[sample].items()}
        for d, sample in pairs
    }
    markers: list[ChimerismMarkerResult] = []
    multi = len(pairs) > 1
    for donor_id, _ in pairs:
        loci = []  # (marker, kind, f, stutter)
        for marker in sorted(set(recipient) & set(genotypes[donor_id])):
            if st.is_sex_locus(marker):
                markers.append(ChimerismMarkerResult(sid, "str", marker, st.SEX_LOCUS, None, False, donor_id, "sex_locus"))
                continue
            if not post.get(marker):
                markers.append(ChimerismMarkerResult(sid, "str", marker, st.NOT_CLASSIFIABLE, None, False, donor_id, "no_peaks_in_post_sample"))
                continue
            if multi:
                others = [recipient[marker]] + [g.get(marker, frozenset()) for d, g in genotypes.items() if d != donor_id]
                kind, f, stutter = st.locus_fraction_multi(genotypes[donor_id][marker], others, post[marker])
            else:
                kind, f, stutter = st.locus_fraction(recipient[marker], genotypes[donor_id][marker], post[marker])
            loci.append((marker, kind, f, stutter))
        informative = [x for x in loci if x[2] is not None]
        clean = [x for x in informative if not x[3]]
        pool = clean if config.str_avoid_stutter_position and len(clean) >= config.str_min_loci else informative
        values = [100.0 * x[2] for x in pool]
        keep = st.outlier_mask(values, config.str_outlier_sd, config.str_min_loci)
        used = {x[0] for x, k in zip(pool, keep) if k}
        outliers = {x[0] for x, k in zip(pool, keep) if not k}
        for marker, kind, f, stutter in loci:
            flag = _join(["stutter_position" if stutter else None, "outlier" if marker in outliers else None])
            markers.append(ChimerismMarkerResult(
                sid, "str", marker, kind, None if f is None else 100.0 * f, marker in used, donor_id, flag))
        kept = [v for v, k in zip(values, keep) if k]
        if not kept:
            results.append(_empty(sid, "str", donor_id, NO_INFORMATIVE_MARKER,
                                  "No informative STR locus: recipient and donor share the same alleles "
                                  "at every locus typed in both (or the post sample has no peaks there). "
                                  "Use another STR kit or a qPCR/ddPCR marker.", config.str_lod_pct))
            continue
        mean, sd, n = st.summarize(kept)
        # the SD of the loci kept after the 2-SD outlier rule is the SD of a truncated
        # sample: rescale it before it sets the CI width (st.truncation_sd_factor)
        ci_sd = sd if sd is None or not outliers else sd / st.truncation_sd_factor(config.str_outlier_sd)
        ci = st.mean_ci(mean, ci_sd, n)
        pct = min(max(mean, 0.0), 100.0)
        detected, status = _classify(pct, config.str_lod_pct)
        message = None if detected else (
            f"Donor signal {pct:.2g} % is below the STR limit of detection ({config.str_lod_pct:g} %): "
            "reported as not detected; use qPCR or ddPCR for microchimerism.")
        lo, hi = (None, None) if ci is None else (max(ci[0], 0.0), min(ci[1], 100.0))
        if not detected:
            lo, hi = _below_lod_interval(lo, hi, config.str_lod_pct)
        results.append(ChimerismResult(
            sid, "str", donor_id, pct, lo, hi,
            config.str_lod_pct, detected, n, status, message, sd_pct=sd))
    return markers, results


# ---------------------------------------------------------------- qPCR


def _qpcr_index(wells: Sequence[QpcrWell]) -> dict[str, dict[str, list[float | None]]]:
    index: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for w in wells:
        if (w.task or "UNKNOWN").upper() in {"UNKNOWN", "UNKN"}:
            index[w.sample_id][w.target].append(w.ct)
    return index


def _reference(targets: Iterable[str], genes: Sequence[str]) -> str | None:
    found = [t for t in targets if is_reference_target(t, genes)]
    if not found:
        return None
    order = {_norm(g): i for i, g in enumerate(genes)}
    # the configured order decides when a plate carries two reference genes
    return min(found, key=lambda t: min((i for g, i in order.items() if _norm(t).startswith(g)), default=99))


@dataclass
class _QpcrCalibration:
    efficiency: float
    lod_pct: float
    loq_pct: float
    flags: list[str]
    dilution: qp.StandardCurve | None = None  # ΔCt vs log10(donor %), when usable
    efficiency_curve: qp.StandardCurve | None = None  # Ct vs log10(quantity), when it set E


def _qpcr_calibration(
    target: str, reference: str, wells: Sequence[QpcrWell], config: ChimerismConfig
) -> _QpcrCalibration:
    """Efficiency from the target's standard wells; LOD/LOQ and a ΔCt readout curve from them
    when they are a donor-in-recipient % series."""
    standards = [w for w in wells if w.target == target and (w.task or "").upper() == "STANDARD" and w.quantity]
    flags: list[str] = []
    efficiency = config.qpcr_efficiency
    lod, loq, dilution, efficiency_curve = config.qpcr_lod_pct, config.qpcr_loq_pct, None, None
    if standards:
        by_level = defaultdict(list)
        for w in standards:
            by_level[w.quantity].append(w.ct)
        summaries = {q: qp.summarize_ct(cts, config.qpcr_ct_cutoff) for q, cts in by_level.items()}
        # Fit the linear range only (MIQE): a level with dropouts or scattered replicates is
        # Poisson-limited and would tilt the slope.
        linear = {q for q, s in summaries.items()
                  if s.all_detected and (s.sd is None or s.sd <= config.qpcr_max_replicate_sd)}
        if len(linear) < 3:
            linear = set(by_level)
        detected = [w for w in standards if w.ct is not None and w.quantity in linear]
        curve = qp.fit_standard_curve([w.quantity for w in detected], [w.ct for w in detected])
        if curve is not None and qp.standard_curve_acceptable(curve, config.qpcr_slope_range, config.qpcr_min_r2):
            efficiency = qp.efficiency_from_slope(curve.slope)
            efficiency_curve = curve
        else:
            flags.append("standard_curve_rejected")
        if config.qpcr_standards_are_donor_pct:
            pairs = sorted(summaries.items())
            lod = qp.lod_from_dilution(pairs) or lod
            loq = qp.loq_from_dilution(pairs, config.qpcr_max_replicate_sd) or loq
            dilution = _dilution_curve(standards, reference, wells, linear, config)
    loq = lod if loq is None else max(loq, lod)
    return _QpcrCalibration(efficiency, lod, loq, flags, dilution, efficiency_curve)


def _dilution_curve(standards, reference, wells, levels, config) -> qp.StandardCurve | None:
    """ΔCt (marker - reference of the same standard sample) against log10(donor %)."""
    ref_ct: dict[str, list] = defaultdict(list)
    names = {w.sample_id for w in standards}
    for w in wells:
        if w.target == reference and w.sample_id in names:
            ref_ct[w.sample_id].append(w.ct)
    qty, dct = [], []
    for w in standards:
        ref = qp.summarize_ct(ref_ct.get(w.sample_id, []), config.qpcr_ct_cutoff)
        if w.ct is not None and ref.detected and w.quantity in levels:
            qty.append(w.quantity)
            dct.append(w.ct - ref.mean)
    curve = qp.fit_standard_curve(qty, dct)
    if curve is None or not qp.standard_curve_acceptable(curve, config.qpcr_slope_range, config.qpcr_min_r2):
        return None
    return curve


def _no_reference(pairing, method: str, config) -> list:
    """One ``reference_failed`` result per donor when a post sample has no reference-gene target."""
    return [_empty(pairing.post.sample_id, method, d, REFERENCE_FAILED,
                   f"No reference-gene target ({', '.join(config.reference_genes)}) on this sample's "
                   "wells: run a reference assay with the marker or add its name to the reference list.")
            for d in ([d for d, _ in pairing.donors] or [None])]


def _qpcr_for_post(pairing, index, all_wells, config) -> tuple[list, list]:
    sid = pairing.post.sample_id
    post = index[sid]
    ref = _reference(post, config.reference_genes)
    if ref is None:
        return [], _no_reference(pairing, "qpcr", config)
    results, pairs = _missing(pairing, "qpcr")
    if not pairs:
        return [], results
    summ = lambda s, t: qp.summarize_ct(index[s].get(t, []), config.qpcr_ct_cutoff)  # noqa: E731
    post_ref = summ(sid, ref)
    pre_ref = summ(pairing.pre_id, ref)
    if not post_ref.detected or not pre_ref.detected:
        which = "post" if not post_ref.detected else "pre-transplant recipient"
        return [], results + [_empty(sid, "qpcr", d, REFERENCE_FAILED,
                                     f"The reference gene {ref} was Undetermined in the {which} sample: the DNA "
                                     "input or the reaction failed; repeat the sample.") for d, _ in pairs]
    marker_targets = sorted(t for t in post if t != ref and not is_reference_target(t, config.reference_genes))
    markers: list[ChimerismMarkerResult] = []
    calibrations = {t: _qpcr_calibration(t, ref, all_wells, config) for t in marker_targets}
    for donor_id, donor_sample in pairs:
        donor_ref = summ(donor_sample, ref)
        rows = []  # (pct, ci, calibration)
        for t in marker_targets:
            cal = calibrations[t]
            d_m, r_m, s_m = summ(donor_sample, t), summ(pairing.pre_id, t), summ(sid, t)
            others = [summ(o, t) for d, o in pairs if d != donor_id]
            flags = list(cal.flags)
            reason = None
            if not donor_ref.detected:
                reason = "donor_reference_failed"
            elif not d_m.detected:
                reason = "negative_in_donor"
            elif any(o.detected for o in others):
                reason = "positive_in_other_donor"
            dct_d = None if reason else qp.delta_ct(d_m.mean, donor_ref.mean)
            if reason is None and r_m.detected:
                background = qp.donor_pct_ddct(qp.delta_ct(r_m.mean, pre_ref.mean), dct_d, cal.efficiency)
                if background >= min(config.informative_max_recipient_pct, cal.lod_pct):
                    reason = "positive_in_recipient"
                else:
                    flags.append("recipient_background")
            if reason is not None:
                markers.append(ChimerismMarkerResult(sid, "qpcr", t, "non_informative", None, False, donor_id, reason))
                continue
            summaries = (s_m, post_ref, d_m, donor_ref)
            if any(qp.replicate_sd_flag(s, config.qpcr_max_replicate_sd) for s in summaries):
                flags.append("replicate_sd_above_limit")
            if not s_m.detected:
                markers.append(ChimerismMarkerResult(sid, "qpcr", t, "informative", None, True, donor_id, _join(flags + ["not_detected"])))
                rows.append((None, None, cal))
                continue
            if s_m.n_detected < s_m.n_total:
                flags.append("partial_replicates")
            dct_s = qp.delta_ct(s_m.mean, post_ref.mean)
            if cal.dilution is not None and config.qpcr_dilution_readout:
                pct = qp.pct_from_dilution(dct_s, cal.dilution)
                var_dct, df_dct = qp.se_and_df((s_m, post_ref))
                ci = qp.dilution_ci(pct, cal.dilution, math.sqrt(var_dct), df_dct=df_dct)
                flags.append("read_off_dilution_series")
            else:
                pct = qp.donor_pct_ddct(dct_s, dct_d, cal.efficiency)
                ci = qp.ddct_ci(pct, summaries, cal.efficiency, curve=cal.efficiency_curve)
            markers.append(ChimerismMarkerResult(sid, "qpcr", t, "informative", pct, True, donor_id, _join(flags)))
            rows.append((pct, ci, cal))
        results.append(_combine(sid, "qpcr", donor_id, rows))
    return markers, results


def _combine(sid, method, donor_id, rows, detected_override: bool | None = None,
             lod_override: float | None = None) -> ChimerismResult:
    """Mean over the informative markers of one donor (qPCR, ddPCR).

    ddPCR passes its count-based call (droplets > LoB) and the pooled LoD as overrides;
    without them detection is donor % >= LOD.
    """
    if not rows:
        return _empty(sid, method, donor_id, NO_INFORMATIVE_MARKER,
                      "No informative marker: none is positive in the donor and negative in the recipient's "
                      "pre-transplant sample. Choose another donor-specific marker (InDel, SNP, Y).")
    lod = max(r[2].lod_pct for r in rows) if lod_override is None else lod_override
    loq = max(r[2].loq_pct for r in rows) if lod_override is None else lod_override
    measured = [r for r in rows if r[0] is not None]
    if not measured:  # no replicate amplified: 0 with the upper bound of a non-detection
        return ChimerismResult(sid, method, donor_id, 0.0, *_below_lod_interval(None, None, lod), lod, False,
                               len(rows), NOT_DETECTED, "Donor marker not detected in any replicate.", loq_pct=loq)
    pcts = np.array([r[0] for r in measured])
    pct = float(pcts.mean())
    lows = [r[1][0] for r in measured if r[1] is not None]
    highs = [r[1][1] for r in measured if r[1] is not None]
    sd = float(pcts.std(ddof=1)) if pcts.size > 1 else None
    detected, status = _classify(pct, lod, loq)
    if detected_override is not None:
        detected = detected_override
        status = BELOW_LOD if not detected else (NOT_QUANTIFIABLE if pct < loq else OK)
    message = {
        BELOW_LOD: (f"Donor signal {pct:.3g} % is below the limit of detection ({lod:.3g} %): not detected."
                    if detected_override is None else
                    f"Donor signal {pct:.3g} % does not exceed the limit of blank (marker droplets <= LoB; "
                    f"LOD {lod:.3g} %): not detected."),
        NOT_QUANTIFIABLE: f"Donor DNA detected at {pct:.3g} %, below the limit of quantification ({loq:.3g} %): "
                          "detected, not quantifiable.",
    }.get(status)
    ci_low = float(np.mean(lows)) if lows else None
    ci_high = float(np.mean(highs)) if highs else None
    if not detected:
        ci_low, ci_high = _below_lod_interval(ci_low, ci_high, lod)
    return ChimerismResult(sid, method, donor_id, pct, ci_low, ci_high,
                           lod, detected, len(rows), status, message, sd_pct=sd, loq_pct=loq)


# ---------------------------------------------------------------- ddPCR


@dataclass
class _Counts:
    positives: int
    total: int
    wells: list[tuple[int, int]] | None = None  # per-well (positives, accepted) when merged

    @property
    def lam(self) -> float:
        if self.wells:
            return dd.merged_lambda(self.wells)
        return dd.lambda_from_counts(self.total - self.positives, self.total)


def _ddpcr_index(wells: Sequence[DdpcrWell]) -> dict[str, dict[str, dict[str, _Counts]]]:
    """sample -> target -> well -> counts (wells without droplet counts are skipped)."""
    index: dict = defaultdict(lambda: defaultdict(dict))
    for w in wells:
        if w.positives is None or not w.accepted:
            continue
        c = index[w.sample_id][w.target].setdefault(w.well, _Counts(0, 0))
        c.positives += w.positives
        c.total += w.accepted
    return index


def _pooled(index, sample, target) -> _Counts:
    wells = index.get(sample, {}).get(target, {})
    return _Counts(sum(c.positives for c in wells.values()), sum(c.total for c in wells.values()),
                   [(c.positives, c.total) for c in wells.values()])


@dataclass
class _DdpcrLimits:
    lod_pct: float
    loq_pct: float
    #: count-based limits (None with a configured LoD): marker-positive droplets of the
    #: post sample, expected blank droplets mu_b = r x N_s, and expected droplets per
    #: donor fraction 1.0 (N_s x λ_reference / factor), to pool markers of one donor
    positives: int | None = None
    mu_blank: float | None = None
    droplets_per_fraction: float | None = None
    floor_pct: float | None = None


def _ddpcr_for_post(pairing, index, config) -> tuple[list, list]:
    sid = pairing.post.sample_id
    ref = _reference(index[sid], config.reference_genes)
    if ref is None:
        return [], _no_reference(pairing, "ddpcr", config)
    results, pairs = _missing(pairing, "ddpcr")
    if not pairs:
        return [], results
    post_ref = _pooled(index, sid, ref)
    pre_ref = _pooled(index, pairing.pre_id, ref)
    if post_ref.positives == 0 or pre_ref.positives == 0 or not math.isfinite(post_ref.lam):
        which = "post" if post_ref.positives == 0 or not math.isfinite(post_ref.lam) else "pre-transplant recipient"
        return [], results + [_empty(sid, "ddpcr", d, REFERENCE_FAILED,
                                     f"The reference {ref} has no usable droplet counts in the {which} sample "
                                     "(no positives, or every droplet positive): repeat with suitable DNA input.")
                              for d, _ in pairs]
    base_factor = config.ddpcr_reference_copies_per_genome / config.ddpcr_marker_copies_per_donor_genome
    marker_targets = sorted(t for t in index[sid] if not is_reference_target(t, config.reference_genes))
    markers: list[ChimerismMarkerResult] = []
    for donor_id, donor_sample in pairs:
        donor_ref = _pooled(index, donor_sample, ref)
        rows = []
        for t in marker_targets:
            d_m, r_m, s_m = (_pooled(index, s, t) for s in (donor_sample, pairing.pre_id, sid))
            flags: list[str] = []
            apparent = lambda m, r: 100 * dd.donor_fraction(m.lam, r.lam, base_factor, 1.0)  # noqa: E731
            reason = None
            if donor_ref.positives == 0 or d_m.total == 0:
                reason = "donor_reference_failed"
            elif d_m.positives == 0 or apparent(d_m, donor_ref) < config.informative_max_recipient_pct:
                reason = "negative_in_donor"
            elif r_m.total == 0:
                reason = "marker_not_run_on_recipient"
            elif apparent(r_m, pre_ref) >= config.informative_max_recipient_pct:
                reason = "positive_in_recipient"
            elif any(apparent(_pooled(index, o, t), _pooled(index, o, ref)) >= config.informative_max_recipient_pct
                     for d, o in pairs if d != donor_id and _pooled(index, o, ref).positives):
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
            f, lo, hi = dd.fraction_ci(s_m.positives, s_m.total, post_ref.positives, post_ref.total,
                                       factor, config.ddpcr_ci_level, s_m.lam, post_ref.lam)
            limits = _ddpcr_limits(index, pairing.pre_id, t, ref, s_m, post_ref, factor, config)
            if r_m.positives:
                flags.append("recipient_background")
            if s_m.positives == 0:
                flags.append("not_detected")
            markers.append(ChimerismMarkerResult(sid, "ddpcr", t, "informative", 100 * f, True, donor_id, _join(flags)))
            rows.append((100 * f, (100 * lo, 100 * hi), limits))
        result = _combine(sid, "ddpcr", donor_id, rows, *_ddpcr_call([r[2] for r in rows], config))
        if result.donor_pct == 0.0 and result.status == BELOW_LOD:
            result.status, result.message = NOT_DETECTED, "No donor-marker droplet: donor DNA not detected."
        results.append(result)
    return markers, results


def _ddpcr_limits(index, pre_id, marker, ref, post_marker, post_ref, factor, config) -> _DdpcrLimits:
    """Count-based LoB/LoD of one marker (CLSI EP17-A2 on Poisson droplet counts).

    Blank = the recipient's pre-transplant wells of this marker (no donor DNA): their
    marker-positive droplets x over their accepted droplets N_b give the false-positive
    rate per droplet r = x / N_b; the post sample's N_s droplets then hold
    Poisson(mu_b = r x N_s) blank droplets. LoB = smallest k with P(Poisson(mu_b) <= k)
    >= 95 % (at least ``ddpcr_min_positive_droplets`` - 1), LoD = the donor droplets mu_d
    with P(Poisson(mu_b + mu_d) > LoB) = 95 %, as a fraction (mu_d / N_s) / λ_ref x factor
    (:mod:`gating.ddpcr_chimerism`), floored by the Poisson LoD. ``config.ddpcr_lod_pct``
    overrides both (detection is then donor % >= that LoD).
    """
    if config.ddpcr_lod_pct is not None:
        return _DdpcrLimits(config.ddpcr_lod_pct, config.ddpcr_lod_pct)
    blank = _pooled(index, pre_id, marker)
    mu_b = dd.blank_rate(blank.positives, blank.total) * post_marker.total
    per_fraction = post_marker.total * post_ref.lam / factor
    floor = 100 * dd.poisson_lod_fraction(post_marker.total, post_ref.lam, factor, config.ddpcr_lod_min_positives)
    lob = dd.lob_count(mu_b, 0.05, config.ddpcr_min_positive_droplets)
    lod = max(100 * dd.droplets_to_fraction(dd.lod_count(lob, mu_b), post_marker.total, post_ref.lam, factor), floor)
    return _DdpcrLimits(lod, lod, post_marker.positives, mu_b, per_fraction, floor)


def _ddpcr_call(limits: Sequence[_DdpcrLimits], config) -> tuple[bool | None, float | None]:
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
    lob = dd.lob_count(mu_b, 0.05, config.ddpcr_min_positive_droplets)
    detected = sum(lim.positives for lim in limits) > lob
    per_fraction = sum(lim.droplets_per_fraction for lim in limits)
    lod = 100 * dd.lod_count(lob, mu_b) / per_fraction if per_fraction > 0 else math.nan
    return detected, max(lod, max(lim.floor_pct for lim in limits))


# ---------------------------------------------------------------- entry point


def quantify_chimerism(
    sheet: list[SampleSheetRow],
    registry: list[PatientCycle],
    str_peaks: list[StrPeak],
    qpcr_wells: list[QpcrWell],
    ddpcr_wells: list[DdpcrWell],
    config: ChimerismConfig,
) -> tuple[list[ChimerismMarkerResult], list[ChimerismResult]]:
    """Donor % of every ``post`` sample of the sheet, per method measured and per donor.

    For each post sample and each assay that measured it: the patient's
    ``recipient_pre`` sample measured by the same assay, and for each donor of the
    patient (registry cycles up to the collection date, plus the patient's donor rows)
    that donor's sample. Returns per-marker rows (``chimerism_markers``) and per
    sample x method x donor rows (``chimerism``).
    """
    rows = _latest_rows(sheet)
    posts = [r for r in rows if _role(r) == "post"]
    signals = _str_signals(str_peaks)
    q_index = _qpcr_index(qpcr_wells)
    d_index = _ddpcr_index(ddpcr_wells)
    markers: list[ChimerismMarkerResult] = []
    results: list[ChimerismResult] = []
    for post in posts:
        if post.sample_id in signals:
            m, r = _str_for_post(_pairing(post, rows, registry, set(signals)), signals, config)
            markers += m
            results += r
        if post.sample_id in q_index:
            m, r = _qpcr_for_post(_pairing(post, rows, registry, set(q_index)), q_index, qpcr_wells, config)
            markers += m
            results += r
        if post.sample_id in d_index:
            m, r = _ddpcr_for_post(_pairing(post, rows, registry, set(d_index)), d_index, config)
            markers += m
            results += r
    return markers, results
