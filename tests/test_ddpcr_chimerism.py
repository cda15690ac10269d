"""ddPCR chimerism: Poisson copies, copy-number factor, CI coverage on simulated QX plates."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from assays import ddpcr
from assays.records import DdpcrWell, PatientCycle, SampleSheetRow
from simulators.ddpcr_sim import write_ddpcr_case
from gating.chimerism import ddpcr as dd
from gating.chimerism import droplet_limits as dl
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
    """Count-based LoB/LoD (CLSI EP17-A2 on Poisson droplet counts); replaces the parametric mean + 1.645 SD."""
    from scipy import stats

    assert dl.blank_rate(0, 70000) == 0.0 and dl.blank_rate(1, 70000) == pytest.approx(1 / 70000)
    assert dl.lob_count(0.0, min_call=1) == 0  # clean blank, no minimum: any droplet is a call
    assert dl.lob_count(0.0) == 0 and dl.lob_count(0.0, min_call=3) == 2
    assert dl.lob_count(2.0) == 5  # P(Pois(2) <= 4) = 0.947 < 0.95 <= P(Pois(2) <= 5) = 0.983
    assert dl.lob_count(0.4, min_call=3) == 2 and dl.lob_count(10.0, min_call=3) == 15
    assert dl.lod_count(0, 0.0) == pytest.approx(-math.log(0.05))  # the Poisson floor: 3 copies
    assert dl.lod_count(2, 0.0) == pytest.approx(6.2958, abs=1e-3)
    for mu_b in (0.0, 0.4, 2.0, 7.5):
        lob = dl.lob_count(mu_b, min_call=1)
        assert stats.poisson.sf(lob, mu_b) <= 0.05  # blanks called detected at most 5 %
        assert stats.poisson.sf(lob, mu_b + dl.lod_count(lob, mu_b)) == pytest.approx(0.95)
    assert dl.poisson_lod_fraction(100000, 1.0, 2.0) == pytest.approx(6e-5)
    assert dl.droplets_to_fraction(3.0, 100000, 1.0, 2.0) == pytest.approx(dl.poisson_lod_fraction(100000, 1.0, 2.0))


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

    Truth comes from the seeded simulator (simulators.ddpcr_sim, seeds
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


def test_one_stray_blank_droplet_does_not_inflate_the_lod():
    """One false-positive droplet in the blank wells raises the LoB by a few droplets, not the LoD 5x."""
    sheet, registry = _sheet()

    def lod(blank_positives, post_positives):
        wells = _wells([("R", f"A{i}", "SRY", blank_positives if i == 1 else 0, 17500) for i in range(1, 5)]
                       + [("R", f"A{i}", "RPP30", 15000, 17500) for i in range(1, 5)]
                       + [("D", "B1", "SRY", 7000, 17500), ("D", "B1", "RPP30", 15000, 17500)]
                       + [("X", f"C{i}", "SRY", post_positives if i == 1 else 0, 17500) for i in range(1, 9)]
                       + [("X", f"C{i}", "RPP30", 15000, 17500) for i in range(1, 9)])
        (r,) = quantify_chimerism(sheet, registry, [], [], wells, ChimerismConfig())[1]
        return r

    clean, stray = lod(0, 3), lod(1, 3)
    assert clean.detected is True and stray.detected is False  # LoB 2 -> 5 droplets
    assert stray.lod_pct < 2.5 * clean.lod_pct
    assert lod(1, 6).detected is True
    assert lod(0, 2).detected is False and lod(0, 2).status == "below_lod"
    wells = _wells([("R", "A1", "SRY", 0, 20000), ("R", "A1", "RPP30", 12000, 20000),
                    ("D", "B1", "SRY", 7000, 20000), ("D", "B1", "RPP30", 12000, 20000),
                    ("X", "C1", "SRY", 5, 20000), ("X", "C1", "RPP30", 12000, 20000)])
    fixed = quantify_chimerism(sheet, registry, [], [], wells, ChimerismConfig(ddpcr_lod_pct=0.5))[1][0]
    assert fixed.lod_pct == 0.5 and fixed.detected is False  # a configured LoD still overrides


LOB_SEEDS_ZERO = range(64_000, 64_200)  # fresh seeds, used nowhere else
LOB_SEEDS_LOD = range(64_200, 64_260)


def test_count_lob_false_positives_and_detection_over_seed_sweep(tmp_path):
    """False positives at 0 % and detection at 2x the median LoD over fresh simulated QX plates.

    Truth comes from the seeded simulator (simulators.ddpcr_sim, seeds
    64000-64199 at 0 % donor, 64200-64259 at twice the median LoD of the first run):
    the donor % each post sample was made with, its blank wells and post samples both
    carrying 0.05 false-positive droplets per well. The count-based LoB must call a 0 %
    sample detected no more often than a 5 % false-positive rate allows (99.9 %
    binomial bound), and at 2x the median LoD at least 90 % must be detected.
    """
    from scipy import stats

    lods, false_pos = [], 0
    for seed in LOB_SEEDS_ZERO:
        case = write_ddpcr_case(tmp_path, seed=seed, donor_pcts=(0.0,), file_name="lob0.csv")
        (r,) = _run(case.path, case)[1]
        lods.append(r.lod_pct)
        false_pos += bool(r.detected)
        assert r.detected or r.ci_low == 0.0
    n = len(LOB_SEEDS_ZERO)
    assert false_pos <= stats.binom.ppf(0.999, n, 0.05), false_pos
    level = 2 * sorted(lods)[n // 2]
    assert 0.002 < level / 2 < 0.01, level  # 6.3 expected droplets of ~140,000 at lambda_ref ~2.3
    detected = 0
    for seed in LOB_SEEDS_LOD:
        case = write_ddpcr_case(tmp_path, seed=seed, donor_pcts=(level,), file_name="lobd.csv")
        (r,) = _run(case.path, case)[1]
        detected += bool(r.detected)
    assert detected >= 0.9 * len(LOB_SEEDS_LOD), (level, detected)
