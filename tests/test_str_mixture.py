"""STR, several donors: the joint fit of every contributor's share over the loci (gating.chimerism.str_mixture)."""

from __future__ import annotations

import numpy as np
import pytest

from assays import str_export
from gating.chimerism import ChimerismConfig, quantify_chimerism
from gating.chimerism.str_calling import LocusCall, ScreenedSample, stutter_ratios
from gating.chimerism.str_mixture import fit_shares, genotype_by_fit, jackknife_fit, locus_signals, robust_fit
from simulators.chimerism_sweeps import TWO_DONOR_LEVELS
from simulators.str_sim import Artefacts, write_str_case

fs = frozenset
SHARES = np.array([0.6, 0.1, 0.3])  # recipient, donor 1, donor 2 (numbers chosen by hand)
#: (recipient, donor 1, donor 2) genotypes per locus: unique alleles, shared ones, and one locus
#: (L4) where donor 1 has no allele of its own but differs by dose (12/12 beside 12/13)
GENOTYPES = {
    "L1": (fs({"10", "11"}), fs({"12", "13"}), fs({"11", "14"})),
    "L2": (fs({"8"}), fs({"8", "9"}), fs({"10", "11"})),
    "L3": (fs({"15", "16"}), fs({"16", "17"}), fs({"15", "18"})),
    "L4": (fs({"12", "13"}), fs({"12"}), fs({"13", "14"})),
    "L5": (fs({"20", "21"}), fs({"22"}), fs({"21", "23"})),
}


def _ideal(genotypes, shares, scale: float = 1000.0) -> dict[str, float]:
    """Post-sample signal of an exact mixture: each genome adds its share per allele copy."""
    signal: dict[str, float] = {}
    for g, b in zip(genotypes, shares):
        for allele in g:
            signal[allele] = signal.get(allele, 0.0) + scale * b * (2 if len(g) == 1 else 1)
    return signal


def _loci(shares=SHARES, unreadable=None):
    return [locus_signals(m, g, _ideal(g, shares, 1000.0 * (k + 1)), fs((unreadable or {}).get(m, ())))
            for k, (m, g) in enumerate(GENOTYPES.items())]


def test_joint_fit_recovers_exact_shares_with_locus_scales_dose_only_loci_and_unreadable_alleles():
    """Exact mixtures (each locus amplified differently) give the shares exactly, with an allele
    left out (an artefact on it), and from the dose-only locus alone."""
    for shares in (SHARES, np.array([0.1, 0.2, 0.7]), np.array([0.05, 0.9, 0.05])):
        assert fit_shares(_loci(shares)) == pytest.approx(shares, abs=1e-8)
    assert fit_shares(_loci(unreadable={"L1": ("12",), "L3": ("15",)})) == pytest.approx(SHARES, abs=1e-8)
    fit = jackknife_fit(_loci())
    assert fit.shares == pytest.approx(100 * SHARES) and fit.n_loci == 5 and fit.se == pytest.approx(0.0, abs=1e-6)
    dose_only = [locus_signals("L4", GENOTYPES["L4"], _ideal(GENOTYPES["L4"], SHARES))]
    # three alleles fix the scale and two free shares: this locus alone recovers them
    assert dose_only[0].informs(1) and fit_shares(dose_only) == pytest.approx(SHARES, abs=1e-8)
    two_alleles = (fs({"12"}), fs({"12", "13"}), fs({"13"}))
    assert fit_shares([locus_signals("L7", two_alleles, _ideal(two_alleles, SHARES))]) is None  # two can't


def test_unremoved_stutter_position_is_left_out_of_its_locus():
    """Without a measured stutter ratio, an allele one repeat below another is unusable."""
    locus = locus_signals("L1", GENOTYPES["L1"], _ideal(GENOTYPES["L1"], SHARES), stutter_removed=False)
    assert locus.usable.tolist() == [False, False, False, False, True]  # 10-13 sit below 11-14; 14 is free


def _noisy_loci(shares=SHARES, sigma=0.05):
    """The loci of GENOTYPES with a seeded 5 % multiplicative scatter per peak (rng seeds 0-4)."""
    out = []
    for k, (m, g) in enumerate(GENOTYPES.items()):
        signal = _ideal(g, shares, 1000.0 * (k + 1))
        scatter = np.random.default_rng(k).lognormal(0.0, sigma, len(signal))
        out.append(locus_signals(m, g, {a: v * f for (a, v), f in zip(sorted(signal.items()), scatter)}))
    return out


