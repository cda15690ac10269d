"""ddPCR chimerism: Poisson copies, copy-number factor, CI coverage on simulated QX plates."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from assays import ddpcr
from assays.records import DdpcrWell, PatientCycle, SampleSheetRow
from assays.simulators.ddpcr_sim import write_ddpcr_case
from gating import ddpcr_chimerism as dd
from gating.chimerism import ChimerismConfig, quantify_chimerism

SEED = 2024
N_PLATES = 50


def test_poisson_copies():
    assert dd.lambda_from_counts(10000, 20000) == pytest.approx(math.log(2))
    assert dd.copies_from_counts(10000, 20000) == pytest.approx(20000 * math.log(2))
    assert math.isinf(dd.lambda_from_counts(0, 20000))


def test_copy_number_factor():
    # heterozygous InDel against diploid RPP30: f = 2 x marker / ref
    assert dd.donor_fraction(0.01, 1.0) == pytest.approx(0.02)
    assert dd.donor_fraction(0.01, 1.0, 2.0, 2.0) == pytest.approx(0.01)


def test_mover_ci_brackets_and_zero_count():
    f, lo, hi = dd.fraction_ci(20, 20000, 10000, 20000, factor=2.0)
    assert lo < f < hi and lo > 0
    f0, lo0, hi0 = dd.fraction_ci(0, 20000, 10000, 20000, factor=2.0)
    assert f0 == 0.0 and lo0 == 0.0 and hi0 > 0  # no droplet: an upper bound, not a point


def test_limits():
    assert dd.limit_of_blank([0.0, 0.0, 0.0]) == 0.0
    lob = dd.limit_of_blank([0.001, 0.003, 0.002])
    assert lob == pytest.approx(0.002 + 1.645 * 0.001)
    assert dd.poisson_lod_fraction(100000, 1.0, 2.0) == pytest.approx(6e-5)


def _run(path, case):
    wells = ddpcr.read(path, "sha").records
    return quantify_chimerism(case.sheet, case.registry, [], [], wells, ChimerismConfig())


def test_accuracy_and_ci_coverage_over_50_plates(tmp_path):
    truths = (1.0, 0.1, 0.05)
    within = {t: 0 for t in truths}
    covered = {t: 0 for t in truths}
    for k in range(N_PLATES):
        case = write_ddpcr_case(tmp_path, seed=SEED + k, donor_pcts=truths, file_name="plate.csv")
        markers, results = _run(case.path, case)
        assert len(results) == 3
        for post, r in zip(case.posts, results):
            truth = next(iter(post.donor_pct.values()))
            assert r.sample_id == post.sample_id and r.method == "ddpcr"
            assert r.detected is True and r.status == "ok" and r.lod_pct < truth
            within[truth] += truth / 1.3 <= r.donor_pct <= truth * 1.3
            covered[truth] += r.ci_low <= truth <= r.ci_high
        if k == 0:  # the first plate must be right at every level, on its own
            assert all(within[t] == 1 for t in truths), results
    for t in truths:
        assert within[t] >= 0.9 * N_PLATES, (t, within[t])
        assert covered[t] >= 0.9 * N_PLATES, (t, covered[t])


def _wells(rows):
    return [DdpcrWell(s, w, t, None, p, n, n - p) for s, w, t, p, n in rows]


def _sheet():
    day = dt.date(2025, 1, 1)
    return ([SampleSheetRow("R", "P", day, "PB", "whole", "recipient_pre", None),
             SampleSheetRow("D", "P", day, "PB", "whole", "donor", "DN"),
             SampleSheetRow("X", "P", day + dt.timedelta(days=40), "BM", "CD3", "post", None)],
            [PatientCycle("P", 1, day, "DN")])


def test_no_marker_droplet_is_not_detected_with_upper_bound():
    sheet, registry = _sheet()
    wells = _wells([("R", "A1", "SRY", 0, 20000), ("R", "A1", "RPP30", 12000, 20000),
                    ("D", "B1", "SRY", 7000, 20000), ("D", "B1", "RPP30", 12000, 20000),
                    ("X", "C1", "SRY", 0, 20000), ("X", "C1", "RPP30", 12000, 20000)])
    _, results = quantify_chimerism(sheet, registry, [], [], wells, ChimerismConfig())
    r = results[0]
    assert r.status == "not_detected" and r.detected is False
    assert r.donor_pct == 0.0 and r.ci_high > 0


def test_reference_failed_and_recipient_positive():
    sheet, registry = _sheet()
    wells = _wells([("R", "A1", "SRY", 0, 20000), ("R", "A1", "RPP30", 12000, 20000),
                    ("D", "B1", "SRY", 7000, 20000), ("D", "B1", "RPP30", 12000, 20000),
                    ("X", "C1", "SRY", 30, 20000), ("X", "C1", "RPP30", 0, 20000)])
    _, results = quantify_chimerism(sheet, registry, [], [], wells, ChimerismConfig())
    assert results[0].status == "reference_failed" and results[0].donor_pct is None
    wells = _wells([("R", "A1", "SRY", 6000, 20000), ("R", "A1", "RPP30", 12000, 20000),
                    ("D", "B1", "SRY", 7000, 20000), ("D", "B1", "RPP30", 12000, 20000),
                    ("X", "C1", "SRY", 30, 20000), ("X", "C1", "RPP30", 12000, 20000)])
    markers, results = quantify_chimerism(sheet, registry, [], [], wells, ChimerismConfig())
    assert results[0].status == "no_informative_marker" and markers[0].flag == "positive_in_recipient"


def test_no_donor_anywhere():
    sheet, _ = _sheet()
    wells = _wells([("X", "C1", "SRY", 30, 20000), ("X", "C1", "RPP30", 12000, 20000),
                    ("R", "A1", "RPP30", 12000, 20000)])
    _, results = quantify_chimerism(sheet[:1] + sheet[2:], [], [], [], wells, ChimerismConfig())
    assert results[0].status == "no_donor_listed" and results[0].donor_id is None


# ---------------------------------------------------------------- CI coverage over a seed sweep

SWEEP_SEEDS = range(63_000, 63_120)  # fresh seeds, used nowhere else
SWEEP_TRUTHS = (0.0, 0.05, 1.0, 50.0)


def test_ci_coverage_and_false_positives_over_seed_sweep(tmp_path):
    """95 % CI coverage and the 0 % false-positive rate over 120 simulated QX plates.

    Truth comes from the seeded simulator (assays.simulators.ddpcr_sim, seeds
    63000-63119): the donor % each post sample was made with; its blank false-positive
    droplets (0.05 per well) make a 0 % sample show a droplet now and then. The
    Poisson/MOVER CI must contain the truth as often as a 95 % interval does, within a
    99.8 % binomial acceptance region (pooled over levels, and not every time). At 0 %
    the result must be "not detected" beyond no more than the binomial tolerance of a
    5 % false-positive rate, and its interval [0, max(upper bound, LOD)] must hold 0.
    """
    from scipy import stats

    covered = {t: 0 for t in SWEEP_TRUTHS}
    detected = {t: 0 for t in SWEEP_TRUTHS}
    for seed in SWEEP_SEEDS:
        case = write_ddpcr_case(tmp_path, seed=seed, donor_pcts=SWEEP_TRUTHS, file_name="sweep.csv")
        _, results = _run(case.path, case)
        by_sample = {r.sample_id: r for r in results}
        for post in case.posts:
            (truth,) = post.donor_pct.values()
            r = by_sample[post.sample_id]
            assert r.donor_pct is not None and r.ci_low is not None and r.ci_high is not None, r
            assert math.isfinite(r.ci_low) and math.isfinite(r.ci_high)
            covered[truth] += r.ci_low <= truth <= r.ci_high
            detected[truth] += bool(r.detected)
    n = len(SWEEP_SEEDS)
    positive = [t for t in SWEEP_TRUTHS if t > 0]
    for t in positive:
        assert stats.binom.ppf(0.001, n, 0.95) <= covered[t], (t, covered[t])
        assert detected[t] == n
    pooled = sum(covered[t] for t in positive)
    m = n * len(positive)
    assert stats.binom.ppf(0.001, m, 0.95) <= pooled <= min(stats.binom.ppf(0.999, m, 0.95), m - 1), pooled / m
    assert detected[0.0] <= stats.binom.ppf(0.999, n, 0.05), detected[0.0]
    assert covered[0.0] >= n - detected[0.0]
