"""Seeded accuracy sweeps of the chimerism methods against the simulators' truth.

Each sweep writes one simulated export per seed (:mod:`simulators.str_sim`,
:mod:`simulators.qpcr_sim`, :mod:`simulators.ddpcr_sim`), reads it back with the
instrument reader, quantifies it with :func:`gating.chimerism.quantify_chimerism` and
returns one :class:`Share` per post sample and contributor: the truth the mixture was
built with beside the reported %. The tests run a few seeds; the full sweeps whose
figures go in the notes run by hand::

    .venv/bin/python -m simulators.chimerism_sweeps [--mixtures 500] [--plates 200]

Figures at the end of session 4 (two donors: joint least-squares fit per locus, loci
weighted by precision): fixed levels, seeds 64000-64124 (500 mixtures, 1500 shares): max
error 2.20 points, 1 share over 2 points, RMS 0.36 (unique-allele mean before: 1.97, 0,
0.40); seeds 64125-64624 (2000 mixtures): max 1.88, none over 2, RMS 0.36 (before: 2.22,
3 over, 0.39); random levels, seeds 66000-66124: max 1.49, none over, RMS 0.41 (before
1.57, 0.44). The remaining miss (seed 64089, recipient 62.2 % of 60 %) sits in the data:
with the true genotypes and the raw areas its loci read 61.3 % (SD 3.7, n 18), the peak
scatter of one sample, not a locus class or an artefact.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gating.chimerism.records import RECIPIENT

#: the two-donor levels of the STR tests: (donor 1 %, donor 2 %) per post sample
TWO_DONOR_LEVELS = ((30.0, 10.0), (10.0, 30.0), (5.0, 15.0), (20.0, 70.0))


@dataclass(frozen=True)
class Share:
    """One contributor's share of one simulated post sample: truth and what was reported."""

    seed: int
    sample_id: str
    contributor: str  # donor_id, or "recipient"
    truth: float
    pct: float | None
    detected: bool | None
    ci_low: float | None
    ci_high: float | None
    n_markers: int | None = None

    @property
    def error(self) -> float:
        return float("nan") if self.pct is None else self.pct - self.truth

    @property
    def covered(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None and self.ci_low <= self.truth <= self.ci_high


def _shares(seed: int, case, results) -> list[Share]:
    """Every reported row of ``results`` matched with the simulator's truth."""
    truth = {p.sample_id: p.donor_pct for p in case.posts}
    out = []
    for r in results:
        if r.sample_id not in truth:
            continue
        pcts = truth[r.sample_id]
        if r.contributor == RECIPIENT:
            who, t = RECIPIENT, 100.0 - sum(pcts.values())
        else:
            who, t = r.donor_id, pcts[r.donor_id]
        out.append(Share(seed, r.sample_id, who, t, r.donor_pct, r.detected, r.ci_low, r.ci_high, r.n_markers))
    return out


def _sweep(seeds: Iterable[int], write: Callable[[Path, int], object], read, slot: int, config=None,
           directory: Path | None = None) -> list[Share]:
    from gating.chimerism import ChimerismConfig, quantify_chimerism

    config = config or ChimerismConfig()
    out: list[Share] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(directory or tmp)
        for seed in seeds:
            case = write(folder, seed)
            inputs: list[list] = [[], [], []]
            inputs[slot] = read(case.path, "sweep").records
            _, results = quantify_chimerism(case.sheet, case.registry, *inputs, config)
            out += _shares(seed, case, results)
    return out


def str_shares(seeds: Iterable[int], donor_pcts: Sequence | Callable[[int], Sequence], artefacts: bool = True,
               config=None) -> list[Share]:
    """STR sweep; ``donor_pcts`` as :func:`simulators.str_sim.write_str_case` takes it, or a
    function of the seed (random levels); artefacts (pull-up, blobs, spikes, degradation,
    dropout) in every sample unless ``artefacts`` is False."""
    from assays import str_export
    from simulators.str_sim import Artefacts, write_str_case

    def write(folder, seed):
        levels = donor_pcts(seed) if callable(donor_pcts) else donor_pcts
        return write_str_case(folder, seed=seed, donor_pcts=levels, file_name="sweep.txt",
                              artefacts=Artefacts() if artefacts else None)

    return _sweep(seeds, write, str_export.read, 0, config)


def qpcr_shares(seeds: Iterable[int], donor_pcts: Sequence[float], config=None, **case) -> list[Share]:
    """qPCR sweep; ``case`` goes to :func:`simulators.qpcr_sim.write_qpcr_case`."""
    from assays import qpcr
    from simulators.qpcr_sim import write_qpcr_case

    return _sweep(seeds, lambda f, s: write_qpcr_case(f, seed=s, donor_pcts=donor_pcts, file_name="sweep.txt", **case),
                  qpcr.read, 1, config)


def ddpcr_shares(seeds: Iterable[int], donor_pcts: Sequence[float], config=None, **case) -> list[Share]:
    """ddPCR sweep; ``case`` goes to :func:`simulators.ddpcr_sim.write_ddpcr_case`."""
    from assays import ddpcr
    from simulators.ddpcr_sim import write_ddpcr_case

    return _sweep(seeds, lambda f, s: write_ddpcr_case(f, seed=s, donor_pcts=donor_pcts, file_name="sweep.csv", **case),
                  ddpcr.read, 2, config)


def random_two_donor_levels(seed: int, n: int = 4, floor: float = 5.0) -> list[tuple[float, float]]:
    """``n`` post samples of one seed with (donor 1 %, donor 2 %) drawn uniformly on the
    simplex of three shares, each share at least ``floor`` %; rounded to 0.1 %."""
    rng = np.random.default_rng([seed, 2])
    out = []
    while len(out) < n:
        shares = rng.dirichlet((1.0, 1.0, 1.0)) * 100
        if shares.min() >= floor:
            out.append((round(float(shares[1]), 1), round(float(shares[2]), 1)))
    return out


def by_truth(shares: Iterable[Share]) -> dict[float, list[Share]]:
    """Shares grouped by their true %."""
    out: dict[float, list[Share]] = {}
    for s in shares:
        out.setdefault(s.truth, []).append(s)
    return dict(sorted(out.items()))


def worst(shares: Sequence[Share]) -> Share:
    """The share farthest from its truth."""
    return max(shares, key=lambda s: abs(s.error))


def _report_str_one(seeds: range) -> None:
    shares = str_shares(seeds, (0.5, 5.0, 20.0, 50.0, 95.0))
    quantified = [s for s in shares if s.truth >= 5]
    over = [s for s in quantified if abs(s.error) > max(2.0, 0.1 * s.truth)]
    w = max(quantified, key=lambda s: abs(s.error) / max(2.0, 0.1 * s.truth))
    low = [s for s in shares if s.truth < 1]
    print(f"STR one donor, artefacts, seeds {seeds.start}-{seeds.stop - 1}: {len(quantified)} results at >= 5 %, "
          f"{len(over)} outside max(2 points, 10 %); worst {w.pct:.2f} at truth {w.truth:g} "
          f"({abs(w.error) / max(2.0, 0.1 * w.truth):.0%} of tolerance); 0.5 % detected in "
          f"{sum(bool(s.detected) for s in low)} of {len(low)}")


def _report_str_two(label: str, seeds: range, levels) -> None:
    shares = str_shares(seeds, levels)
    errors = np.array([abs(s.error) for s in shares])
    w = worst(shares)
    print(f"STR two donors, {label}, seeds {seeds.start}-{seeds.stop - 1}: {len(shares) // 3} mixtures, "
          f"{len(shares)} shares; max |error| {errors.max():.2f} points ({w.contributor} {w.pct:.2f} vs {w.truth:g}, "
          f"seed {w.seed} {w.sample_id}); over 2 points: {int((errors > 2).sum())}; "
          f"RMS {float(np.sqrt((errors ** 2).mean())):.2f}")


def _report_qpcr(seeds: range) -> None:
    from simulators.qpcr_sim import Background

    for series in (False, True):
        shares = qpcr_shares(seeds, (0.0, 0.01, 0.05, 0.1, 1.0), replicates=3, dilution_series=series,
                             background=Background())
        rates = {t: sum(bool(s.detected) for s in v) / len(v) for t, v in by_truth(shares).items()}
        print(f"qPCR detection, {'with' if series else 'without'} dilution series, {len(seeds)} plates "
              f"(seeds {seeds.start}-{seeds.stop - 1}): " + ", ".join(f"{t:g} %: {r:.1%}" for t, r in rates.items()))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixtures", type=int, default=500, help="two-donor STR mixtures per set (4 per seed)")
    parser.add_argument("--cases", type=int, default=100, help="one-donor STR cases (5 levels each)")
    parser.add_argument("--plates", type=int, default=200, help="qPCR plates per arm")
    parser.add_argument("--first-seed", type=int, default=64_000,
                        help="first seed of the fixed-level two-donor set (a second set: 64125 and --mixtures 2000)")
    args = parser.parse_args(argv)
    per_set = max(args.mixtures // 4, 1)
    _report_str_two("fixed levels", range(args.first_seed, args.first_seed + per_set), TWO_DONOR_LEVELS)
    _report_str_two("random levels", range(66_000, 66_000 + per_set), random_two_donor_levels)
    _report_str_one(range(63_000, 63_000 + args.cases))
    _report_qpcr(range(65_000, 65_000 + args.plates))


if __name__ == "__main__":
    main()
