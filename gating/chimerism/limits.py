"""Detection calls shared by the methods: LOD/LOQ classification, the interval of a
non-detection, and the per-donor summary over a method's informative markers.

The limits follow CLSI EP17-A2 (Evaluation of Detection Capability for Clinical
Laboratory Measurement Procedures, 2012; Armbruster & Pry, Clin Biochem Rev
2008;29 Suppl 1:S49-52): the limit of blank (LoB) is the 95th percentile of blank
results, the limit of detection (LoD) the lowest level detected (result > LoB) with
95 % probability, the limit of quantification (LoQ) the lowest level measured with
acceptable precision. Each method derives its own limits (:mod:`.ddpcr` from droplet
counts, :mod:`.calibration` from qPCR Ct values); this module applies them.
"""

from __future__ import annotations

import math

import numpy as np

from gating.chimerism.records import (
    BELOW_LOD,
    NO_INFORMATIVE_MARKER,
    NOT_DETECTED,
    NOT_QUANTIFIABLE,
    OK,
    ChimerismResult,
    empty_result,
)


def classify(pct: float, lod: float, loq: float | None = None) -> tuple[bool, str]:
    """Detection call of a donor % against the LOD and LOQ (CLSI EP17-A2).

    Parameters
    ----------
    pct : float
        Measured donor %.
    lod, loq : float
        Limits of detection and quantification (%); ``loq`` None = same as the LOD.

    Returns
    -------
    (bool, str)
        ``(False, below_lod)`` when pct < LOD; ``(True, detected_not_quantifiable)``
        when LOD <= pct < LOQ; else ``(True, ok)``.
    """
    if pct < lod:
        return False, BELOW_LOD
    if loq is not None and pct < loq:
        return True, NOT_QUANTIFIABLE
    return True, OK


def below_lod_interval(ci_low: float | None, ci_high: float | None, lod: float | None) -> tuple[float, float | None]:
    """CI reported for a result that is not detected (below the LOD): [0, max(CI high, LOD)].

    The LOD is the lowest donor % detected with 95 % probability (CLSI EP17-A2;
    Armbruster & Pry, Clin Biochem Rev 2008). Inverting that detection test, a
    non-detection is compatible at the 5 % level with every true value from 0 up to the
    LOD, so the lower bound is 0 and the upper bound at least the LOD. The measurement
    CI alone is not valid there: below the LOD the signal is censored (STR peaks under
    the analytical threshold count as 0, qPCR averages only the replicates that
    amplified) or dominated by blank signal (ddPCR false-positive droplets at 0 % donor).

    Parameters
    ----------
    ci_low, ci_high : float or None
        The measurement's own interval (percent); ``ci_low`` is replaced by 0.
    lod : float or None
        The result's LOD in percent; None when none is established.

    Returns
    -------
    tuple
        ``(0.0, high)`` with high = max(ci_high, lod), the LOD alone when the CI has no
        finite upper bound, None when neither gives one.

    Examples
    --------
    >>> below_lod_interval(0.01, 0.05, 0.1)
    (0.0, 0.1)
    """
    if lod is None:  # no LOD established: the measurement's own upper bound, if any
        return 0.0, ci_high if ci_high is not None and math.isfinite(ci_high) else None
    high = lod if ci_high is None or not math.isfinite(ci_high) else max(ci_high, lod)
    return 0.0, high



def combine_markers(sid, method, donor_id, rows, detected_override: bool | None = None,
                    lod_override: float | None = None) -> ChimerismResult:
    """Donor % of one donor by qPCR or ddPCR: the mean over its informative markers.

    donor % = mean_k(pct_k) over the markers k that gave a number; CI = the mean of the
    markers' CI bounds; SD over markers when >= 2; LOD and LOQ = the largest of the
    markers' (the least sensitive marker sets what a non-detection rules out).

    Parameters
    ----------
    sid, method, donor_id : str
        Post sample, ``qpcr`` or ``ddpcr``, donor.
    rows : list of (pct or None, (ci_low, ci_high) or None, limits)
        One per informative marker; ``limits`` has ``lod_pct`` and ``loq_pct``. A pct of
        None means the marker did not amplify in the post sample.
    detected_override, lod_override : bool, float, optional
        ddPCR's count-based call (pooled marker droplets > LoB) and pooled LoD; without
        them detection is donor % >= LOD (:func:`classify`).

    Returns
    -------
    ChimerismResult
        ``no_informative_marker`` without rows; ``not_detected`` with 0 % when no marker
        amplified; otherwise the mean with its detection call. A result that is not
        detected carries the interval of :func:`below_lod_interval`.
    """
    if not rows:
        return empty_result(sid, method, donor_id, NO_INFORMATIVE_MARKER,
                      "No informative marker: none is positive in the donor and negative in the recipient's "
                      "pre-transplant sample. Choose another donor-specific marker (InDel, SNP, Y).")
    lod = _largest(r[2].lod_pct for r in rows) if lod_override is None else lod_override
    loq = _largest(r[2].loq_pct for r in rows) if lod_override is None else lod_override
    measured = [r for r in rows if r[0] is not None]
    if not measured:  # no replicate amplified: 0 with the upper bound of a non-detection
        return ChimerismResult(sid, method, donor_id, 0.0, *below_lod_interval(None, None, lod), lod, False,
                               len(rows), NOT_DETECTED, "Donor marker not detected in any replicate.", loq_pct=loq)
    pcts = np.array([r[0] for r in measured])
    pct = float(pcts.mean())
    lows = [r[1][0] for r in measured if r[1] is not None]
    highs = [r[1][1] for r in measured if r[1] is not None]
    sd = float(pcts.std(ddof=1)) if pcts.size > 1 else None
    detected, status = classify(pct, lod, loq) if lod is not None else (True, OK)
    if detected_override is not None:
        detected = detected_override
        quantifiable = loq is None or pct >= loq
        status = BELOW_LOD if not detected else (OK if quantifiable else NOT_QUANTIFIABLE)
    lod_text = "not established: no dilution series on the plate" if lod is None else f"{lod:.3g} %"
    blank = ("marker droplets <= LoB" if method == "ddpcr" else
             "too few replicate wells amplified earlier than the blank wells")
    message = {
        BELOW_LOD: (f"Donor signal {pct:.3g} % is below the limit of detection ({lod_text}): not detected."
                    if detected_override is None else
                    f"Donor signal {pct:.3g} % does not exceed the limit of blank ({blank}; "
                    f"LOD {lod_text}): not detected."),
        NOT_QUANTIFIABLE: f"Donor DNA detected at {pct:.3g} %, below the limit of quantification "
                          f"({'not established' if loq is None else format(loq, '.3g') + ' %'}): "
                          "detected, not quantifiable.",
    }.get(status)
    if status == OK and lod is None:
        message = ("Detected above the blank wells; LOD and LOQ not established: no dilution series on this "
                   "plate (add one, or set the lab's LOD floor in the configuration).")
    ci_low = float(np.mean(lows)) if lows else None
    ci_high = float(np.mean(highs)) if highs else None
    if not detected:
        ci_low, ci_high = below_lod_interval(ci_low, ci_high, lod)
    return ChimerismResult(sid, method, donor_id, pct, ci_low, ci_high,
                           lod, detected, len(rows), status, message, sd_pct=sd, loq_pct=loq)


def _largest(values) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None
