"""qPCR chimerism: ΔΔCt, standard curve, LOD/LOQ, and simulated QuantStudio plates."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from assays import qpcr
from assays.records import PatientCycle, QpcrWell, SampleSheetRow
from simulators.qpcr_sim import Background, write_qpcr_case
from gating.chimerism import calibration as cal
from gating.chimerism import qpcr as qp
from gating.chimerism import replicates as rep
from gating.chimerism import ChimerismConfig, is_reference_target, quantify_chimerism
from simulators.chimerism_sweeps import by_truth, qpcr_shares

SEED = 7


def test_ddct_formula():
    # 10 cycles later than the 100 % donor calibrator at E = 2: 100 / 2^10 %
    assert qp.donor_pct_ddct(15.0, 5.0, 2.0) == pytest.approx(100 / 1024)
    assert qp.donor_pct_ddct(5.0, 5.0, 1.9) == pytest.approx(100.0)


def test_standard_curve_efficiency_and_acceptance():
    q = [1e5, 1e4, 1e3, 1e2] * 2
    ct = [20 - 3.32 * (k - 5) for k in (5, 4, 3, 2)] * 2
    curve = cal.fit_standard_curve(q, [c - 20 + 20 for c in ct])
    assert curve.slope == pytest.approx(-3.32) and curve.r2 == pytest.approx(1.0)
    assert cal.efficiency_from_slope(-3.32) == pytest.approx(2.0, abs=0.002)
    assert cal.standard_curve_acceptable(curve)
    assert not cal.standard_curve_acceptable(dataclasses.replace(curve, slope=-3.8))
    assert not cal.standard_curve_acceptable(dataclasses.replace(curve, r2=0.95))


def test_replicates_lod_loq():
    s = rep.summarize_ct([30.0, 30.2, None])
    assert s.n_detected == 2 and s.mean == pytest.approx(30.1) and not s.all_detected
    assert rep.replicate_sd_flag(rep.summarize_ct([30.0, 31.0, 30.1]))
    assert not rep.replicate_sd_flag(rep.summarize_ct([30.0, 30.1, 30.2]))
    levels = [(1.0, rep.summarize_ct([28, 28.1, 28.05])), (0.1, rep.summarize_ct([31.5, 32.4, 31.2])),
              (0.01, rep.summarize_ct([35.0, None, 36.0]))]
    assert cal.lod_from_dilution(levels) == 0.1  # 0.01 % lost a replicate
    assert cal.loq_from_dilution(levels) == 1.0  # 0.1 % replicates scatter > 0.5 Ct
    assert qp.is_informative(rep.summarize_ct([25.0]), rep.summarize_ct([None, None]))
    assert not qp.is_informative(rep.summarize_ct([25.0]), rep.summarize_ct([38.0, None]))


def test_reference_gene_matching():
    genes = ChimerismConfig().reference_genes
    assert is_reference_target("RNase P", genes) and is_reference_target("rpp30_HEX", genes)
    assert not is_reference_target("ACTBL2", genes) and not is_reference_target("SRY", genes)
    assert is_reference_target("my-ref", ("MY REF",))


@pytest.mark.parametrize("fmt", ["classic", "design_analysis"])
def test_simulated_plate_within_factor_1_5(tmp_path, fmt):
    case = write_qpcr_case(tmp_path, seed=SEED, donor_pcts=(10.0, 1.0, 0.1, 0.05, 0.0), fmt=fmt)
    wells = qpcr.read(case.path, "sha").records
    markers, results = quantify_chimerism(case.sheet, case.registry, [], wells, [], ChimerismConfig())
    by_sample = {r.sample_id: r for r in results}
    assert len(results) == 5
    for post in case.posts:
        truth = post.donor_pct[by_sample[post.sample_id].donor_id]
        r = by_sample[post.sample_id]
        if truth == 0:
            assert r.detected is False and r.status == "not_detected"
            continue
        assert r.detected is True, (truth, r)
        assert truth / 1.5 <= r.donor_pct <= truth * 1.5, (truth, r.donor_pct)
        assert r.ci_low < r.donor_pct < r.ci_high
        assert r.lod_pct == pytest.approx(0.01)  # from the dilution series, not the default
    used = [m for m in markers if m.used]
    assert used and all(m.marker == case.marker for m in used)


def test_ddct_path_with_fitted_efficiency(tmp_path):
    case = write_qpcr_case(tmp_path, seed=SEED, donor_pcts=(10.0, 1.0))
    wells = qpcr.read(case.path, "sha").records
    config = ChimerismConfig(qpcr_dilution_readout=False)
    _, results = quantify_chimerism(case.sheet, case.registry, [], wells, [], config)
    for post, r in zip(case.posts, results):
        truth = next(iter(post.donor_pct.values()))
        assert truth / 1.5 <= r.donor_pct <= truth * 1.5


def _plate(rows):
    return [QpcrWell(s, f"W{i}", t, "UNKNOWN", ct, None) for i, (s, t, ct) in enumerate(rows)]


def _sheet():
    day = dt.date(2025, 1, 1)
    return ([SampleSheetRow("R", "P", day, "PB", "whole", "recipient_pre", None),
             SampleSheetRow("D", "P", day, "PB", "whole", "donor", "DN"),
             SampleSheetRow("X", "P", day + dt.timedelta(days=40), "PB", "whole", "post", None)],
            [PatientCycle("P", 1, day, "DN")])


def test_reference_undetermined_and_non_informative_marker():
    sheet, registry = _sheet()
    wells = _plate([("R", "SRY", None), ("R", "RPP30", 20.0), ("D", "SRY", 21.0), ("D", "RPP30", 20.0),
                    ("X", "SRY", 30.0), ("X", "RPP30", None)])
    _, results = quantify_chimerism(sheet, registry, [], wells, [], ChimerismConfig())
    assert results[0].status == "reference_failed" and results[0].donor_pct is None
    assert "RPP30" in results[0].message
    wells = _plate([("R", "SRY", 22.0), ("R", "RPP30", 20.0), ("D", "SRY", 21.0), ("D", "RPP30", 20.0),
                    ("X", "SRY", 30.0), ("X", "RPP30", 20.0)])
    markers, results = quantify_chimerism(sheet, registry, [], wells, [], ChimerismConfig())
    assert results[0].status == "no_informative_marker"
    assert markers[0].flag == "positive_in_recipient"


def test_microchimerism_detected_from_the_blanks_not_rounded():
    """Issue 14: replicates that amplify with clean blanks are a detection, whatever a set LOD."""
    sheet, registry = _sheet()
    # ΔΔCt = 11 cycles at E = 2 -> 0.0488 %; both post replicates amplify, recipient wells clean
    wells = _plate([("R", "SRY", None), ("R", "SRY", None), ("R", "RPP30", 20.0), ("D", "SRY", 21.0),
                    ("D", "RPP30", 20.0), ("X", "SRY", 32.0), ("X", "SRY", 32.0), ("X", "RPP30", 20.0)])
    (r,) = quantify_chimerism(sheet, registry, [], wells, [], ChimerismConfig())[1]
    assert r.donor_pct == pytest.approx(100 / 2**11) and r.detected is True and r.status == "ok"
    assert r.lod_pct is None and "no dilution series" in r.message  # nothing on this plate sets a LOD
    # the lab's LOD floor: still detected, now below the LOQ
    (r,) = quantify_chimerism(sheet, registry, [], wells, [], ChimerismConfig(qpcr_lod_pct=0.1))[1]
    assert r.detected is True and r.status == "detected_not_quantifiable" and r.lod_pct == 0.1
    assert r.donor_pct == pytest.approx(0.0488, abs=1e-4)
    # one of two post replicates amplifying is not enough
    one = [dataclasses.replace(w, ct=None) if w.well == "W6" else w for w in wells]
    (r,) = quantify_chimerism(sheet, registry, [], one, [], ChimerismConfig())[1]
    assert r.detected is False and r.status == "below_lod"
    # a recipient well amplifying earlier than the post replicates sets the limit of blank above them
    blank = [QpcrWell("R", "W0", "SRY", "UNKNOWN", 31.0, None)] + wells[1:]
    markers, results = quantify_chimerism(sheet, registry, [], blank, [], ChimerismConfig())
    assert results[0].detected is False and results[0].status == "below_lod"
    assert "blank" in results[0].message and "recipient_background" in markers[0].flag
    # a no-template control that amplifies counts as a blank too
    ntc = wells + [QpcrWell("NTC", "W9", "SRY", "NTC", 31.5, None)]
    assert quantify_chimerism(sheet, registry, [], ntc, [], ChimerismConfig())[1][0].detected is False


# ---------------------------------------------------------------- CI coverage over a seed sweep

SWEEP_SEEDS = range(62_000, 62_100)  # fresh seeds, used nowhere else
SWEEP_TRUTHS = (0.0, 0.05, 0.1, 1.0, 20.0, 95.0)


@pytest.mark.parametrize("dilution_readout", [True, False])
def test_ci_coverage_and_false_positives_over_seed_sweep(dilution_readout):
    """95 % CI coverage and the 0 % false-positive rate over 100 simulated plates.

    Truth comes from the seeded simulator (simulators.qpcr_sim, seeds
    62000-62099): the donor % each post sample was made with. Whether % is read off
    the dilution series (classical calibration interval) or by ΔΔCt with the fitted
    efficiency (delta method incl. the slope's SE), the CI must contain the truth as
    often as a 95 % interval does, within a 99.8 % binomial acceptance region, and not
    every time. At 0 % donor no plate may call the donor detected beyond the binomial
    tolerance of a 5 % false-positive rate; the non-detection is reported as 0 with [0, LOD].
    The full sweep: ``python -m simulators.chimerism_sweeps``.
    """
    from scipy import stats

    shares = qpcr_shares(SWEEP_SEEDS, SWEEP_TRUTHS, ChimerismConfig(qpcr_dilution_readout=dilution_readout))
    assert all(s.pct is not None and s.ci_low is not None and s.ci_high is not None for s in shares)
    groups = by_truth(shares)
    covered = {t: sum(s.covered for s in v) for t, v in groups.items()}
    detected = {t: sum(bool(s.detected) for s in v) for t, v in groups.items()}
    n = len(SWEEP_SEEDS)
    positive = [t for t in SWEEP_TRUTHS if t > 0]
    for t in positive:  # per level: a looser 99.98 % region (several levels are checked)
        assert stats.binom.ppf(0.0001, n, 0.95) <= covered[t] <= stats.binom.ppf(0.9999, n, 0.95), (t, covered[t])
    pooled = sum(covered[t] for t in positive)
    m = n * len(positive)
    assert stats.binom.ppf(0.001, m, 0.95) <= pooled <= min(stats.binom.ppf(0.999, m, 0.95), m - 1), pooled / m
    assert detected[0.0] <= stats.binom.ppf(0.999, n, 0.05), detected[0.0]
    assert covered[0.0] >= n - detected[0.0]


DETECTION_SEEDS = range(65_000, 65_100)  # fresh seeds, used nowhere else
DETECTION_TRUTHS = (0.0, 0.01, 0.05, 0.1, 1.0)


@pytest.mark.parametrize("dilution_series", [False, True])
def test_detection_from_the_blanks_over_seed_sweep(dilution_series):
    """Issue 14: detection from the plate's blanks, not from a fixed LOD.

    100 seeded plates (simulators.qpcr_sim, seeds 65000-65099), 3 replicates, with
    late non-specific amplification in 10 % of recipient and 5 % of NTC marker wells
    (``Background``): 0.05 % donor is detected on >= 95 % of plates and 0 % donor on
    <= 5 %, with and without a dilution series on the plate. The full sweep (200 plates
    per arm): ``python -m simulators.chimerism_sweeps``.
    """
    shares = qpcr_shares(DETECTION_SEEDS, DETECTION_TRUTHS, replicates=3, dilution_series=dilution_series,
                         background=Background())
    detected = {t: sum(bool(s.detected) for s in v) for t, v in by_truth(shares).items()}
    n = len(DETECTION_SEEDS)
    assert detected[0.05] >= 0.95 * n and detected[0.1] >= 0.95 * n and detected[1.0] == n, detected
    assert detected[0.0] <= 0.05 * n, detected


@pytest.mark.reference
def test_blank_limit_on_real_quantstudio_plates(shared_data):
    """Real QuantStudio exports (allotropy test data): their no-template controls are all
    Undetermined, so no blank limit is set and every amplified replicate counts; a
    replicate that amplified later than a blank would not."""
    path = shared_data / "qpcr" / "quantstudio_classic" / "appbio_quantstudio_example05.txt"
    wells = qpcr.read(path, "sha").records
    ntc = [w.ct for w in wells if w.task == "NTC" and w.target == "TGF-B"]
    assert len(ntc) == 3 and cal.blank_ct_limit(ntc) is None
    lung = [w.ct for w in wells if w.sample_id == "Lung" and w.target == "TGF-B"]
    assert cal.replicates_above_blank(lung, None) == 3
    assert cal.replicates_above_blank(lung, cal.blank_ct_limit([30.15])) == 1  # only the 30.09 well is earlier