def test_a_locus_the_model_does_not_explain_is_left_out():
    """A locus that failed in the post sample (one peak left) reads far off; the misfit rule
    leaves it out and the other loci give the shares."""
    failed = locus_signals("L6", GENOTYPES["L3"], {"15": 0.0, "16": 0.0, "17": 0.0, "18": 3200.0})
    noisy = _noisy_loci()
    fit = robust_fit([*noisy, failed])
    assert fit.misfits == ("L6",) and "L6" not in fit.markers
    assert fit.shares == pytest.approx(100 * SHARES, abs=2.0)


def test_a_failed_reference_genotype_is_read_off_the_fit_when_only_one_fits():
    """The recipient's reference failed at a locus where it shares both alleles with donor 1
    (13/16 and 13/16, donor 2 12/12: no allele of its own, so infer_missing_call cannot help).
    With the shares of the other loci, 13/16 is the one genotype the locus' peaks allow;
    with three unexplained alleles nothing is read."""
    fitted = _noisy_loci()
    shares = fit_shares(fitted)
    truth = (fs({"13", "16"}), fs({"13", "16"}), fs({"12"}))
    signal = _ideal(truth, SHARES, 2500.0)
    signal = {a: v * f for (a, v), f in zip(sorted(signal.items()), (1.03, 0.97, 1.02))}
    got = genotype_by_fit("L8", [fs(), truth[1], truth[2]], 0, signal, fs(), shares, fitted)
    assert got == fs({"13", "16"})
    assert genotype_by_fit("L8", [fs(), truth[1], truth[2]], 0, {**signal, "9": 900.0, "10": 800.0, "11": 700.0},
                           fs({"9", "10", "11"}), shares, fitted) is None


def test_seeded_two_donor_case_with_a_failed_post_locus(tmp_path):
    """Seed 64040, sample D148 (simulators.str_sim, artefacts, truth 10 / 20 / 70 %): D2S441
    failed in the post sample (one peak of five). The joint fit leaves it out (flag outlier,
    unused) and every share is within 2 points; the CI of each covers its truth."""
    case = write_str_case(tmp_path, seed=64_040, donor_pcts=TWO_DONOR_LEVELS, artefacts=Artefacts())
    sheet = [r for r in case.sheet if r.role != "post" or r.sample_id == "HP01-D148"]  # the one sample checked
    markers, results = quantify_chimerism(sheet, case.registry, str_export.read(case.path, "sha").records,
                                          [], [], ChimerismConfig())
    truth = {"recipient": 10.0, "HP01-DN1": 20.0, "HP01-DN2": 70.0}
    rows = [r for r in results if r.sample_id == "HP01-D148"]
    assert len(rows) == 3 and sum(r.donor_pct for r in rows) == pytest.approx(100.0)
    for r in rows:
        t = truth[r.donor_id or r.contributor]
        assert abs(r.donor_pct - t) <= 2.0 and r.ci_low <= t <= r.ci_high, r
    d2s441 = [m for m in markers if m.sample_id == "HP01-D148" and m.marker == "D2S441"]
    assert d2s441 and all(not m.used and "outlier" in (m.flag or "") for m in d2s441)


def test_stutter_ratio_skips_a_stutter_position_the_screen_removed():
    """A reference's stutter peak screened out (pull-up) is unread, not a stutter of 0:
    14 -> 13 reads 8 %, 17 -> 16 was screened, so the locus ratio is 8 %, not the median of 8 % and 0."""
    ref = ScreenedSample(signal={"L": {"14": 1000.0, "13": 80.0, "17": 1000.0}},
                         excluded={"L": [("16", "pull_up")]})
    assert stutter_ratios([ref], [{"L": LocusCall(fs({"14", "17"}))}]) == {"L": pytest.approx(0.08)}
    bare = ScreenedSample(signal={"L": {"14": 1000.0, "13": 80.0, "17": 1000.0}})
    assert stutter_ratios([bare], [{"L": LocusCall(fs({"14", "17"}))}]) == {"L": pytest.approx(0.04)}
