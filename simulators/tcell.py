"""Seeded simulator of intracellular-cytokine T-cell tubes, written as real FCS 3.1 files.

Each call draws a whole tube event by event: debris, monocytes, dead lymphocytes, doublets,
saturated (margin) events and live singlet lymphocytes split into CD4+CD8-, CD4-CD8+,
CD4+CD8+ and CD4-CD8- T cells, B and NK cells; inside CD4+CD8- the Th1 (IFN-γ+IL-4-),
Th2 (IFN-γ-IL-4+), Th0 (IFN-γ+IL-4+), Th17 (IL-17A+) and Treg (CD25+CD127lo, FOXP3+) subsets.
True fluorochrome signal is drifted per tube (0.8-1.25x), spread through a real spillover
matrix that is stored in ``$SPILLOVER``, then detector noise (shot noise + electronic baseline)
is added. The returned :class:`TubeTruth` is computed from the labels given to each event,
so it is exactly what an ideal gating would report, with the bases of DESIGN.md.

Only numpy and flowio are used: this module sits in ``assays`` and must stay light.
"""

from __future__ import annotations

import datetime as dt
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["TubeTruth", "simulate_tube", "random_truth", "LABEL_VARIANTS", "DETECTORS", "CD8_SECOND_DETECTOR",
           "CATEGORIES", "NEGATIVE_SHAPES"]

# Marker -> ($PnN detector, spelling variants seen in real $PnS values).
DETECTORS: dict[str, str] = {
    "viability": "APC-Cy7-A",
    "CD3": "BUV395-A",
    "CD4": "BV605-A",
    "CD8": "BV510-A",
    "IFN-γ": "FITC-A",
    "IL-4": "PE-A",
    "IL-17A": "APC-A",
    "CD25": "PE-Cy7-A",
    "CD127": "BV421-A",
    "FOXP3": "BV711-A",
}

# Detector of the optional second CD8 channel (``simulate_tube(cd8_second=...)``).
CD8_SECOND_DETECTOR = "APC-R700-A"

LABEL_VARIANTS: dict[str, list[str]] = {
    "viability": ["Live/Dead", "Zombie NIR", "viability", "L/D NIR"],
    "CD3": ["CD3", "CD3 BUV395", "cd-3", "hCD3"],
    "CD4": ["CD4", "CD4 BV605", "cd 4", "hCD4"],
    "CD8": ["CD8", "CD8 BV510", "cd-8", "CD8a"],
    "IFN-γ": ["IFN-γ", "IFNg", "IFN gamma", "hIFN-g"],
    "IL-4": ["IL-4", "IL4", "IL 4", "hIL-4"],
    "IL-17A": ["IL-17A", "IL17a", "IL-17a", "IL 17A"],
    "CD25": ["CD25", "CD25 PE-Cy7", "cd-25", "CD25"],
    "CD127": ["CD127", "CD127 BV421", "cd-127", "IL-7Ra"],
    "FOXP3": ["FOXP3", "FoxP3", "Foxp3 BV711", "FOXP3"],
}

# Fraction of a fluorochrome's signal (row, its primary detector) seen in another detector
# (column). Values are in the range of a typical 4-laser panel; rows index DETECTORS order.
_SPILL_PAIRS: dict[tuple[str, str], float] = {
    ("FITC-A", "PE-A"): 0.20,
    ("PE-A", "FITC-A"): 0.02,
    ("PE-A", "PE-Cy7-A"): 0.03,
    ("PE-Cy7-A", "PE-A"): 0.02,
    ("PE-Cy7-A", "APC-Cy7-A"): 0.04,
    ("APC-A", "APC-Cy7-A"): 0.08,
    ("APC-Cy7-A", "APC-A"): 0.03,
    ("APC-Cy7-A", "PE-Cy7-A"): 0.05,
    ("BV421-A", "BV510-A"): 0.12,
    ("BV510-A", "BV605-A"): 0.06,
    ("BV510-A", "BV421-A"): 0.01,
    ("BV605-A", "BV711-A"): 0.10,
    ("BV605-A", "PE-A"): 0.02,
    ("BV711-A", "BV605-A"): 0.03,
    ("BUV395-A", "BV421-A"): 0.02,
}

_PNR = 262144.0
_SATURATION = _PNR - 1.0

