"""Several contributors' shares of one STR mixture, fitted at once over every usable locus.

With a recipient and k donors, each donor estimated on its own unique alleles and the
shares averaged per locus leaves information unused: shared alleles carry the copy
numbers of everyone who has them, a locus where a donor has no allele of its own can
still tell it from the others by dose (12/12 beside 12/13), and a locus with one
unreadable allele (an artefact on it) still has the others. Here every allele of every
usable locus enters one fit of all shares (the quantitative mixture model of forensic
deconvolution: each genome adds its copies of an allele in proportion to its share, the
locus' amplification scales the whole locus; Gill et al., Forensic Sci Int 2006;160:90-101,
least-squares form Wang, Xue & Birdwell, J Forensic Sci 2006;51:1284-1297), and the
interval comes from the loci themselves (delete-one-locus jackknife, or the per-locus
means' interval when that is wider: :func:`share_interval`). Entry point:
:func:`fit_contributors`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from gating.chimerism.locus_statistics import mean_ci, weighted_summary
from gating.chimerism.str_calling import LocusCall, repeat_value, unexplained_alleles

_NO_CALL = LocusCall(frozenset())


@dataclass(frozen=True)
class LocusSignals:
    """One locus of a mixture as the fit sees it.

    ``copies[a, k]``: copies of allele a in contributor k (0, 1, or 2 for a homozygote);
    ``signal[a]``: the post sample's corrected signal (stutter removed, degradation undone);
    ``usable[a]``: False for an allele whose signal is unknown (an artefact took its peak).
    """

    marker: str
    copies: np.ndarray
    signal: np.ndarray
    usable: np.ndarray

    def informs(self, k: int) -> bool:
        """True when contributor k's allele doses differ from another contributor's here
        (then every contributor's do: a locus tells all apart or none)."""
        return bool(np.any(self.copies[self.usable] != self.copies[self.usable][:, [k]]))


def locus_signals(
    marker: str, genotypes: Sequence[frozenset[str]], signal: Mapping[str, float],
    unreadable: frozenset[str] = frozenset(), stutter_removed: bool = True,
) -> LocusSignals:
    """The fit's view of one locus from the contributors' genotypes and the post signal.

    An allele is left out of the fit (``usable`` False) when its peak is unreadable (an
    artefact took it) or, when no back-stutter ratio could be measured and removed, when
    it sits one repeat below another allele of the locus: its signal then holds an unknown
    stutter share. The locus' other alleles still count.
    """
    alleles = sorted(frozenset().union(*genotypes))
    copies = np.array([[(2 if len(g) == 1 else 1) if a in g else 0 for g in genotypes] for a in alleles], float)
    values = {repeat_value(a) for a in alleles} - {None}

    def stutter_shadowed(a: str) -> bool:
        v = repeat_value(a)
        return not stutter_removed and v is not None and any(abs(v + 1 - u) < 1e-6 for u in values)

    usable = np.array([a not in unreadable and not stutter_shadowed(a) for a in alleles])
    return LocusSignals(marker, copies, np.array([max(signal.get(a, 0.0), 0.0) for a in alleles]), usable)


@dataclass(frozen=True)
class MixtureFit:
    """Shares (%) of every contributor, their jackknife SE (%, None with < 2 loci), the loci
    that tell the contributors apart and were kept (``markers``) and those left out as
    misfits (``misfits``)."""

    shares: np.ndarray
    se: np.ndarray | None
    n_loci: int
    markers: tuple[str, ...]
    misfits: tuple[str, ...] = field(default=())


def fit_shares(loci: Sequence[LocusSignals], floor: float = 0.02, iterations: int = 60,
               start: np.ndarray | None = None) -> np.ndarray | None:
    """Contributors' shares b (summing to 1) that best explain every usable allele signal.

    Model: A(a) = s_L sum_k c_k(a) b_k for allele a of locus L (c_k(a) copies in
    contributor k, s_L the locus' amplification, a free scale per locus), fitted by
    weighted least squares with weights 1 / max(A_hat(a), ``floor`` x max_a A(a))^2,
    iteratively reweighted: peak signals scatter in proportion to their size, and the
    floor bounds the weight of an allele expected near 0. Solved by alternating the
    closed-form s_L for given b and the linear least-squares b for given s.

    Parameters
    ----------
    loci : sequence of LocusSignals
        Loci with at least two usable alleles.
    floor : float
        Smallest expected signal, as a share of the locus' largest, used in a weight.
    iterations : int
        Alternation / reweighting steps.
    start : numpy.ndarray, optional
        Shares to start from (a nearby fit: the jackknife's); default equal shares.

    Returns
    -------
    numpy.ndarray or None
        b (>= 0, sum 1), None when no locus tells the contributors apart.
    """
    stacked = _stack(loci, floor)
    return None if stacked is None else _solve(*stacked, iterations, start)


def _stack(loci: Sequence[LocusSignals], floor: float):
    """Usable alleles of all loci as one system: copies x, signal y, locus index, weight floor."""
    rows = [L for L in loci if L.usable.sum() >= 2]
    if not rows:
        return None
    x = np.vstack([L.copies[L.usable] for L in rows])
    y = np.concatenate([L.signal[L.usable] for L in rows])
    locus = np.concatenate([np.full(int(L.usable.sum()), j) for j, L in enumerate(rows)])
    low = np.concatenate([np.full(int(L.usable.sum()), floor * max(float(L.signal.max()), 1e-12)) for L in rows])
    return x, y, locus, low


def _solve(x, y, locus, low, iterations: int = 60, start: np.ndarray | None = None) -> np.ndarray | None:
    """:func:`fit_shares` on a stacked system (see there)."""
    if np.linalg.matrix_rank(x) < x.shape[1]:
        return None
    b = np.full(x.shape[1], 1.0 / x.shape[1]) if start is None else np.asarray(start, float)
    w = 1.0 / np.maximum(y, low) ** 2
    for _ in range(iterations):
        m = x @ b
        s = _scale(y, m, locus, w)
        w = 1.0 / np.maximum(s[locus] * m, low) ** 2
        design = x * s[locus][:, None]
        try:  # weighted normal equations: a k x k system (k contributors)
            new = np.linalg.solve(design.T @ (design * w[:, None]), design.T @ (w * y))
        except np.linalg.LinAlgError:
            return None
        new = np.maximum(new, 0.0)
        if new.sum() <= 0:
            return None
        new = new / new.sum()
        done = np.max(np.abs(new - b)) < 1e-10
        b = new
        if done:
            break
    return b


def locus_misfit(loci: Sequence[LocusSignals], b: np.ndarray, floor: float = 0.02) -> np.ndarray:
    """Per locus, the RMS of its weighted residuals under shares ``b`` (the locus' scale refitted).

    chi_L^2 = sum_a w_a (A(a) - s_L m_a)^2 / (n_L - 1), w_a = 1 / max(s_L m_a, floor x max A)^2,
    m = c b: about the relative scatter of its peaks for a locus the mixture model explains;
    far more for a locus that failed in the post sample or carries a wrong genotype.
    """
    out = np.full(len(loci), np.nan)
    for i, L in enumerate(loci):
        use = L.usable
        if use.sum() < 2:
            continue
        y, m = L.signal[use], L.copies[use] @ b
        low = floor * max(float(L.signal.max()), 1e-12)
        w = 1.0 / np.maximum(y, low) ** 2
        for _ in range(3):
            s = float(np.sum(w * y * m) / max(np.sum(w * m * m), 1e-300))
            w = 1.0 / np.maximum(s * m, low) ** 2
        out[i] = math.sqrt(float(np.sum(w * (y - s * m) ** 2)) / (use.sum() - 1))
    return out


def _scale(y: np.ndarray, m: np.ndarray, locus: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-locus amplification s_L = sum w y m / sum w m^2 (weighted least squares for given b)."""
    num = np.bincount(locus, w * y * m)
    den = np.bincount(locus, w * m * m)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def jackknife_fit(loci: Sequence[LocusSignals], floor: float = 0.02) -> MixtureFit | None:
    """:func:`fit_shares` over all loci, with a delete-one-locus jackknife standard error.

    SE_k^2 = (n - 1) / n sum_i (b_k(-i) - mean_i b_k(-i))^2 over the n loci that tell
    contributor k apart (b(-i): the fit without locus i; Efron & Stein, Ann Stat
    1981;9:586-596). The loci's own disagreement sets the interval, as the SD over loci
    does for a per-locus mean, whatever the peak-scatter model's weights assume.
    """
    b = fit_shares(loci, floor)
    if b is None:
        return None
    informing = [i for i, L in enumerate(loci) if L.informs(0)]
    n = len(informing)
    se = None
    if n >= 2:
        x, y, locus, low = _stack(loci, floor)
        # the stacked system keeps only loci with >= 2 usable alleles, in order: map them
        stacked = [i for i, L in enumerate(loci) if L.usable.sum() >= 2]
        leave = []
        for d in informing:
            keep = locus != stacked.index(d) if d in stacked else np.ones(locus.size, bool)
            leave.append(_solve(x[keep], y[keep], locus[keep], low[keep], start=b))
        if all(v is not None for v in leave):
            values = np.array(leave)
            se = 100.0 * np.sqrt((n - 1) / n * np.sum((values - values.mean(axis=0)) ** 2, axis=0))
    return MixtureFit(100.0 * b, se, n, tuple(loci[i].marker for i in informing))


def robust_fit(loci: Sequence[LocusSignals], z: float = 3.5, min_loci: int = 3, floor: float = 0.02,
               rounds: int = 5, jackknife: bool = True, start: np.ndarray | None = None) -> MixtureFit | None:
    """:func:`jackknife_fit` after leaving out loci the mixture model does not explain.

    A locus whose misfit (:func:`locus_misfit`) stands out among the loci is left out:
    modified z-score of ln chi_L, 0.6745 (ln chi_L - median) / MAD > ``z`` (one-sided;
    Iglewicz & Hoaglin 1993, on the log scale, where the spread of a scatter estimate is
    about symmetric), repeated until none stands out, while ``min_loci`` remain. Such a
    locus failed in the post sample (its alleles missing or mostly missing), or a
    contributor's genotype there is wrong; either biases every share. Loci that tell no
    contributor apart (everyone's doses equal) are not fitted. ``jackknife`` False: the
    shares only (``se`` None). ``start``: shares from a robust first estimate (the
    per-locus means after their outlier rule); the first round judges the loci at those
    shares instead of at a fit of all loci, which a locus that failed in the post
    sample can drag anywhere (seed 68490 D058: SE33, one peak of six, turned
    60 / 30 / 10 into 50 / 25 / 25, and its misfit then no longer stood out).
    """
    kept = [L for L in loci if L.usable.sum() >= 2 and L.informs(0)]
    misfits: list[str] = []
    for round_ in range(rounds):
        b = start if round_ == 0 and start is not None else fit_shares(kept, floor)
        if b is None or len(kept) <= min_loci:
            break
        chi = np.log(np.maximum(locus_misfit(kept, b, floor), 1e-9))
        centre = float(np.median(chi))
        spread = float(np.median(np.abs(chi - centre))) / 0.6745
        bad = (chi - centre) > z * spread if spread > 0 else np.zeros(len(kept), bool)
        if not bad.any() or len(kept) - int(bad.sum()) < min_loci:
            break
        misfits += [L.marker for L, x in zip(kept, bad) if x]
        kept = [L for L, x in zip(kept, bad) if not x]
    if not jackknife:
        b = fit_shares(kept, floor)
        return None if b is None else MixtureFit(100.0 * b, None, len(kept), tuple(L.marker for L in kept),
                                                 tuple(misfits))
    fit = jackknife_fit(kept, floor)
    return None if fit is None else MixtureFit(fit.shares, fit.se, fit.n_loci, fit.markers, tuple(misfits))


def genotype_by_fit(
    marker: str, genotypes: Sequence[frozenset[str]], missing: int, signal: Mapping[str, float],
    open_alleles: frozenset[str], shares: np.ndarray, fitted: Sequence[LocusSignals],
    unreadable: frozenset[str] = frozenset(), stutter_removed: bool = True, z: float = 3.5, floor: float = 0.02,
    min_gap: float = 3.0,
) -> frozenset[str] | None:
    """The one genotype of a contributor without a reference call that the fitted shares allow.

    Candidates: the post alleles no other contributor carries and stutter does not explain
    (``open_alleles``) must all be the missing contributor's; with two of them they are its
    genotype, with one its other allele is any post allele (or the same: homozygote), with
    none it is any one or two of the post alleles the others carry. Each candidate is
    judged, with the shares fixed at those fitted on the other loci, by the locus' misfit
    (:func:`locus_misfit`) against the fitted loci's, as a robust score
    (ln chi - median) / (MAD / 0.6745) of their ln chi: consistent at <= ``z`` (the rule of
    :func:`robust_fit`). A genotype is returned only when exactly one candidate is
    consistent and every other candidate scores at least ``min_gap`` higher: the genotype
    is then what the mixture model and the other loci require (deconvolution with known
    shares, as in Gill et al., Forensic Sci Int 2006;160:90-101). Otherwise None: an
    unscreened artefact among the post alleles can make every candidate wrong, and the one
    left then fits barely better than the next (seeds 66028 and 64033: gaps 2.6 and 2.3;
    the right genotypes of the seeds checked: gaps of 3.2 and more).
    """
    if len(open_alleles) > 2 or len(fitted) < 3:
        return None
    present = sorted(a for a, v in signal.items() if v > 0)
    if len(open_alleles) == 2:
        candidates = [open_alleles]
    elif len(open_alleles) == 1:
        candidates = [open_alleles | {a} for a in present]
    else:
        known = frozenset().union(*genotypes)
        pool = [a for a in present if a in known]
        candidates = list({frozenset({a, c}) for a in pool for c in pool})
    chi = np.log(np.maximum(locus_misfit(fitted, shares, floor), 1e-9))
    centre = float(np.median(chi))
    spread = float(np.median(np.abs(chi - centre))) / 0.6745
    scores = []
    for candidate in candidates:
        trial = list(genotypes)
        trial[missing] = candidate
        locus = locus_signals(marker, trial, signal, unreadable, stutter_removed)
        value = locus_misfit([locus], shares, floor)[0]
        if locus.usable.sum() >= 3 and np.isfinite(value):
            scores.append(((math.log(max(value, 1e-9)) - centre) / max(spread, 1e-9), candidate))
    scores.sort(key=lambda sc: sc[0])
    if not scores or scores[0][0] > z:
        return None
    if len(scores) > 1 and (scores[1][0] <= z or scores[1][0] - scores[0][0] < min_gap):
        return None
    return scores[0][1]


def share_interval(fit: MixtureFit, j: int, values: Sequence[float], weights: Sequence[float]):
    """Contributor j's share from the joint fit, with the wider of two 95 % intervals.

    The jackknife interval, share +- t(0.975, n-1) SE_jack (n loci fitted), and the
    interval of the contributor's precision-weighted per-locus mean, +- t(0.975, m-1) SE
    over its m loci with an allele of its own (:func:`weighted_summary`), centred on the
    fitted share. Each is an estimate of the same error under its own assumptions; in the
    seeded two-donor sweeps the jackknife alone covered the truth in only 92.9-94.1 % of
    shares (docs/chimerism_sweeps.md, session 7), so the wider one is reported. Returns
    ``(share, SD, n, (low, high))`` with SD = half-width x sqrt(n) / t, as :func:`mean_ci` reads it.
    """
    from scipy import stats

    share, n = float(fit.shares[j]), fit.n_loci
    half = float(stats.t.ppf(0.975, n - 1)) * float(fit.se[j])
    if len(values) >= 2:
        mean, sd, m = weighted_summary(values, weights)
        low, high = mean_ci(mean, sd, m)
        half = max(half, (high - low) / 2)
    return share, half * math.sqrt(n) / float(stats.t.ppf(0.975, n - 1)), n, (share - half, share + half)


def fit_contributors(
    per_locus: Sequence, calls: Mapping[str, Mapping[str, LocusCall]], ratios: Mapping[str, float],
    z: float = 3.5, min_loci: int = 3, start: np.ndarray | None = None,
) -> tuple[MixtureFit | None, dict[str, tuple[str, frozenset[str]]]]:
    """Every contributor's share of one post sample fitted at once over its usable loci (:func:`robust_fit`).

    ``per_locus``: one record per locus with ``marker``, ``signal`` (the post signal after
    degradation and stutter corrections; None for a sex locus or no peaks), ``unreadable``
    (contributor alleles whose peak an artefact took) and ``corrected`` (stutter removed);
    ``calls``: contributor -> marker -> reference call, in the order of the shares;
    ``start``: a robust first estimate of the shares (:func:`robust_fit`).

    A locus enters when every contributor has a call there (called or inferred) and the
    post sample has signal; its alleles whose peak an artefact took, or that sit in an
    unremoved stutter position, are left out of it (:func:`locus_signals`). A locus where
    one reference failed enters when the shares fitted on the other loci admit one
    genotype only for that person (:func:`genotype_by_fit`; returned as marker ->
    (who, alleles)). The fit is None (the per-locus means are used) when the loci cannot
    tell the contributors apart or give no interval.
    """
    usable = [x for x in per_locus if x.signal is not None]

    def called(marker: str) -> list[frozenset[str]]:
        return [c.get(marker, _NO_CALL).alleles for c in calls.values()]

    complete = [x for x in usable if all(1 <= len(g) <= 2 for g in called(x.marker))]
    loci = [locus_signals(x.marker, called(x.marker), x.signal, x.unreadable, x.corrected) for x in complete]
    fit = robust_fit(loci, z, min_loci, jackknife=False, start=start)
    if fit is None:
        return None, {}
    fitted: dict[str, tuple[str, frozenset[str]]] = {}
    kept = [L for L in loci if L.marker in fit.markers]
    for x in usable:
        genotypes = called(x.marker)
        missing = [k for k, g in enumerate(genotypes) if not g]
        if len(missing) != 1 or not all(len(g) <= 2 for g in genotypes):
            continue
        who = list(calls)[missing[0]]
        known = {w: c.get(x.marker, _NO_CALL) for w, c in calls.items()}
        open_alleles = unexplained_alleles(known, x.signal, ratios.get(x.marker))
        genotype = genotype_by_fit(x.marker, genotypes, missing[0], x.signal, open_alleles, fit.shares / 100.0,
                                   kept, x.unreadable, x.corrected, z)
        if genotype is not None:
            fitted[x.marker] = (who, genotype)
            genotypes[missing[0]] = genotype
            loci.append(locus_signals(x.marker, genotypes, x.signal, x.unreadable, x.corrected))
    fit = robust_fit(loci, z, min_loci, start=start)
    if fit is None or fit.se is None:
        return None, {}
    return fit, {m: v for m, v in fitted.items() if m in fit.markers}
