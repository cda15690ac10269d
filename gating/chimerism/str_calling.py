"""STR peaks screened for artefacts, and reference genotypes called from what remains.

A capillary-electrophoresis export labels peaks, not alleles: besides true alleles it
carries artefacts that fall into allele bins (Butler, Advanced Topics in Forensic DNA
Typing: Methodology, 2012, ch. 6; SWGDAM Interpretation Guidelines for Autosomal STR
Typing, 2017, 3.1-3.5). Recognised here, per sample:

* off-ladder calls (``OL``, ``?``): outside every allele bin, never alleles;
* spikes: an electrical or air-bubble signal seen in three or more dye channels at the
  same scan (data point) with similar heights, and sharp: a spike is one or two scans
  wide, so its area-to-height falls well below the sample's typical peak (when the export
  has areas; true alleles of three loci that co-migrate are not taken for one);
* pull-up (spectral bleed-through): a peak at the same scan as a much stronger peak of
  another dye (height <= ``pullup_max_ratio`` x that peak's), the colour separation
  leaving a fraction of the strong signal in the neighbouring channel;
* dye blobs: unbound dye, a broad peak (area-to-height well above the sample's typical
  peak) or inside a lab-configured size window of its dye.

Reference samples (the recipient's pre-transplant and each donor's) are pure genotypes:
an allele is called only at or above half the locus' highest peak (the published
chimerism tools' rule; stutter, at 5-15 % of its parent, and residual artefacts fall
below), and the heterozygote balance Hb = height(smaller) / height(larger) is reported
and flagged below ``min_balance`` (0.6, the usual forensic threshold; Gill et al.,
Forensic Sci Int 2006;160:90-101).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from assays.records import StrPeak

OFF_LADDER = "off_ladder"
SPIKE = "spike"
PULL_UP = "pull_up"
DYE_BLOB = "dye_blob"
BELOW_HALF_MAX = "below_half_max"

_NON_ALLELE_CALLS = frozenset({"OL", "?", ""})


@dataclass(frozen=True)
class ArtefactRules:
    """Tolerances of the artefact screen (defaults suit 3500-series instruments)."""

    #: a peak at most this share of a co-migrating peak of another dye is pull-up. Pull-up
    #: runs at 1-10 % of its parent on a calibrated instrument; true alleles of different
    #: loci do co-migrate (ID-X D10S1248 15 and D22S1045 16 at 104.8 bp: 27 % in the
    #: shared reference export), so the cut sits well below that
    pullup_max_ratio: float = 0.15
    #: same position: within this many scans (data points), or bp when no data point is exported
    tolerance_points: float = 2.0
    tolerance_bp: float = 0.5
    #: a spike shows in at least this many dyes, heights within ``spike_height_ratio`` of each other
    spike_min_dyes: int = 3
    spike_height_ratio: float = 3.0
    #: a spike's area/height is below this multiple of the sample's median (a sharp peak);
    #: co-migrating true alleles of three dyes have the usual shape and stay alleles
    spike_shape_factor: float = 0.6
    #: area/height above this multiple of the sample's median marks a broad (dye-blob) peak
    blob_shape_factor: float = 2.5
    #: (dye, low bp, high bp) windows where the kit's dye blobs run
    blob_windows: tuple[tuple[str, float, float], ...] = ()


@dataclass
class ScreenedSample:
    """One sample's peaks after the artefact screen.

    ``signal``: marker -> allele -> area (height when the export has no areas) of kept
    peaks; ``height``: the same with heights; ``excluded``: marker -> (allele, reason).
    """

    signal: dict[str, dict[str, float]] = field(default_factory=dict)
    height: dict[str, dict[str, float]] = field(default_factory=dict)
    excluded: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    size: dict[str, dict[str, float]] = field(default_factory=dict)  # bp of each kept allele peak


INFERRED = "inferred_from_post"  # a LocusCall read off the post sample (infer_missing_call)


@dataclass(frozen=True)
class LocusCall:
    """A reference genotype at one locus: called alleles, what was left out and why."""

    alleles: frozenset[str]
    excluded: tuple[tuple[str, str], ...] = ()
    balance: float | None = None  # heterozygote balance Hb, two alleles only
    flags: tuple[str, ...] = ()


def _is_call(allele: str | None) -> bool:
    return allele is not None and allele.strip().upper() not in _NON_ALLELE_CALLS


def _value(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) and x > 0 else None


def artefact_reasons(peaks: Sequence[StrPeak], rules: ArtefactRules = ArtefactRules()) -> list[str | None]:
    """Why each peak of one sample is an artefact (None = kept), in ``peaks`` order.

    Parameters
    ----------
    peaks : sequence of StrPeak
        Every labelled peak of one sample, all markers and dyes.
    rules : ArtefactRules
        Tolerances; see the module docstring for each rule.

    Returns
    -------
    list of str or None
        ``off_ladder``, ``spike``, ``pull_up`` or ``dye_blob`` per peak.
    """
    reasons: list[str | None] = [None if _is_call(p.allele) else OFF_LADDER for p in peaks]
    by_points = all(p.data_point is not None for p in peaks)
    tol = rules.tolerance_points if by_points else rules.tolerance_bp
    pos = [p.data_point if by_points else p.size for p in peaks]
    heights = [_value(p.height) for p in peaks]
    shapes = [p.area / h if h and _value(p.area) else None for p, h in zip(peaks, heights)]
    known = [x for x in shapes if x is not None]
    typical = float(np.median(known)) if len(known) >= 5 else None

    def sharp(i: int) -> bool:  # without areas the shape is unknown: position and height decide
        return typical is None or shapes[i] is None or shapes[i] < rules.spike_shape_factor * typical

    placed = [i for i, p in enumerate(peaks) if p.dye and pos[i] is not None and heights[i] is not None]
    placed.sort(key=lambda i: pos[i])
    for k, i in enumerate(placed):
        near = []
        for j in placed[max(0, k - 12): k + 13]:
            if j != i and peaks[j].dye != peaks[i].dye and abs(pos[j] - pos[i]) <= tol:
                near.append(j)
        if not near:
            continue
        similar = [j for j in near if sharp(j)
                   and max(heights[i], heights[j]) <= rules.spike_height_ratio * min(heights[i], heights[j])]
        if sharp(i) and len({peaks[j].dye for j in similar} | {peaks[i].dye}) >= rules.spike_min_dyes:
            reasons[i] = reasons[i] or SPIKE
        elif any(heights[i] <= rules.pullup_max_ratio * heights[j] for j in near):
            reasons[i] = reasons[i] or PULL_UP
    for i, p in enumerate(peaks):
        if reasons[i]:
            continue
        broad = typical is not None and heights[i] and _value(p.area) and p.area / heights[i] > rules.blob_shape_factor * typical
        windowed = p.dye is not None and p.size is not None and any(
            d.upper() == p.dye.upper() and lo <= p.size <= hi for d, lo, hi in rules.blob_windows)
        if broad or windowed:
            reasons[i] = DYE_BLOB
    return reasons


def screen_sample(peaks: Sequence[StrPeak], rules: ArtefactRules = ArtefactRules()) -> ScreenedSample:
    """Artefact screen of one sample's peaks (:func:`artefact_reasons`), then per-allele signals.

    Duplicate calls of an allele are summed; a peak without a usable area counts by its
    height (re-saved exports drop areas), one without either is left out.
    """
    out = ScreenedSample()
    for p, reason in zip(peaks, artefact_reasons(peaks, rules)):
        allele = (p.allele or "").strip()
        if reason is not None:
            out.excluded.setdefault(p.marker, []).append((allele or "?", reason))
            continue
        value = _value(p.area) or _value(p.height)
        if value is None:
            continue
        sig = out.signal.setdefault(p.marker, {})
        sig[allele] = sig.get(allele, 0.0) + value
        hgt = out.height.setdefault(p.marker, {})
        hgt[allele] = hgt.get(allele, 0.0) + (_value(p.height) or value)
        if p.size is not None and math.isfinite(p.size):
            out.size.setdefault(p.marker, {}).setdefault(allele, p.size)
    return out


def degradation_slope(sample: ScreenedSample, loci: Sequence[str], min_loci: int = 5) -> float:
    """Decay of signal with fragment length, k in ln(signal) = a - k x size (per bp).

    Degraded DNA amplifies long fragments less: a locus' total signal (every genome
    contributes two copies, whoever it belongs to) falls log-linearly with its size
    (Tvedebrink et al., Forensic Sci Int Genet 2012;6:97-101). k is the least-squares
    slope of ln(locus total signal) against the locus' signal-weighted mean size over
    ``loci``; 0 with fewer than ``min_loci`` sized loci or a negative slope.

    Parameters
    ----------
    sample : ScreenedSample
        A post sample's screened peaks (signal and size per allele).
    loci : sequence of str
        The loci to fit (sex loci left out by the caller).
    min_loci : int
        Fewest sized loci for a fit.

    Returns
    -------
    float
        k >= 0 per bp.
    """
    xs, ys = [], []
    for marker in loci:
        signal, size = sample.signal.get(marker, {}), sample.size.get(marker, {})
        sized = [(signal[a], size[a]) for a in signal if a in size and signal[a] > 0]
        total = sum(v for v, _ in sized)
        if total > 0:
            xs.append(sum(v * bp for v, bp in sized) / total)
            ys.append(math.log(total))
    if len(xs) < min_loci or np.ptp(xs) <= 0:
        return 0.0
    return max(-float(np.polyfit(xs, ys, 1)[0]), 0.0)


def undo_degradation(signal: Mapping[str, float], size: Mapping[str, float], k: float) -> dict[str, float]:
    """A'(x) = A(x) x exp(k (size_x - mean size)): alleles of one locus back on an equal footing.

    Parameters
    ----------
    signal, size : mapping of str to float
        Peak signal and fragment size (bp) per allele of one locus.
    k : float
        :func:`degradation_slope`.

    Returns
    -------
    dict of str to float
        Corrected signal per allele (unchanged for k <= 0).
    """
    if k <= 0 or not size:
        return dict(signal)
    centre = float(np.mean([size[a] for a in signal if a in size])) if any(a in size for a in signal) else 0.0
    return {a: v * math.exp(k * (size[a] - centre)) if a in size else v for a, v in signal.items()}


def call_reference(
    height: Mapping[str, float],
    excluded: Sequence[tuple[str, str]] = (),
    min_fraction: float = 0.5,
    min_balance: float = 0.6,
) -> LocusCall:
    """Genotype of a pure sample at one locus: alleles at or above ``min_fraction`` x the highest peak.

    Parameters
    ----------
    height : mapping
        allele -> peak height of the screened peaks (:func:`screen_sample`).
    excluded : sequence of (allele, reason)
        Artefacts the screen removed at this locus, carried into the call's record.
    min_fraction : float
        Share of the locus maximum an allele must reach (0.5: half the maximum).
    min_balance : float
        Heterozygote balance below which the call is flagged ``heterozygote_imbalance``.

    Returns
    -------
    LocusCall
        Alleles; every other peak as ``below_half_max``; Hb = h_min / h_max of two alleles;
        flags ``heterozygote_imbalance``, ``more_than_two_alleles``.
    """
    dropped = list(excluded)
    if not height:
        return LocusCall(frozenset(), tuple(dropped))
    top = max(height.values())
    alleles = frozenset(a for a, h in height.items() if h >= min_fraction * top)
    dropped += [(a, BELOW_HALF_MAX) for a in sorted(height) if a not in alleles]
    flags = []
    balance = None
    if len(alleles) == 2:
        lo, hi = sorted(height[a] for a in alleles)
        balance = lo / hi
        if balance < min_balance:
            flags.append("heterozygote_imbalance")
    elif len(alleles) > 2:
        flags.append("more_than_two_alleles")
    return LocusCall(alleles, tuple(dropped), balance, tuple(flags))


def repeat_value(allele: str) -> float | None:
    """Repeat number of an allele name (``9.3`` -> 9.3), None for X, Y and other names."""
    try:
        return float(allele)
    except ValueError:
        return None


def _repeats_away(allele: str, step: int) -> str | None:
    """The allele name ``step`` repeats from ``allele`` (``9.3``, -1 -> ``8.3``), None for X, Y, ..."""
    value = repeat_value(allele)
    if value is None:
        return None
    other = value + step
    return str(int(other)) if other.is_integer() else f"{other:.1f}"


def _one_repeat_below(allele: str) -> str | None:
    return _repeats_away(allele, -1)


def stutter_ratios(references: Sequence[ScreenedSample], calls: Sequence[Mapping[str, LocusCall]]) -> dict[str, float]:
    """Back-stutter ratio per locus, measured on the pure reference samples.

    For every called allele a whose n-1 position is no allele of that sample, the
    ratio signal(n-1) / signal(a) is the polymerase slippage product of a alone; the
    locus ratio is the median over all such observations (stutter ratios are locus- and
    allele-length dependent and stable within a run; Butler 2012, ch. 6.2). A stutter
    position without a peak counts as 0 (stutter below the analytical threshold), unless
    the artefact screen removed a peak there (then the stutter was not read); loci with no
    observation are absent.

    Parameters
    ----------
    references : sequence of ScreenedSample
        The pure reference samples (recipient pre, donors).
    calls : sequence of mapping of str to LocusCall
        Their called genotypes, in the same order.

    Returns
    -------
    dict of str to float
        Median back-stutter ratio s per locus.
    """
    seen: dict[str, list[float]] = defaultdict(list)
    for sample, sample_calls in zip(references, calls):
        for marker, call in sample_calls.items():
            signal = sample.signal.get(marker, {})
            # a stutter position whose peak the screen removed (pull-up, spike, blob) is unread,
            # not a stutter of 0: left out, or the locus' ratio reads low
            screened = {a for a, _ in sample.excluded.get(marker, ())} - set(signal)
            for allele in call.alleles:
                below = _one_repeat_below(allele)
                if below is None or below in call.alleles or below in screened or signal.get(allele, 0) <= 0:
                    continue
                seen[marker].append(signal.get(below, 0.0) / signal[allele])
    return {m: float(np.median(v)) for m, v in seen.items() if v}


def subtract_stutter(signal: Mapping[str, float], ratio: float) -> dict[str, float]:
    """Post-sample signals with the expected back-stutter of each n+1 peak removed.

    A'(x) = max(A(x) - s x A(x + 1 repeat), 0): the stutter of the allele one repeat
    above lands on x and would be read as x's own signal, inflating a minor
    contributor whose unique allele sits there (DESIGN.md, stutter position). Every
    allele loses its own stutter share alike, which cancels in the ratio formulas.

    Parameters
    ----------
    signal : mapping of str to float
        Post-sample signal per allele of one locus.
    ratio : float
        The locus' back-stutter ratio s (:func:`stutter_ratios`).

    Returns
    -------
    dict of str to float
        Signal per allele with the expected stutter removed (never below 0).
    """
    out = dict(signal)
    for allele in signal:
        below = _one_repeat_below(allele)
        if below is not None and below in out:
            out[below] = out[below] - ratio * signal[allele]
    return {a: max(v, 0.0) for a, v in out.items()}


def describe(excluded: Sequence[tuple[str, str]], who: str) -> list[str]:
    """``who allele: reason`` for each artefact or peak left out of a call (for chimerism_markers)."""
    return [f"{who} {allele}: {reason}" for allele, reason in excluded]


def unexplained_alleles(
    references: Mapping[str, LocusCall], post_signal: Mapping[str, float], stutter_ratio: float | None = None,
    forward_ratio: float = 0.05,
) -> frozenset[str]:
    """Post alleles that no called reference carries and that stutter does not explain.

    Stutter explains a peak one repeat below a peak P with A <= max(2 s, 0.15) A(P), or one
    repeat above P with A <= ``forward_ratio`` A(P) (see :func:`infer_missing_call`).
    """
    known = frozenset().union(*(c.alleles for c in references.values()))
    signal = {a: s for a, s in post_signal.items() if s > 0}
    back = max(2.0 * (stutter_ratio or 0.0), 0.15)

    def stutter(a: str) -> bool:
        return (signal[a] <= back * signal.get(_repeats_away(a, 1), 0.0)
                or signal[a] <= forward_ratio * signal.get(_one_repeat_below(a), 0.0))

    return frozenset(a for a in signal if a not in known and not stutter(a))


def infer_missing_call(
    references: Mapping[str, LocusCall], post_signal: Mapping[str, float], stutter_ratio: float | None = None,
    forward_ratio: float = 0.05, min_balance: float = 0.6,
) -> tuple[str, LocusCall] | None:
    """The genotype of the one reference without a call at a locus, when the post sample fixes it.

    When exactly one contributor's reference (recipient pre-transplant or a donor) has
    no alleles at a locus (failed amplification, every peak an artefact), every post
    allele that no available reference carries must be that contributor's: the post
    sample is a mixture of the contributors' DNA only. A diploid genotype has at most
    two alleles, so two such alleles *are* its genotype, and the locus can be used as
    if the reference had been called. With one (or none) the person's other allele may
    be shared with an available reference, and its copy numbers are unknown: nothing is
    inferred (a wrong genotype biases every share at the locus; a lost locus only
    widens the CI). Post peaks that stutter explains are no candidates: one repeat
    below a peak P with A <= max(2 s, 0.15) A(P) (s the locus' back-stutter ratio: twice
    the expected share, since stutter ratios scatter, and never below 15 %, the upper end
    of back stutter in current kits, since a measured s can read low when a reference's
    stutter peak was screened out), or one repeat
    above P with A <= ``forward_ratio`` A(P) (forward stutter, 0.5-2 % in practice;
    Butler 2012, ch. 6.2). Dropping a small true allele there can only leave one
    candidate (nothing inferred), never a wrong pair; more than two candidates (an
    artefact among them) infer nothing either. The two candidates carry one copy each of
    the same genome, so their signals must balance like a heterozygote's: smaller /
    larger >= ``min_balance`` (the reference rule's Hb, 0.6; Gill et al., Forensic Sci
    Int 2006;160:90-101); a pair out of balance has an artefact or a dropped-out allele
    in it, and nothing is inferred.

    Parameters
    ----------
    references : mapping of str to LocusCall
        Each contributor's call at this locus (an empty call = no call).
    post_signal : mapping of str to float
        The post sample's screened signal per allele at this locus.
    stutter_ratio : float, optional
        The locus' back-stutter ratio (:func:`stutter_ratios`).
    forward_ratio : float
        Largest forward-stutter share taken as stutter.
    min_balance : float
        Smallest signal ratio of the two candidates.

    Returns
    -------
    (who, LocusCall) or None
        The contributor and its inferred two-allele call (flag :data:`INFERRED`), or None
        when the genotype is not certain.
    """
    missing = [w for w, c in references.items() if not c.alleles]
    if len(missing) != 1:
        return None
    signal = {a: s for a, s in post_signal.items() if s > 0}
    candidates = unexplained_alleles(references, post_signal, stutter_ratio, forward_ratio)
    if len(candidates) != 2:
        return None
    low, high = sorted(signal[a] for a in candidates)
    if low < min_balance * high:
        return None
    return missing[0], LocusCall(frozenset(candidates), flags=(INFERRED,))
