"""Seeded STR chimerism case: GeneMapper peak report of a recipient, donors and post mixtures.

Model (per sample, per locus): each genome carries two allele copies; an allele's
peak height is ``copies x fraction x signal per copy x locus efficiency`` with
heterozygote-balance noise; every parent peak casts an n-1 stutter peak of 5-10 %
(locus-specific) that adds to whatever allele sits there; peaks under the analytical
threshold are not called. Area = height x ~10 (GeneMapper areas are in RFU x scans).

Also hosts :func:`case_sheet`, the sample sheet and registry shared by the qPCR and
ddPCR simulators, so one patient can be measured by all three assays.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assays.records import PatientCycle, SampleSheetRow


@dataclass(frozen=True)
class Locus:
    name: str
    dye: str
    base_size: float  # fragment size of allele "0"
    repeat: int  # repeat length in bp
    alleles: tuple[str, ...]


def _ints(lo: int, hi: int, extra: Sequence[str] = ()) -> tuple[str, ...]:
    return tuple(str(i) for i in range(lo, hi + 1)) + tuple(extra)


#: An autosomal panel like the common 16-24 locus kits (sizes are illustrative).
PANEL: tuple[Locus, ...] = (
    Locus("AMEL", "B", 0.0, 1, ("X", "Y")),
    Locus("D3S1358", "B", 60.0, 4, _ints(12, 19)),
    Locus("TH01", "B", 140.0, 4, _ints(5, 10, ("9.3",))),
    Locus("D21S11", "B", 80.0, 4, _ints(27, 34, ("30.2", "31.2", "32.2"))),
    Locus("D18S51", "B", 230.0, 4, _ints(11, 22)),
    Locus("D10S1248", "G", 50.0, 4, _ints(11, 17)),
    Locus("D1S1656", "G", 120.0, 4, _ints(11, 18, ("15.3", "16.3", "17.3"))),
    Locus("D2S1338", "G", 200.0, 4, _ints(16, 26)),
    Locus("D16S539", "G", 240.0, 4, _ints(8, 14)),
    Locus("D22S1045", "Y", 60.0, 3, _ints(11, 17)),
    Locus("vWA", "Y", 90.0, 4, _ints(13, 20)),
    Locus("D8S1179", "Y", 150.0, 4, _ints(8, 16)),
    Locus("FGA", "Y", 200.0, 4, _ints(18, 27, ("22.2", "23.2"))),
    Locus("D2S441", "R", 60.0, 4, _ints(9, 15, ("11.3",))),
    Locus("D12S391", "R", 110.0, 4, _ints(15, 24, ("17.3", "18.3"))),
    Locus("D19S433", "R", 160.0, 4, _ints(11, 17, ("13.2", "14.2", "15.2"))),
    Locus("SE33", "R", 200.0, 4, _ints(14, 32, ("28.2", "29.2", "30.2"))),
    Locus("CSF1PO", "P", 280.0, 4, _ints(7, 14)),
    Locus("D5S818", "P", 120.0, 4, _ints(7, 14)),
    Locus("D13S317", "P", 170.0, 4, _ints(8, 14)),
    Locus("D7S820", "P", 210.0, 4, _ints(7, 14)),
)

Genotype = dict[str, tuple[str, str]]  # locus -> the two allele copies


@dataclass
class PostTruth:
    """A post-transplant sample and the donor % of each donor in it."""

    sample_id: str
    collection_date: dt.date
    donor_pct: dict[str, float]


@dataclass
class CaseSheet:
    """Sample sheet rows and registry rows of one simulated patient."""

    patient_id: str
    recipient_sample: str
    donor_samples: dict[str, str]  # donor_id -> sample_id
    posts: list[PostTruth]
    sheet: list[SampleSheetRow]
    registry: list[PatientCycle]


@dataclass
class WrittenCase:
    """An export file a simulator wrote, with the patient's sheet, registry and truth."""

    path: Path
    case: CaseSheet

    @property
    def sheet(self) -> list[SampleSheetRow]:
        return self.case.sheet

    @property
    def registry(self) -> list[PatientCycle]:
        return self.case.registry

    @property
    def posts(self) -> list[PostTruth]:
        return self.case.posts


@dataclass
class StrCase(WrittenCase):
    """What :func:`write_str_case` wrote, and the truth behind it."""

    genotypes: dict[str, Genotype] = field(default_factory=dict)  # sample_id -> genotype (pure samples)


