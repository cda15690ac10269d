"""qPCR chimerism: donor % from a donor-specific marker against a reference gene.

Formulas of DESIGN.md ("Chimerism and microchimerism", qPCR): calibrated ΔΔCt
(Alizadeh et al., Blood 2002; Jiménez-Velasco et al., Leukemia 2005) and its CI, and the
per-sample driver. Replicate statistics are in :mod:`.replicates`; the standard curve,
dilution-series readout and LOD/LOQ in :mod:`.calibration`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from assays.records import QpcrWell
from gating.chimerism.calibration import (
    StandardCurve,
    blank_ct_limit,
    calibrate_target,
    dilution_ci,
    pct_from_dilution,
    replicates_above_blank,
)
from gating.chimerism.limits import combine_markers
from gating.chimerism.pairing import (
    Pairing,
    computable_donors,
    no_reference_results,
    split_targets,
)
from gating.chimerism.records import (
    REFERENCE_FAILED,
    ChimerismConfig,
    ChimerismMarkerResult,
    ChimerismResult,
    empty_result,
    join_flags,
)
from gating.chimerism.replicates import CtSummary, replicate_sd_flag, satterthwaite, se_and_df, summarize_ct, t_quantile


def delta_ct(ct_marker: float, ct_reference: float) -> float:
    """ΔCt = Ct_marker - Ct_reference.

    Parameters
    ----------
    ct_marker, ct_reference : float
        Mean Ct of the donor-specific marker and of the reference gene in one sample
        (:func:`gating.chimerism.replicates.summarize_ct`).

    Returns
    -------
    float
        ΔCt in cycles (Livak & Schmittgen, Methods 2001).
    """
    return ct_marker - ct_reference


def donor_pct_ddct(dct_sample: float, dct_donor100: float, efficiency: float = 2.0) -> float:
    """Calibrated ΔΔCt: donor % = 100 x E^-(ΔCt_sample - ΔCt_donor100).  (DESIGN.md)

    ΔCt_donor100 is the pure donor sample's ΔCt: it calibrates the marker's copy
    number per donor genome (heterozygous InDel, Y marker) and the primer efficiencies.

    Reference: Livak & Schmittgen, Methods 2001 (2^-ΔΔCt), with the efficiency E of
    Pfaffl, Nucleic Acids Res 2001; Alizadeh et al., Blood 2002 for chimerism.

    Parameters
    ----------
    dct_sample : float
        ΔCt of the post-transplant sample (:func:`delta_ct`).
    dct_donor100 : float
        ΔCt of the pure donor sample.
    efficiency : float
        Amplification factor per cycle E: 2 (perfect doubling) or 10^(-1/slope) from a
        standard curve (:func:`gating.chimerism.calibration.efficiency_from_slope`).

    Returns
    -------
    float
        Donor share in percent (not clipped to 100).

    Examples
    --------
    >>> donor_pct_ddct(dct_sample=10.0, dct_donor100=0.0)
    0.09765625
    """
    return 100.0 * efficiency ** (-(dct_sample - dct_donor100))


def is_informative(donor: CtSummary, recipient: CtSummary) -> bool:
    """Marker informative: positive in the donor, negative in the recipient's pre sample.  (DESIGN.md)

    Parameters
    ----------
    donor, recipient : CtSummary
        The marker's replicates in the donor's and in the recipient's pre-transplant sample.

    Returns
    -------
    bool
        True when some donor replicate amplified and no recipient replicate did.
    """
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

    Parameters
    ----------
    pct : float
        The donor % of :func:`donor_pct_ddct`.
    summaries : sequence of CtSummary
        The four Ct means the ΔΔCt is built from.
    efficiency : float
        E used for ``pct``.
    default_sd : float
        Ct SD assumed for a mean of a single replicate.
    z : float, optional
        A fixed quantile instead of Student's t.
    curve : StandardCurve, optional
        The standard curve E came from; adds the slope's error.
    level : float
        Two-sided confidence level.

    Returns
    -------
    tuple of float
        ``(ci_low, ci_high)`` in percent.
    """
    var_d, df_d = se_and_df(summaries, default_sd)
    dd = -math.log(pct / 100.0) / math.log(efficiency) if pct > 0 else 0.0
    parts = [((math.log(efficiency)) ** 2 * var_d, df_d)]
    if curve is not None and math.isfinite(curve.s_res) and curve.sxx > 0 and curve.df > 0:
        var_slope = curve.s_res**2 / curve.sxx
        var_ln_e = (math.log(10.0) / curve.slope**2) ** 2 * var_slope
        parts.append((dd * dd * var_ln_e, float(curve.df)))
    var, df = satterthwaite(parts)
    q = z if z is not None else t_quantile(level, df)
    half = q * math.sqrt(var)
    return pct * math.exp(-half), pct * math.exp(half)


