"""Donor chimerism of every post-transplant sample: the one entry point.

:func:`quantify_chimerism` pairs each ``post`` sample of the sample sheet with its
patient's ``recipient_pre`` sample and the patient's donors' samples
(:mod:`gating.chimerism.pairing`), then applies the method of each assay that measured
it: :mod:`gating.chimerism.str`, :mod:`gating.chimerism.qpcr`, :mod:`gating.chimerism.ddpcr`.
"""

from __future__ import annotations

from assays.records import DdpcrWell, PatientCycle, QpcrWell, SampleSheetRow, StrPeak
from gating.chimerism import ddpcr as ddpcr_method
from gating.chimerism import qpcr as qpcr_method
from gating.chimerism import str as str_method
from gating.chimerism.pairing import latest_rows, pair_sample, role_of
from gating.chimerism.records import ChimerismConfig, ChimerismMarkerResult, ChimerismResult
from gating.chimerism.shares import with_recipient_share


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
    sample x method x donor rows (``chimerism``); with several donors also the
    recipient's share (:func:`gating.chimerism.shares.with_recipient_share`).

    The formulas are in the method modules: STR peak areas (:mod:`.str`), calibrated ΔΔCt or
    a dilution readout (:mod:`.qpcr`, :mod:`.calibration`), droplet counts (:mod:`.ddpcr`,
    :mod:`.droplet_limits`); the detection call and the mean over markers in :mod:`.limits`.

    Parameters
    ----------
    sheet : list of SampleSheetRow
        Sample-sheet rows (the latest row per sample_id is used).
    registry : list of PatientCycle
        Patient registry rows (MST cycles and their donors).
    str_peaks, qpcr_wells, ddpcr_wells : list
        The stored measurements of each method.
    config : ChimerismConfig
        Reference genes, LOD floors, outlier and artefact rules.

    Returns
    -------
    tuple of list
        ``(marker results, results)``; donor % in percent with CI, LOD and detection.
    """
    rows = latest_rows(sheet)
    posts = [r for r in rows if role_of(r) == "post"]
    screened = str_method.screen_samples(str_peaks, config.str_artefacts)
    q_index = qpcr_method.replicate_index(qpcr_wells)
    d_index = ddpcr_method.droplet_index(ddpcr_wells)
    markers: list[ChimerismMarkerResult] = []
    results: list[ChimerismResult] = []
    for post in posts:
        if post.sample_id in screened:
            m, r = str_method.quantify_post_sample(pair_sample(post, rows, registry, set(screened)), screened, config)
            markers += m
            results += with_recipient_share(r)
        if post.sample_id in q_index:
            m, r = qpcr_method.quantify_post_sample(pair_sample(post, rows, registry, set(q_index)), q_index, qpcr_wells, config)
            markers += m
            results += with_recipient_share(r)
        if post.sample_id in d_index:
            m, r = ddpcr_method.quantify_post_sample(pair_sample(post, rows, registry, set(d_index)), d_index, config)
            markers += m
            results += with_recipient_share(r)
    return markers, results