def _as_tuples(donor_pcts: Sequence[float | Sequence[float]]) -> list[tuple[float, ...]]:
    return [tuple(p) if isinstance(p, (tuple, list)) else (float(p),) for p in donor_pcts]


def case_sheet(
    patient_id: str,
    donor_pcts: Sequence[float | Sequence[float]],
    mst_date: dt.date = dt.date(2025, 1, 10),
    cycle_gap_days: int = 28,
    first_post_day: int = 30,
    post_spacing_days: int = 30,
    cell_fraction: str = "whole",
) -> CaseSheet:
    """Sheet and registry for one patient: pre sample, one donor per MST cycle, post samples.

    ``donor_pcts``: one entry per post sample, a number (one donor) or a tuple (one value
    per donor). With k donors the registry has k cycles, ``cycle_gap_days`` apart, and the
    first post sample is collected after the last cycle, so every donor may contribute.
    """
    levels = _as_tuples(donor_pcts)
    n_donors = max(len(lv) for lv in levels) if levels else 1
    donor_ids = [f"{patient_id}-DN{k + 1}" for k in range(n_donors)]
    registry = [
        PatientCycle(patient_id, k + 1, mst_date + dt.timedelta(days=cycle_gap_days * k), donor_ids[k])
        for k in range(n_donors)
    ]
    last_cycle = registry[-1].mst_date
    pre_id = f"{patient_id}-PRE"
    sheet = [SampleSheetRow(pre_id, patient_id, mst_date - dt.timedelta(days=7), "PB", "whole", "recipient_pre", None)]
    donor_samples = {}
    for d in donor_ids:
        donor_samples[d] = f"{d}-REF"
        sheet.append(SampleSheetRow(donor_samples[d], patient_id, mst_date - dt.timedelta(days=7), "PB", "whole", "donor", d))
    posts = []
    for i, level in enumerate(levels):
        day = (last_cycle - mst_date).days + first_post_day + post_spacing_days * i
        sid = f"{patient_id}-D{day:03d}"
        date = mst_date + dt.timedelta(days=day)
        pcts = {donor_ids[k]: float(level[k]) if k < len(level) else 0.0 for k in range(n_donors)}
        posts.append(PostTruth(sid, date, pcts))
        sheet.append(SampleSheetRow(sid, patient_id, date, "PB", cell_fraction, "post", None))
    return CaseSheet(patient_id, pre_id, donor_samples, posts, sheet, registry)


def random_genotype(rng: np.random.Generator, panel: Sequence[Locus] = PANEL, sex: str = "F") -> Genotype:
    """Two alleles per locus, drawn with bell-shaped frequencies (mid-range alleles commoner)."""
    genotype: Genotype = {}
    for locus in panel:
        if locus.name == "AMEL":
            genotype[locus.name] = ("X", "X") if sex == "F" else ("X", "Y")
            continue
        k = len(locus.alleles)
        weights = np.exp(-0.5 * ((np.arange(k) - (k - 1) / 2) / (k / 3.5)) ** 2)
        picks = rng.choice(k, size=2, p=weights / weights.sum())
        genotype[locus.name] = (locus.alleles[picks[0]], locus.alleles[picks[1]])
    return genotype


def _stutter_allele(allele: str) -> str | None:
    try:
        value = float(allele)
    except ValueError:
        return None
    below = value - 1
    return str(int(below)) if below.is_integer() else f"{below:.1f}"


def _size(locus: Locus, allele: str) -> float:
    if allele == "X":
        return 98.0
    if allele == "Y":
        return 104.0
    whole, _, micro = allele.partition(".")
    # a fixed fraction of a bp per locus: fragments of different loci rarely co-migrate
    # to the scan, as in real kits (pull-up is recognised by position across dyes)
    offset = (sum(map(ord, locus.name)) * 0.37) % 1.0
    return locus.base_size + offset + locus.repeat * int(whole) + (int(micro) if micro else 0)


