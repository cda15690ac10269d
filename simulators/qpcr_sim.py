"""Seeded qPCR chimerism plate: QuantStudio export of a donor-marker / reference-gene duplex.

Model, per well: genome equivalents ``G`` with 5 % pipetting scatter; reference copies
~ Poisson(2 G) (diploid), donor-marker copies ~ Poisson(f x G x copies per donor genome)
(1 for a heterozygous InDel or a Y marker); Ct = Ct(1 copy) - log_E(copies) + N(0, 0.12);
no copy, or Ct > 40 -> ``Undetermined``. The plate holds the post samples, the donor
(100 % donor calibrator), the recipient's pre-transplant sample, NTCs and a donor-in-
recipient dilution series (task STANDARD, quantity = donor %) that gives the marker's
efficiency and the LOD/LOQ.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulators.str_sim import WrittenCase, case_sheet


@dataclass(frozen=True)
class Assay:
    target: str
    reporter: str
    efficiency: float  # amplification factor per cycle (2.0 = 100 %)
    ct_one_copy: float


MARKER = Assay("InDel-S04", "FAM", 1.96, 37.5)
REFERENCE = Assay("RPP30", "VIC", 1.98, 37.0)
DILUTION_PCTS = (10.0, 1.0, 0.1, 0.01)


@dataclass(frozen=True)
class Background:
    """Late non-specific amplification of the donor marker in wells without donor DNA.

    Each marker well of recipient-containing DNA (``recipient_rate``) or of a no-template
    control (``ntc_rate``) amplifies with that probability at Ct ~ N(``ct_mean``, ``ct_sd``)
    (capped below 40): the blank signal a limit of blank must absorb.
    """

    recipient_rate: float = 0.1
    ntc_rate: float = 0.05
    ct_mean: float = 38.3
    ct_sd: float = 0.8


@dataclass
class QpcrCase(WrittenCase):
    """What :func:`write_qpcr_case` wrote, and the truth behind it."""

    marker: str
    reference: str
    marker_efficiency: float


@dataclass
class _Well:
    position: str
    sample: str
    target: str
    reporter: str
    task: str
    ct: float | None
    quantity: float | None


def _ct(rng: np.random.Generator, copies: int, assay: Assay, noise_sd: float) -> float | None:
    if copies <= 0:
        return None
    ct = assay.ct_one_copy - math.log(copies) / math.log(assay.efficiency) + rng.normal(0.0, noise_sd)
    return None if ct > 40.0 else ct


def _positions(n: int) -> list[str]:
    rows = "ABCDEFGHIJKLMNOP"
    per_row = 12 if n <= 96 else 24
    return [f"{rows[i // per_row]}{i % per_row + 1}" for i in range(n)]


def _plate(
    rng: np.random.Generator,
    samples: Sequence[tuple[str, float, str, float | None]],
    replicates: int,
    genomes: float,
    ct_noise: float,
    background: Background | None = None,
    background_rng: np.random.Generator | None = None,
) -> list[_Well]:
    """``samples``: (name, donor fraction, task for the marker row, quantity)."""
    layout = [(s, r) for s in samples for r in range(replicates)]
    wells: list[_Well] = []
    for pos, ((name, fraction, task, quantity), _) in zip(_positions(len(layout)), layout):
        g = 0.0 if task == "NTC" else genomes * rng.lognormal(0.0, 0.05)
        ref_copies = int(rng.poisson(2.0 * g))
        marker_copies = int(rng.poisson(fraction * g))
        ct = _ct(rng, marker_copies, MARKER, ct_noise)
        if background is not None and background_rng is not None:
            rate = background.ntc_rate if task == "NTC" else background.recipient_rate
            if background_rng.random() < rate:  # late non-specific product (primer dimer, cross-reaction)
                late = min(background_rng.normal(background.ct_mean, background.ct_sd), 39.9)
                ct = late if ct is None else min(ct, late)
        wells.append(_Well(pos, name, MARKER.target, MARKER.reporter, task, ct, quantity))
        ref_task = "NTC" if task == "NTC" else "UNKNOWN"
        wells.append(_Well(pos, name, REFERENCE.target, REFERENCE.reporter, ref_task,
                           _ct(rng, ref_copies, REFERENCE, ct_noise), None))
    return wells


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    text = f"{value:,.{digits}f}"  # thousands separators, as the software writes them
    return text


def _write_classic(path: Path, wells: list[_Well], run_end: dt.datetime) -> None:
    header = [
        "* Block Type = 96-Well Block (0.2mL)",
        "* Chemistry = TAQMAN",
        f"* Experiment File Name = C:\\Users\\lab\\{path.stem}.eds",
        f"* Experiment Name = {path.stem}",
        f"* Experiment Run End Time = {run_end:%Y-%m-%d %I:%M:%S %p} CET",
        "* Experiment Type = Comparative C\u0442 (\u0394\u0394C\u0442)",
        "* Instrument Name = 278880099",
        "* Instrument Type = QuantStudio(TM) 7 Flex System",
        "* Passive Reference = ROX",
        "* Quantification Cycle Method = Ct",
        "",
        "[Results]",
        "\t".join(["Well", "Well Position", "Omit", "Sample Name", "Target Name", "Task", "Reporter",
                   "Quencher", "CT", "Ct Mean", "Ct SD", "Quantity", "Automatic Ct Threshold",
                   "Ct Threshold", "Comments"]),
    ]
    groups: dict[tuple[str, str], list[float]] = {}
    for w in wells:
        if w.ct is not None:
            groups.setdefault((w.sample, w.target), []).append(w.ct)
    order = {p: i + 1 for i, p in enumerate(dict.fromkeys(w.position for w in wells))}
    lines = []
    for w in wells:
        cts = groups.get((w.sample, w.target), [])
        mean = float(np.mean(cts)) if cts else None
        sd = float(np.std(cts, ddof=1)) if len(cts) > 1 else None
        lines.append("\t".join([
            str(order[w.position]), w.position, "false", w.sample, w.target, w.task, w.reporter, "NFQ-MGB",
            "Undetermined" if w.ct is None else f"{w.ct:.3f}", _fmt(mean), _fmt(sd),
            _fmt(w.quantity), "true", "0.200", "",
        ]))
    path.write_text("\n".join(header + lines) + "\n", encoding="utf-8")


def _write_design_analysis(path: Path, wells: list[_Well], run_end: dt.datetime) -> None:
    header = [
        f"# File Name: {path.stem}.eds",
        "# Instrument Type: QuantStudio\u2122 7 Pro System",
        "# Instrument Name: QS7Pro-SIM",
        f"# Run End Data/Time: {run_end:%Y-%m-%d %I:%M:%S %p} UTC",
        "# Quantification Cycle Method: CT",
        "Well,Well Position,Omit,Sample,Target,Task,Reporter,Quencher,Amp Status,Cq,Cq Mean,Cq SD,Quantity",
    ]
    order = {p: i + 1 for i, p in enumerate(dict.fromkeys(w.position for w in wells))}
    lines = []
    for w in wells:
        lines.append(",".join([
            str(order[w.position]), w.position, "FALSE", w.sample, w.target, w.task, w.reporter, "NFQ-MGB",
            "NO_AMP" if w.ct is None else "AMP", "UNDETERMINED" if w.ct is None else f"{w.ct:.6f}", "", "",
            "" if w.quantity is None else f"{w.quantity:g}",
        ]))
    path.write_text("\r\n".join(header + lines) + "\r\n", encoding="utf-8")


def write_qpcr_case(
    directory: Path,
    seed: int,
    donor_pcts: Sequence[float] = (10.0, 1.0, 0.1, 0.05, 0.0),
    patient_id: str = "HP02",
    fmt: str = "classic",
    replicates: int = 4,
    genomes_per_well: float = 50_000.0,
    ct_noise: float = 0.12,
    file_name: str | None = None,
    dilution_series: bool = True,
    background: Background | None = None,
) -> QpcrCase:
    """Write one QuantStudio plate (``fmt`` = "classic" text or "design_analysis" CSV).

    One donor; ``donor_pcts`` one value per post sample (0 = recipient only). 50,000
    genome equivalents per well (about 330 ng DNA) is the input microchimerism assays use.
    ``dilution_series=False`` leaves the standards off the plate; ``background`` adds
    late non-specific amplification in blank-like wells (:class:`Background`).
    """
    if fmt not in {"classic", "design_analysis"}:
        raise ValueError("fmt must be 'classic' or 'design_analysis'")
    rng = np.random.default_rng(seed)
    case = case_sheet(patient_id, list(donor_pcts))
    (donor_id, donor_sample), = case.donor_samples.items()
    samples: list[tuple[str, float, str, float | None]] = [
        (case.recipient_sample, 0.0, "UNKNOWN", None),
        (donor_sample, 1.0, "UNKNOWN", None),
    ]
    samples += [(p.sample_id, p.donor_pct[donor_id] / 100.0, "UNKNOWN", None) for p in case.posts]
    if dilution_series:
        samples += [(f"STD {pct:g}%", pct / 100.0, "STANDARD", pct) for pct in DILUTION_PCTS]
    samples += [("NTC", 0.0, "NTC", None)]
    wells = _plate(rng, samples, replicates, genomes_per_well, ct_noise, background,
                   np.random.default_rng([seed, 2]) if background is not None else None)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".txt" if fmt == "classic" else ".csv"
    path = directory / (file_name or f"{patient_id}_qpcr_s{seed}{suffix}")
    run_end = dt.datetime.combine(case.posts[-1].collection_date if case.posts else dt.date(2025, 6, 1),
                                  dt.time(14, 5, 0))
    (_write_classic if fmt == "classic" else _write_design_analysis)(path, wells, run_end)
    return QpcrCase(path, case, MARKER.target, REFERENCE.target, MARKER.efficiency)
