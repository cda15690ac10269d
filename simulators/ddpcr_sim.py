"""Seeded droplet-digital PCR chimerism plate written as a Bio-Rad QX Manager CSV.

Model, per well (duplex: donor marker FAM + diploid reference HEX): genome equivalents
``G`` with 5 % pipetting scatter; reference copies ~ Poisson(2 G), marker copies ~
Poisson(f x G x copies per donor genome); 15,000-20,000 accepted droplets; each copy
falls into a uniformly random droplet, a droplet is positive when it holds >= 1 copy
(the Poisson partition model of dMIQE). A rare false-positive droplet (rate
``false_positive_rate`` per well) stands for the assay's blank signal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulators.str_sim import WrittenCase, case_sheet

DROPLET_VOLUME_UL = 0.00085
MARKER_TARGET = "InDel-12"
REFERENCE_TARGET = "RPP30"

_COLUMNS = [
    "Well", "Sample description 1", "Sample description 2", "Sample description 3",
    "Sample description 4", "Target", "Conc(copies/\u00b5L)", "Status", "Experiment", "SampleType",
    "TargetType", "Supermix", "DyeName(s)", "Copies/20\u00b5LWell", "PoissonConfMax", "PoissonConfMin",
    "Accepted Droplets", "Positives", "Negatives",
]


@dataclass
class DdpcrCase(WrittenCase):
    """What :func:`write_ddpcr_case` wrote, and the truth behind it."""

    marker: str
    reference: str
    marker_copies_per_donor_genome: int


def droplet_positives(rng: np.random.Generator, copies: int, droplets: int) -> int:
    """Number of droplets holding at least one of ``copies`` randomly partitioned molecules."""
    if copies <= 0:
        return 0
    # occupied droplets counted by bincount: the same draws as np.unique(...).size, 10x faster
    return int(np.count_nonzero(np.bincount(rng.integers(0, droplets, size=copies), minlength=droplets)))


def _row(well, sample, target, kind, dye, positives, accepted) -> list[str]:
    negatives = accepted - positives
    if positives == 0:
        conc, status, cmax, cmin = "No Call", "CHECK", "", ""
    else:
        lam = -math.log(negatives / accepted)
        conc_v = lam / DROPLET_VOLUME_UL
        half = 1.96 * math.sqrt(positives / (accepted * negatives)) / DROPLET_VOLUME_UL
        conc, status, cmax, cmin = f"{conc_v:.6g}", "OK", f"{conc_v + half:.6g}", f"{max(conc_v - half, 0):.6g}"
    copies_20 = "" if conc == "No Call" else f"{float(conc) * 20:.6g}"
    return [well, sample, "", "", "", target, conc, status, "DQ", "Unknown", kind,
            "ddPCR Supermix for Probes (No dUTP)", dye, copies_20, cmax, cmin,
            str(accepted), str(positives), str(negatives)]


def write_ddpcr_case(
    directory: Path,
    seed: int,
    donor_pcts: Sequence[float] = (1.0, 0.1, 0.05),
    patient_id: str = "HP03",
    post_wells: int = 8,
    control_wells: int = 4,
    genomes_per_well: float = 20_000.0,
    marker_copies_per_donor_genome: int = 1,
    false_positive_rate: float = 0.05,
    file_name: str | None = None,
) -> DdpcrCase:
    """Write one QX Manager plate: recipient pre (blanks), donor, post samples and NTCs.

    Post samples get ``post_wells`` replicate wells (merged in the analysis, as labs do
    for microchimerism); 20,000 genome equivalents per well (~130 ng) keep the reference
    at λ ~ 2.3, inside the accurate range of a 20,000-droplet well.
    """
    rng = np.random.default_rng(seed)
    case = case_sheet(patient_id, list(donor_pcts))
    (donor_id, donor_sample), = case.donor_samples.items()
    layout: list[tuple[str, float, int]] = [
        (case.recipient_sample, 0.0, control_wells),
        (donor_sample, 1.0, 2),
    ]
    layout += [(p.sample_id, p.donor_pct[donor_id] / 100.0, post_wells) for p in case.posts]
    layout += [("NTC", -1.0, 2)]
    rows = []
    index = 0
    for sample, fraction, n in layout:
        for _ in range(n):
            well = f"{'ABCDEFGH'[index % 8]}{index // 8 + 1:02d}"
            index += 1
            accepted = int(rng.integers(15_000, 20_001))
            g = 0.0 if fraction < 0 else genomes_per_well * rng.lognormal(0.0, 0.05)
            f = max(fraction, 0.0)
            ref_copies = int(rng.poisson(2.0 * g))
            marker_copies = int(rng.poisson(f * g * marker_copies_per_donor_genome))
            marker_copies += int(rng.poisson(false_positive_rate))
            rows.append(_row(well, sample, MARKER_TARGET, "Unknown", "FAM",
                             droplet_positives(rng, marker_copies, accepted), accepted))
            rows.append(_row(well, sample, REFERENCE_TARGET, "Reference", "HEX",
                             droplet_positives(rng, ref_copies, accepted), accepted))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (file_name or f"{patient_id}_ddpcr_s{seed}.csv")
    text = "\r\n".join(",".join(r) for r in [_COLUMNS] + rows) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # QX Manager writes a UTF-8 BOM
    return DdpcrCase(path, case, MARKER_TARGET, REFERENCE_TARGET, marker_copies_per_donor_genome)