def mixture_peaks(
    rng: np.random.Generator,
    contributors: Sequence[tuple[Genotype, float]],
    panel: Sequence[Locus] = PANEL,
    signal_per_copy: float = 3000.0,
    threshold_rfu: float = 50.0,
    degradation_per_bp: float = 0.0,
    locus_dropout: float = 0.0,
) -> list[tuple[str, str, str, float, float, float]]:
    """Called peaks ``(marker, dye, allele, size, height, area)`` of one (mixed) sample.

    ``degradation_per_bp``: degraded DNA, each peak's signal x exp(-k (size - 100 bp)),
    so longer fragments amplify less; ``locus_dropout``: probability that a locus gives
    no peak at all (failed amplification).
    """
    peaks = []
    for locus in panel:
        if locus_dropout and rng.random() < locus_dropout:
            continue
        efficiency = rng.lognormal(0.0, 0.15)
        stutter_ratio = 0.05 + 0.05 * (sum(map(ord, locus.name)) % 97) / 96  # fixed per locus, 5-10 %
        true_height: dict[str, float] = defaultdict(float)
        for genotype, fraction in contributors:
            for allele in genotype[locus.name]:
                true_height[allele] += signal_per_copy * fraction * efficiency
        observed = {a: h * rng.lognormal(0.0, 0.06) for a, h in true_height.items()}
        stutter: dict[str, float] = defaultdict(float)
        for allele, h in observed.items():
            below = _stutter_allele(allele) if locus.name != "AMEL" else None
            if below is not None:
                stutter[below] += h * stutter_ratio * rng.lognormal(0.0, 0.1)
        for allele, h in stutter.items():
            observed[allele] = observed.get(allele, 0.0) + h
        for allele in sorted(observed, key=lambda a: _size(locus, a)):
            decay = np.exp(-degradation_per_bp * (_size(locus, allele) - 100.0))
            height = observed[allele] * decay + rng.normal(0.0, 4.0)
            if height < threshold_rfu:
                continue
            area = height * rng.uniform(9.5, 10.5)
            size = _size(locus, allele) + rng.normal(0.0, 0.05)
            peaks.append((locus.name, locus.dye, allele, round(size, 2), round(height), round(area)))
    return peaks


@dataclass(frozen=True)
class Artefacts:
    """Probabilities and sizes of the artefacts :func:`add_artefacts` injects per sample.

    Pull-up: each peak above ``pullup_min_rfu`` bleeds, with ``pullup_rate``, into a
    neighbouring dye at the same scan with 2-12 % of its height; dye blobs: per dye,
    with ``blob_rate``, a broad peak (area/height 25-40 instead of ~10) at the dye's
    fixed size; spikes: with ``spike_rate``, one narrow peak in every dye at one scan.
    An artefact is labelled with the allele whose bin (+-0.5 bp) it falls into, ``OL``
    inside a locus' range, and not exported outside every locus (GeneMapper lists
    labelled peaks). ``degradation_per_bp`` and ``locus_dropout`` go to :func:`mixture_peaks`.
    """

    pullup_rate: float = 0.5
    pullup_min_rfu: float = 1000.0
    blob_rate: float = 0.5
    blob_sizes: tuple[tuple[str, float], ...] = (("B", 62.0), ("G", 88.0), ("Y", 115.0), ("R", 72.0), ("P", 95.0))
    spike_rate: float = 0.3
    degradation_per_bp: tuple[float, float] = (0.0, 0.004)  # range of k drawn per sample
    locus_dropout: float = 0.03


_DYES = ("B", "G", "Y", "R", "P")


def _label(dye: str, size: float, panel: Sequence[Locus] = PANEL) -> tuple[str, str] | None:
    """(marker, allele call) GeneMapper would give a peak of ``dye`` at ``size``."""
    for locus in panel:
        if locus.dye != dye or locus.name == "AMEL":
            continue
        sizes = {a: _size(locus, a) for a in locus.alleles}
        nearest = min(sizes, key=lambda a: abs(sizes[a] - size))
        if abs(sizes[nearest] - size) <= 0.5:
            return locus.name, nearest
        if min(sizes.values()) - 2 <= size <= max(sizes.values()) + 2:
            return locus.name, "OL"
    return None


