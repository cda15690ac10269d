"""Records shared by the chimerism methods: configuration, per-marker and per-donor results.

Donor % is a percentage (0..100). Small values are kept as computed: a detected 0.03 %
is 0.03, and a value below the LOD keeps its number with ``detected = False``. Missing
pieces give a result with ``donor_pct = None``, a ``status`` and a plain ``message``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gating.chimerism.str_calling import ArtefactRules

DEFAULT_REFERENCE_GENES: tuple[str, ...] = (
    "RPP30",
    "RNaseP",
    "ALB",
    "GAPDH",
    "HBB",
    "ACTB",
    "TERT",
    "B2M",
    "CCR5",
)

# status values of ChimerismResult
OK = "ok"
BELOW_LOD = "below_lod"
NOT_DETECTED = "not_detected"
NOT_QUANTIFIABLE = "detected_not_quantifiable"
NO_PRE_SAMPLE = "no_pre_sample"
NO_DONOR_SAMPLE = "no_donor_sample"
NO_DONOR_LISTED = "no_donor_listed"
NO_INFORMATIVE_MARKER = "no_informative_marker"
REFERENCE_FAILED = "reference_failed"

# contributor values of ChimerismResult
DONOR = "donor"
RECIPIENT = "recipient"


@dataclass
class ChimerismConfig:
    """Settings of the chimerism quantification; every field has the DESIGN.md default."""

    reference_genes: tuple[str, ...] = DEFAULT_REFERENCE_GENES
    str_lod_pct: float = 1.0
    #: floor (%) the lab sets under the LOD read off the plate's dilution series; without a
    #: series it is the reported LOD. None = the plate alone decides.
    qpcr_lod_pct: float | None = None
    #: fewest replicate wells amplifying earlier than the blank limit that make a detection
    qpcr_min_positive_replicates: int = 2
    #: LOQ without a dilution series; None = same as the LOD.
    qpcr_loq_pct: float | None = None
    #: fixed ddPCR LoD (%); None = from the recipient's pre-transplant wells (LoB) and Poisson.
    ddpcr_lod_pct: float | None = None
    #: a reference allele reaches this share of the locus' highest peak (height)
    str_allele_min_fraction: float = 0.5
    #: heterozygote balance (height ratio) below which a reference call is flagged
    str_min_het_balance: float = 0.6
    #: pull-up, spike and dye-blob tolerances of the peak screen
    str_artefacts: ArtefactRules = field(default_factory=ArtefactRules)
    #: robust outlier rule: modified z-score |0.6745 (x - median) / MAD| above this is left out
    str_outlier_z: float = 3.5
    #: floor (points of donor %) of the robust spread, so loci that agree to a tenth of a
    #: point do not make a 1-point difference an outlier
    str_outlier_min_spread_pct: float = 1.0
    str_min_loci: int = 3
    #: subtract the back-stutter ratio measured on the reference samples from the post sample
    str_stutter_correction: bool = True
    #: undo the post sample's signal decay with fragment length (degraded DNA)
    str_degradation_correction: bool = True
    #: leave uncorrected stutter-position loci out of the mean while >= str_min_loci other loci remain
    str_avoid_stutter_position: bool = True
    qpcr_max_replicate_sd: float = 0.5
    qpcr_efficiency: float = 2.0
    qpcr_slope_range: tuple[float, float] = (-3.6, -3.1)
    qpcr_min_r2: float = 0.98
    #: STANDARD wells of a marker are a donor-in-recipient dilution series, quantity = donor %
    qpcr_standards_are_donor_pct: bool = True
    #: Ct above this counts as not detected (late non-specific amplification); None = off
    qpcr_ct_cutoff: float | None = None
    #: with a usable % dilution series, read donor % off it (DESIGN.md alternative to ΔΔCt)
    qpcr_dilution_readout: bool = True
    ddpcr_reference_copies_per_genome: float = 2.0
    ddpcr_marker_copies_per_donor_genome: float = 1.0
    #: take the marker copies per donor genome (1 or 2) from the donor sample when clear
    ddpcr_infer_marker_copies: bool = True
    ddpcr_ci_level: float = 0.95
    #: expected copies of the Poisson LoD floor (P(no droplet) = e^-3 = 5 %)
    ddpcr_lod_min_positives: float = 3.0
    #: fewest marker-positive droplets that make a ddPCR detection call (LoB >= this - 1)
    ddpcr_min_positive_droplets: int = 3
    #: a pre-transplant recipient reading above this donor % makes a marker non-informative
    informative_max_recipient_pct: float = 1.0


@dataclass
class ChimerismMarkerResult:
    """One locus (STR) or target (qPCR/ddPCR) of one post sample for one donor."""

    sample_id: str
    method: str
    marker: str
    informative_type: str
    donor_pct: float | None
    used: bool
    donor_id: str | None
    flag: str | None = None
    #: STR: reference genotypes as called ("12/14") and every peak left out of them, and
    #: artefacts on contributor alleles of the post sample, with the reason
    recipient_alleles: str | None = None
    donor_alleles: str | None = None
    excluded: str | None = None


@dataclass
class ChimerismResult:
    """Donor % of one post sample by one method for one donor."""

    sample_id: str
    method: str  # str / qpcr / ddpcr
    donor_id: str | None
    donor_pct: float | None
    ci_low: float | None
    ci_high: float | None
    lod_pct: float | None
    detected: bool | None
    n_markers: int
    status: str
    message: str | None = None
    sd_pct: float | None = None  # SD over loci/markers (STR: DESIGN.md asks mean, SD, n)
    loq_pct: float | None = None
    #: whose share ``donor_pct`` is: "donor" (donor_id), or "recipient" beside several donors
    contributor: str = DONOR

def empty_result(sample_id, method, donor_id, status, message, lod=None) -> ChimerismResult:
    """A result with no number: ``status`` says why, ``message`` what the lab can do."""
    return ChimerismResult(sample_id, method, donor_id, None, None, None, lod, None, 0, status, message)


def join_flags(flags: Iterable[str | None]) -> str | None:
    """``;``-joined distinct flags in first-seen order, None when there is none."""
    kept = [f for f in flags if f]
    return ";".join(dict.fromkeys(kept)) if kept else None