# Event categories (``TubeTruth.category`` holds one per event, in file order).
_DEBRIS, _MONO, _DEAD, _DOUBLET, _LYMPH, _GRAN = 0, 1, 2, 3, 4, 5
CATEGORIES = ("debris", "monocyte", "dead", "doublet", "lymphocyte", "granulocyte")
# Lymphocyte kinds.
_T4, _T8, _TDP, _TDN, _B, _NK = 0, 1, 2, 3, 4, 5
# CD4+CD8- T-cell subsets (the class of the cell, expressed or not in a control tube).
_CONV, _TH1, _TH2, _TH0, _TH17, _TREG = 0, 1, 2, 3, 4, 5


@dataclass
class TubeTruth:
    """True percentages of a simulated tube, with the bases the pipeline reports.

    CD3/CD4/CD8 values are % of live singlet lymphocytes; CD4 is CD4+CD8- T cells and CD8 is
    CD4-CD8+ T cells; Th subsets are % of CD4+CD8- T cells. A subset whose marker was left
    out of the tube is ``None`` (the pipeline reports NULL). As an input to
    :func:`simulate_tube` only the percentages and ``drift`` are used, as the target.
    """

    cd3_pct_lymph: float
    cd4_pct_lymph: float
    cd8_pct_lymph: float
    cd4_cd8_ratio: float
    th1_pct_cd4: float | None
    th2_pct_cd4: float | None
    th0_pct_cd4: float | None
    th17_pct_cd4: float | None
    treg_pct_cd4: float | None
    n_events: int = 0
    n_lymph: int = 0
    n_cd3: int = 0
    n_cd4: int = 0
    n_cd8: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    drift: dict[str, float] = field(default_factory=dict)
    # Per event, in file order: an index into CATEGORIES (live singlet lymphocytes are
    # "lymphocyte"); the truth of a scatter gate event by event. Not part of as_dict().
    category: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "category"}


def random_truth(rng: np.random.Generator) -> TubeTruth:
    """Draw plausible, varied population percentages (post-transplant PBMC range).

    CD3 40-85 % of lymphocytes, CD4:CD8 about 0.4-4, 3-12 % of CD3 double negative or
    double positive; Th1 5-25 %, Th2 1-5 %, Th0 0.5-1.5 %, Th17 0.5-3 %, Treg 3-10 % of CD4.
    """
    cd3 = rng.uniform(40, 85)
    other = rng.uniform(0.03, 0.12) * cd3
    ratio = float(np.exp(rng.uniform(np.log(0.4), np.log(4.0))))
    cd8 = (cd3 - other) / (1 + ratio)
    cd4 = cd3 - other - cd8
    return TubeTruth(
        cd3_pct_lymph=cd3,
        cd4_pct_lymph=cd4,
        cd8_pct_lymph=cd8,
        cd4_cd8_ratio=cd4 / cd8,
        th1_pct_cd4=rng.uniform(5, 25),
        th2_pct_cd4=rng.uniform(1, 5),
        th0_pct_cd4=rng.uniform(0.5, 1.5),
        th17_pct_cd4=rng.uniform(0.5, 3),
        treg_pct_cd4=rng.uniform(3, 10),
    )


def _spillover(markers: list[str]) -> np.ndarray:
    det = [DETECTORS[m] for m in markers]
    s = np.eye(len(det))
    for i, a in enumerate(det):
        for j, b in enumerate(det):
            s[i, j] = _SPILL_PAIRS.get((a, b), s[i, j])
    return s


def _lognormal(rng, median, sigma, n):
    return median * np.exp(sigma * rng.standard_normal(n))


def _draw_drift(rng: np.random.Generator, markers: list[str]) -> dict[str, float]:
    # One tube-wide factor (laser power, PMT voltage) with a small per-detector jitter,
    # kept inside the 0.8-1.25x band the lab sees between days.
    tube = float(np.exp(rng.uniform(np.log(0.85), np.log(1.18))))
    drift = {m: float(np.clip(tube * np.exp(rng.normal(0, 0.04)), 0.8, 1.25)) for m in markers}
    drift["scatter"] = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    return drift


# Shapes of the cytokine channels' negative population (``simulate_tube(negative_shape=...)``),
# each a transform of the same standard normal draw z of the usual lognormal (median 120,
# log-SD 0.5), so every shape keeps the random stream (and the rest of the tube) unchanged.
NEGATIVE_SHAPES: dict[str, object] = {
    "lognormal": lambda z: 0.5 * z,
    # Heavier tails on both sides (log-SD grows with |z|: 2.9 log-SD at z = 2 instead of 2).
    "heavy": lambda z: 0.5 * z * (1.0 + 0.12 * z * z),
    # Right-skewed: the upper half 1.6x wider than the lower (a split normal on the log scale).
    "skewed": lambda z: np.where(z > 0, 0.8 * z, 0.5 * z),
    # Left-skewed: the lower half 1.6x wider (a mirror of the lower half overstates the upper).
    "left": lambda z: np.where(z < 0, 0.8 * z, 0.5 * z),
}