# ---------------------------------------------------------------- per post sample


def replicate_index(wells: Sequence[QpcrWell]) -> dict[str, dict[str, list[float | None]]]:
    """sample_id -> target -> Ct of each unknown-sample well (None = Undetermined)."""
    index: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for w in wells:
        if (w.task or "UNKNOWN").upper() in {"UNKNOWN", "UNKN"}:
            index[w.sample_id][w.target].append(w.ct)
    return index


def quantify_post_sample(
    pairing: Pairing,
    index: dict[str, dict[str, list[float | None]]],
    all_wells: Sequence[QpcrWell],
    config: ChimerismConfig,
) -> tuple[list[ChimerismMarkerResult], list[ChimerismResult]]:
    """qPCR donor % of one post sample, per donor: mean over its informative markers.

    A marker is informative for a donor when it amplifies in that donor's sample, in no
    other donor's, and not (above background) in the recipient's pre-transplant sample
    (:func:`is_informative`). Per marker, with ΔCt = mean Ct_marker - mean Ct_reference:

        donor % = 100 x E^-(ΔCt_sample - ΔCt_donor100)       (calibrated ΔΔCt)

    E from the plate's standard curve of the marker when acceptable, else
    ``config.qpcr_efficiency`` (:func:`gating.chimerism.calibration.calibrate_target`);
    CI by :func:`ddct_ci`. When the plate carries a usable donor-in-recipient dilution
    series, donor % is read off it instead (:func:`~gating.chimerism.calibration.pct_from_dilution`,
    CI :func:`~gating.chimerism.calibration.dilution_ci`). The donor's result is the
    mean over markers (:func:`gating.chimerism.limits.combine_markers`).

    Detection from the data (CLSI EP17-A2): the limit of blank is the earliest Ct among
    the blank wells of the marker, the recipient's pre-transplant wells and the
    no-template controls (:func:`~gating.chimerism.calibration.blank_ct_limit`); the
    donor is detected when at least ``config.qpcr_min_positive_replicates`` replicate
    wells of an informative marker amplify earlier than it. LOD = the lowest level of
    the plate's dilution series with every replicate detected, LOQ = the lowest with
    replicate SD <= ``config.qpcr_max_replicate_sd``; ``config.qpcr_lod_pct`` is only a
    floor under them (and the LOD of a plate without a series). A detection below the
    LOQ (or the LOD) is ``detected_not_quantifiable``.

    Parameters
    ----------
    pairing : Pairing
        The post sample, its recipient pre-transplant sample and donor samples.
    index : dict
        Unknown-sample Ct values (:func:`replicate_index`).
    all_wells : sequence of QpcrWell
        The plate's wells, for its standards.
    config : ChimerismConfig
        Reference genes, efficiency, curve acceptance, limits, replicate SD limit.

    Returns
    -------
    (list of ChimerismMarkerResult, list of ChimerismResult)
        One marker row per target and donor (``flag`` says why it is not used or what
        to review), one result per donor.

    References
    ----------
    Alizadeh et al., Blood 2002;99:4618-4625; Pfaffl, Nucleic Acids Res 2001;29:e45;
    Bustin et al. (MIQE), Clin Chem 2009;55:611-622.
    """
    sid = pairing.post.sample_id
    post = index[sid]
    ref, marker_targets = split_targets(post, config.reference_genes)
    if ref is None:
        return [], no_reference_results(pairing, "qpcr", config)
    results, pairs = computable_donors(pairing, "qpcr")
    if not pairs:
        return [], results
    summ = lambda s, t: summarize_ct(index[s].get(t, []), config.qpcr_ct_cutoff)  # noqa: E731
    post_ref = summ(sid, ref)
    pre_ref = summ(pairing.pre_id, ref)
    if not post_ref.detected or not pre_ref.detected:
        which = "post" if not post_ref.detected else "pre-transplant recipient"
        return [], results + [empty_result(sid, "qpcr", d, REFERENCE_FAILED,
                                     f"The reference gene {ref} was Undetermined in the {which} sample: the DNA "
                                     "input or the reaction failed; repeat the sample.") for d, _ in pairs]
    markers: list[ChimerismMarkerResult] = []
    calibrations = {t: calibrate_target(t, ref, all_wells, config) for t in marker_targets}
    ntc: dict[str, list[float | None]] = defaultdict(list)
    for w in all_wells:
        if (w.task or "").upper() == "NTC":
            ntc[w.target].append(w.ct)
    for donor_id, donor_sample in pairs:
        donor_ref = summ(donor_sample, ref)
        rows = []  # (pct, ci, calibration)
        calls = []  # per informative marker: replicates above the blank limit
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
            dct_d = None if reason else delta_ct(d_m.mean, donor_ref.mean)
            if reason is None and r_m.detected:
                background = donor_pct_ddct(delta_ct(r_m.mean, pre_ref.mean), dct_d, cal.efficiency)
                limit = config.informative_max_recipient_pct
                if background >= (limit if cal.lod_pct is None else min(limit, cal.lod_pct)):
                    reason = "positive_in_recipient"
                else:
                    flags.append("recipient_background")
            if reason is not None:
                markers.append(ChimerismMarkerResult(sid, "qpcr", t, "non_informative", None, False, donor_id, reason))
                continue
            blank = blank_ct_limit(index[pairing.pre_id].get(t, []) + ntc.get(t, []), config.qpcr_ct_cutoff)
            post_cts = index[sid].get(t, [])
            above = replicates_above_blank(post_cts, blank, config.qpcr_ct_cutoff)
            calls.append(above >= min(config.qpcr_min_positive_replicates, len(post_cts)) and above > 0)
            if blank is not None:
                flags.append("blank_amplified")
            summaries = (s_m, post_ref, d_m, donor_ref)
            if any(replicate_sd_flag(s, config.qpcr_max_replicate_sd) for s in summaries):
                flags.append("replicate_sd_above_limit")
            if not s_m.detected:
                markers.append(ChimerismMarkerResult(sid, "qpcr", t, "informative", None, True, donor_id, join_flags(flags + ["not_detected"])))
                rows.append((None, None, cal))
                continue
            if s_m.n_detected < s_m.n_total:
                flags.append("partial_replicates")
            dct_s = delta_ct(s_m.mean, post_ref.mean)
            if cal.dilution is not None and config.qpcr_dilution_readout:
                pct = pct_from_dilution(dct_s, cal.dilution)
                var_dct, df_dct = se_and_df((s_m, post_ref))
                ci = dilution_ci(pct, cal.dilution, math.sqrt(var_dct), df_dct=df_dct)
                flags.append("read_off_dilution_series")
            else:
                pct = donor_pct_ddct(dct_s, dct_d, cal.efficiency)
                ci = ddct_ci(pct, summaries, cal.efficiency, curve=cal.efficiency_curve)
            markers.append(ChimerismMarkerResult(sid, "qpcr", t, "informative", pct, True, donor_id, join_flags(flags)))
            rows.append((pct, ci, cal))
        results.append(combine_markers(sid, "qpcr", donor_id, rows, any(calls) if calls else None))
    return markers, results