def add_artefacts(rng: np.random.Generator, peaks: list, artefacts: Artefacts) -> list:
    """``peaks`` of one sample plus injected pull-up, dye-blob and spike peaks (see :class:`Artefacts`).

    An artefact in the bin of an allele that already has a peak is a second peak with
    the same label at its own size, as GeneMapper labels both.
    """
    extra = []
    for marker, dye, allele, size, height, area in peaks:
        if height >= artefacts.pullup_min_rfu and rng.random() < artefacts.pullup_rate:
            k = _DYES.index(dye) if dye in _DYES else 0
            other = _DYES[min(max(k + rng.choice((-1, 1)), 0), len(_DYES) - 1)]
            if other != dye:
                extra.append((other, size, height * rng.uniform(0.02, 0.12), 10.0))
    for dye, size in artefacts.blob_sizes:
        if rng.random() < artefacts.blob_rate:
            extra.append((dye, size + rng.normal(0, 0.5), rng.uniform(150, 1200), rng.uniform(25, 40)))
    if rng.random() < artefacts.spike_rate:
        size, h = rng.uniform(60, 350), rng.uniform(200, 1500)
        extra += [(dye, size, h * rng.uniform(0.85, 1.15), rng.uniform(2, 4)) for dye in _DYES]
    out = list(peaks)
    for dye, size, height, shape in extra:
        label = _label(dye, size)
        if label is None:
            continue
        marker, allele = label
        out.append((marker, dye, allele, round(size, 2), round(height), round(height * shape)))
    order = {locus.name: i for i, locus in enumerate(PANEL)}
    return sorted(out, key=lambda p: (order.get(p[0], len(order)), p[3]))  # GeneMapper lists peaks by marker


def _write_peak_report(path: Path, samples: Sequence[tuple[str, list]]) -> None:
    lines = ["Sample File Name\tMarker\tDye\tAllele\tSize\tHeight\tArea\tData Point"]
    for sample_id, peaks in samples:
        for marker, dye, allele, size, height, area in peaks:
            data_point = int(size * 12 + 1000)
            lines.append(f"{sample_id}.fsa\t{marker}\t{dye}\t{allele}\t{size:.2f}\t{height:d}\t{area:d}\t{data_point}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_str_case(
    directory: Path,
    seed: int,
    donor_pcts: Sequence[float | Sequence[float]] = (50.0, 20.0, 5.0, 0.5),
    patient_id: str = "HP01",
    file_name: str | None = None,
    signal_per_copy: float = 3000.0,
    artefacts: Artefacts | None = None,
) -> StrCase:
    """Write a GeneMapper peak report (``Sample File Name`` = ``<sample_id>.fsa``) for one patient.

    ``donor_pcts`` has one entry per post sample: a number for one donor, or a tuple
    with one % per donor (two-donor MST). The recipient is female, donors male (AMEL
    differs, as often; it is excluded from quantification anyway). Returns the path,
    the sheet/registry rows and the true donor % of each post sample. ``artefacts``
    injects pull-up, dye blobs, spikes, degraded DNA and locus dropout into every sample.
    """
    rng = np.random.default_rng(seed)
    art_rng = np.random.default_rng([seed, 1])  # artefacts leave the clean case's draws unchanged

    def peaks_of(contributors):
        if artefacts is None:
            return mixture_peaks(rng, contributors, signal_per_copy=signal_per_copy)
        k = art_rng.uniform(*artefacts.degradation_per_bp)
        clean = mixture_peaks(rng, contributors, signal_per_copy=signal_per_copy, degradation_per_bp=k,
                              locus_dropout=artefacts.locus_dropout)
        return add_artefacts(art_rng, clean, artefacts)

    case = case_sheet(patient_id, donor_pcts)
    recipient = random_genotype(rng, sex="F")
    donors = {d: random_genotype(rng, sex="M") for d in case.donor_samples}
    samples = [(case.recipient_sample, peaks_of([(recipient, 1.0)]))]
    genotypes = {case.recipient_sample: recipient}
    for donor_id, sample_id in case.donor_samples.items():
        samples.append((sample_id, peaks_of([(donors[donor_id], 1.0)])))
        genotypes[sample_id] = donors[donor_id]
    for post in case.posts:
        fractions = {d: p / 100.0 for d, p in post.donor_pct.items()}
        contributors = [(recipient, 1.0 - sum(fractions.values()))] + [(donors[d], f) for d, f in fractions.items()]
        samples.append((post.sample_id, peaks_of(contributors)))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (file_name or f"{patient_id}_str_peaks_s{seed}.txt")
    _write_peak_report(path, samples)
    return StrCase(path=path, case=case, genotypes=genotypes)