def _cells(rng, n, kind, subset, dead, control, markers, brightness=1.0, negative_shape="lognormal",
           negative_level=1.0):
    """True (pre-spillover) fluorescence of ``n`` single cells, one column per marker;
    cytokine producers at ``brightness`` times their usual level, cytokine negatives
    shaped by :data:`NEGATIVE_SHAPES` [``negative_shape``] at ``negative_level`` times their
    usual median."""
    out = np.empty((n, len(markers)))
    t = (kind == _T4) | (kind == _T8) | (kind == _TDP) | (kind == _TDN)
    cd4 = (kind == _T4) | (kind == _TDP)
    cd8 = (kind == _T8) | (kind == _TDP) | ((kind == _NK) & (rng.random(n) < 0.4))
    cd8_level = np.where(kind == _NK, 2500.0, 15000.0)
    ifng = (subset == _TH1) | (subset == _TH0)
    # CD8 T cells make IFN-γ too (Tc1): it must not leak into the CD4 Th1 result.
    ifng |= (kind == _T8) & (rng.random(n) < 0.08)
    il4 = (subset == _TH2) | (subset == _TH0)
    il17 = subset == _TH17
    treg = subset == _TREG
    if control:
        ifng = il4 = il17 = np.zeros(n, bool)
    shape = NEGATIVE_SHAPES[negative_shape]
    for j, m in enumerate(markers):
        z = rng.standard_normal(n)
        neg = 120.0 * np.exp(0.5 * z)
        if m in ("IFN-γ", "IL-4", "IL-17A"):
            if negative_shape != "lognormal":
                neg = 120.0 * np.exp(shape(z))
            neg = neg * negative_level
        if m == "viability":
            col = np.where(dead, _lognormal(rng, 25000.0, 0.35, n), _lognormal(rng, 250.0, 0.5, n))
        elif m == "CD3":
            col = np.where(t, _lognormal(rng, 9000.0, 0.35, n), neg)
        elif m == "CD4":
            col = np.where(cd4, _lognormal(rng, 6000.0, 0.3, n), neg)
        elif m == "CD8":
            col = np.where(cd8, _lognormal(rng, 1.0, 0.3, n) * cd8_level, neg)
        elif m == "IFN-γ":
            col = np.where(ifng, _lognormal(rng, 6000.0 * brightness, 0.45, n), neg)
        elif m == "IL-4":
            col = np.where(il4, _lognormal(rng, 3500.0 * brightness, 0.4, n), neg)
        elif m == "IL-17A":
            col = np.where(il17, _lognormal(rng, 4000.0 * brightness, 0.4, n), neg)
        elif m == "CD25":
            # Activated conventional T cells are CD25 dim: Treg sit clearly above them.
            dim = _lognormal(rng, 350.0, 0.5, n)
            col = np.where(treg, _lognormal(rng, 7000.0, 0.3, n), np.where(t, dim, neg))
        elif m == "CD127":
            col = np.where(t & ~treg, _lognormal(rng, 3500.0, 0.35, n), neg)
        elif m == "FOXP3":
            col = np.where(treg, _lognormal(rng, 5000.0, 0.3, n), neg)
        else:  # pragma: no cover - markers come from DETECTORS
            raise KeyError(m)
        out[:, j] = col
    return out


def _draw_kinds(rng, n, p_kind, p_subset):
    kind = rng.choice(6, size=n, p=p_kind)
    subset = np.full(n, _CONV)
    is4 = kind == _T4
    subset[is4] = rng.choice(6, size=int(is4.sum()), p=p_subset)
    return kind, subset


def simulate_tube(
    path: str | Path,
    seed: int,
    n_events: int = 50_000,
    sample_id: str | None = None,
    truth: TubeTruth | None = None,
    label_variant: int | None = None,
    control: bool = False,
    foxp3: bool = False,
    omit: tuple[str, ...] = (),
    acquired_at: dt.datetime | None = None,
    cd8_second: float | None = None,
    cd8_second_first: bool = False,
    producer_brightness: float = 1.0,
    granulocytes: float = 0.0,
    negative_shape: str = "lognormal",
    negative_level: float = 1.0,
) -> TubeTruth:
    """Write one simulated T-cell tube to ``path`` (FCS 3.1) and return its true percentages.

    Parameters
    ----------
    path : output file.
    seed : seeds everything (percentages when ``truth`` is None, events, labels, drift).
    n_events : events written (all categories together).
    sample_id : keyword ``SAMPLE ID``; default ``SIM-<seed>``.
    truth : target percentages (and drift) to draw from, e.g. the stimulated tube's truth
        when simulating its unstimulated control, so both share one drift; default
        :func:`random_truth`.
    label_variant : index into each marker's spellings in :data:`LABEL_VARIANTS`; None
        picks a spelling per marker at random.
    control : an unstimulated control tube: no cell expresses IFN-γ, IL-4 or IL-17A.
    foxp3 : add a FOXP3 channel (Treg are FOXP3+).
    omit : markers left out of the tube (e.g. ``("CD4",)``); their subsets are None.
    cd8_second : a second CD8 channel (:data:`CD8_SECOND_DETECTOR`, $PnS ``CD8b``; the first
        is then labelled ``CD8a``) whose CD8+ cells sit at this true signal (the first
        channel's at 15,000; e.g. 400 for a poorly separated second stain). The CD8 truth is
        the same on both channels: the better separated one is known by construction.
    cd8_second_first : write that second CD8 channel before the first in the file.
    producer_brightness : cytokine producers' signal relative to the usual (IFN-γ median
        6000, IL-4 3500, IL-17A 4000 against negatives at 120): 0.1 gives dim producers that
        touch the negatives, 0.03 producers inside them.
    granulocytes : share of events that are granulocytes (lysed whole blood: high side
        scatter, no T-cell marker); 0 (PBMC) leaves every other draw as before.
    negative_shape : shape of the cytokine channels' negative population, a key of
        :data:`NEGATIVE_SHAPES` ("lognormal", "heavy", "skewed", "left"): methods that find
        producers without a control are tested on shapes they did not assume. Every shape
        leaves every other draw as before.
    negative_level : the cytokine channels' negative population at this multiple of its
        usual median (120), e.g. on a control tube only: a control whose negatives sit
        brighter (1.3) or dimmer (0.75) than the stimulated tube's, as after a change of
        detector voltage or with the background that stimulation itself adds. 1 leaves
        every draw as before.

    Returns the truth computed from the event labels.
    """
    rng = np.random.default_rng(seed)
    markers = [m for m in DETECTORS if m != "FOXP3" or foxp3]
    markers = [m for m in markers if m not in omit]
    target = truth if truth is not None else random_truth(rng)
    drift = dict(target.drift) if truth is not None and truth.drift else _draw_drift(rng, markers)

    # Category mix of acquired events.
    p_cat = np.array([0.06, 0.18, 0.06, 0.05, 0.65])
    if granulocytes > 0:
        p_cat = np.append(p_cat / p_cat.sum() * (1 - granulocytes), granulocytes)
    cat = rng.choice(p_cat.size, size=n_events, p=p_cat / p_cat.sum())

    cd3 = target.cd3_pct_lymph / 100
    cd4 = target.cd4_pct_lymph / 100
    cd8 = target.cd8_pct_lymph / 100
    rest = max(cd3 - cd4 - cd8, 0.0)
    p_kind = np.array([cd4, cd8, rest * 0.25, rest * 0.75, (1 - cd3) * 0.6, (1 - cd3) * 0.4])
    p_kind = p_kind / p_kind.sum()
    th = [target.th1_pct_cd4, target.th2_pct_cd4, target.th0_pct_cd4, target.th17_pct_cd4,
          target.treg_pct_cd4]
    th = np.array([(v or 0.0) / 100 for v in th])
    p_subset = np.concatenate([[1 - th.sum()], th])

    n = n_events
    kind, subset = _draw_kinds(rng, n, p_kind, p_subset)
    dead = cat == _DEAD
    gran = cat == _GRAN
    kind[gran], subset[gran] = _B, _CONV  # no T-cell marker, no cytokine
    fl = _cells(rng, n, kind, subset, dead, control, markers, producer_brightness, negative_shape, negative_level)

    # Scatter of single events by category.
    fsc = np.empty(n)
    ssc = np.empty(n)
    for c, (f_mu, f_sd, s_med, s_sig) in {
        _LYMPH: (60000, 5500, 14000, 0.2),
        _MONO: (105000, 14000, 55000, 0.3),
        _DEAD: (42000, 7000, 22000, 0.3),
        _DEBRIS: (14000, 6000, 6000, 0.7),
        _DOUBLET: (60000, 5500, 14000, 0.2),
        _GRAN: (95000, 12000, 110000, 0.25),
    }.items():
        sel = cat == c
        k = int(sel.sum())
        fsc[sel] = np.abs(rng.normal(f_mu, f_sd, k))
        ssc[sel] = _lognormal(rng, s_med, s_sig, k)
    # Monocytes are CD4 dim, debris carries a little of everything: neither are T cells.
    if "CD4" in markers:
        j = markers.index("CD4")
        mono = cat == _MONO
        fl[mono, j] = _lognormal(rng, 1200.0, 0.4, int(mono.sum()))
    fl[cat == _DEBRIS] *= 0.1
    height = fsc * rng.normal(0.85, 0.02, n)

    # Doublets: a second cell (lymphocyte or monocyte) stuck to the first; area adds up,
    # height barely grows, so FSC-H/FSC-A drops.
    dbl = np.flatnonzero(cat == _DOUBLET)
    if dbl.size:
        k2, s2 = _draw_kinds(rng, dbl.size, p_kind, p_subset)
        fl2 = _cells(rng, dbl.size, k2, s2, np.zeros(dbl.size, bool), control, markers, producer_brightness,
                     negative_shape, negative_level)
        mono2 = rng.random(dbl.size) < 0.2
        f2 = np.where(mono2, rng.normal(105000, 14000, dbl.size), rng.normal(60000, 5500, dbl.size))
        s2s = np.where(mono2, _lognormal(rng, 55000, 0.3, dbl.size), _lognormal(rng, 14000, 0.2, dbl.size))
        fl[dbl] += fl2
        h1 = height[dbl]
        fsc[dbl] += np.abs(f2)
        ssc[dbl] += s2s
        height[dbl] = np.maximum(h1, np.abs(f2) * 0.85) * rng.normal(1.12, 0.04, dbl.size)

    fsc *= drift["scatter"]
    height *= drift["scatter"]
    ssc *= drift["scatter"]
    fl *= np.array([drift[m] for m in markers])
    det = [DETECTORS[m] for m in markers]
    labels = {}
    spill = _spillover(markers)
    if cd8_second is not None and "CD8" in markers:
        # The same cells stained by a second CD8 antibody: CD8+ at cd8_second, negatives on
        # their own background; no spillover to or from it.
        j = markers.index("CD8")
        second = fl[:, j] * (cd8_second / 15000.0) + _lognormal(rng, 120.0, 0.5, n)
        at = j if cd8_second_first else j + 1
        fl = np.insert(fl, at, second, axis=1)
        det.insert(at, CD8_SECOND_DETECTOR)
        spill = np.insert(np.insert(spill, at, 0.0, axis=0), at, 0.0, axis=1)
        spill[at, at] = 1.0
        labels = {DETECTORS["CD8"]: "CD8a", CD8_SECOND_DETECTOR: "CD8b"}

    # Spillover, then detector noise (shot noise ~ sqrt(signal), electronic baseline).
    raw = fl @ spill
    raw += rng.standard_normal(raw.shape) * np.sqrt(2.0 * np.maximum(raw, 0.0))
    raw += rng.normal(0.0, 40.0, raw.shape)
    fsc_noise = rng.normal(0.0, 300.0, (n, 3))
    fsc += fsc_noise[:, 0]
    height += fsc_noise[:, 1]
    ssc += fsc_noise[:, 2]

    # A few large events saturate the scatter detectors (margin events), never lymphocytes.
    big = np.flatnonzero((cat == _MONO) | (cat == _DOUBLET))
    sat = rng.choice(big, size=min(big.size, max(1, n // 500)), replace=False) if big.size else big
    fsc[sat] = _SATURATION
    height[sat] = np.minimum(height[sat] * 1.5, _SATURATION)

    duration = rng.uniform(60, 180)  # seconds
    timestep = 0.01
    time = np.sort(rng.uniform(0, duration, n)) / timestep

    pnn = ["FSC-A", "FSC-H", "SSC-A", "Time"] + det
    pns = ["", "", "", ""]
    for m in markers:
        variants = LABEL_VARIANTS[m]
        i = int(rng.integers(len(variants))) if label_variant is None else label_variant
        pns.append(variants[i % len(variants)])
    if labels:
        pns.insert(4 + det.index(CD8_SECOND_DETECTOR), "")
        pns = [labels.get(d, p) for d, p in zip(pnn, pns)]
    data = np.column_stack([fsc, height, ssc, time, raw])
    data = np.clip(data, -_PNR, _SATURATION)

    sid = sample_id if sample_id is not None else f"SIM-{seed}"
    when = acquired_at or dt.datetime(2024, 1, 1, 9, 0) + dt.timedelta(
        days=int(rng.integers(0, 700)), minutes=int(rng.integers(0, 480)))
    end = when + dt.timedelta(seconds=duration)
    spill_text = ",".join([str(len(det))] + det + [repr(float(v)) for v in spill.ravel()])
    meta = {
        "$SPILLOVER": spill_text,
        "$DATE": when.strftime("%d-%b-%Y").upper(),
        "$BTIM": when.strftime("%H:%M:%S"),
        "$ETIM": end.strftime("%H:%M:%S"),
        "$CYT": "graftwatch simulated LSRFortessa",
        "$TIMESTEP": str(timestep),
        "$SRC": "simulated PBMC, " + ("unstimulated control" if control else "PMA/ionomycin"),
        "SAMPLE ID": sid,
        "TUBE NAME": "unstim" if control else "stim",
    }
    for i in range(len(pnn)):
        meta[f"$P{i + 1}R"] = str(int(_PNR))
    _write_fcs(path, data, pnn, pns, meta)

    # Truth from labels: the denominator is the live singlet lymphocytes.
    lymph = cat == _LYMPH
    k = kind[lymph]
    s = subset[lymph]
    n_lymph = int(lymph.sum())
    n_cd3 = int(np.isin(k, [_T4, _T8, _TDP, _TDN]).sum())
    n_cd4 = int((k == _T4).sum())
    n_cd8 = int((k == _T8).sum())
    s4 = s[k == _T4]
    counts = {name: int((s4 == code).sum()) for name, code in
              [("th1", _TH1), ("th2", _TH2), ("th0", _TH0), ("th17", _TH17), ("treg", _TREG)]}
    if control:
        counts.update(th1=0, th2=0, th0=0, th17=0)

    def pct_cd4(name, needs):
        if any(m in omit for m in needs):
            return None
        return 100.0 * counts[name] / n_cd4 if n_cd4 else float("nan")

    # Treg are CD25+CD127lo, or FOXP3+ when the tube has FOXP3: either pair suffices.
    treg_needs = () if "FOXP3" in markers else ("CD25", "CD127")
    counts.update(events=n, lymph=n_lymph, cd3=n_cd3, cd4=n_cd4, cd8=n_cd8,
                  dp=int((k == _TDP).sum()), dn=int((k == _TDN).sum()),
                  dead=int(dead.sum()), doublets=int(dbl.size), debris=int((cat == _DEBRIS).sum()),
                  monocytes=int((cat == _MONO).sum()), granulocytes=int((cat == _GRAN).sum()),
                  margin=int(sat.size))
    return TubeTruth(
        cd3_pct_lymph=100.0 * n_cd3 / n_lymph,
        cd4_pct_lymph=100.0 * n_cd4 / n_lymph,
        cd8_pct_lymph=100.0 * n_cd8 / n_lymph,
        cd4_cd8_ratio=n_cd4 / n_cd8 if n_cd8 else float("inf"),
        th1_pct_cd4=pct_cd4("th1", ("IFN-γ", "IL-4")),
        th2_pct_cd4=pct_cd4("th2", ("IFN-γ", "IL-4")),
        th0_pct_cd4=pct_cd4("th0", ("IFN-γ", "IL-4")),
        th17_pct_cd4=pct_cd4("th17", ("IL-17A",)),
        treg_pct_cd4=pct_cd4("treg", treg_needs),
        n_events=n,
        n_lymph=n_lymph,
        n_cd3=n_cd3,
        n_cd4=n_cd4,
        n_cd8=n_cd8,
        counts=counts,
        drift=drift,
        category=cat.astype(np.int8),
    )


def _write_fcs(path, data: np.ndarray, pnn, pns, meta: dict[str, str]) -> None:
    """FCS 3.1 via flowio's writer; float32 little-endian, written atomically."""
    import flowio

    path = Path(path)
    values = array("f")
    values.frombytes(np.ascontiguousarray(data, dtype="<f4").tobytes())
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        flowio.create_fcs(fh, values, list(pnn), opt_channel_names=list(pns), metadata_dict=meta)
    tmp.replace(path)
