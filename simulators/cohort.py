"""A seeded MST cohort inbox with a built-in effect: flow tubes, chimerism exports, sheets.

Each patient has one MST cycle, a pre-transplant sample (day -7), a donor reference, and
post samples at days 14, 30 and 60 (flow at -7, 14 and 30; chimerism at 30 and 60). The
built-in effect (the study's finding): CD3+ % of lymphocytes rises after MST, by
``cd3_rise / 2`` at day 14 and ``cd3_rise`` at day 30 (each patient's rise drawn around it,
SD 15 %), CD4:CD8 ratio and the Th subsets kept, so CD4+CD8- rises with CD3.
Chimerism by patient in turn: STR (mixed chimerism), qPCR and ddPCR of the same samples
(microchimerism), ddPCR alone; every post sample carries donor DNA.

Used by examples/build_demo.py (the demo inbox of `make run`) and the cohort tests; the
returned :class:`CohortTruth` holds every tube's true percentages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assays.records import PatientCycle, SampleSheetRow
from simulators.ddpcr_sim import write_ddpcr_case
from simulators.qpcr_sim import write_qpcr_case
from simulators.sheets import write_registry, write_sample_sheet
from simulators.str_sim import write_str_case
from simulators.tcell import TubeTruth, random_truth, simulate_tube

FLOW_DAYS = (14, 30)  # post days with a flow tube (plus the pre sample)
# Per patient in turn: method(s), seed, donor % at days 30 and 60. The first two are the
# files of the former two-patient demo (tests/test_faults.py mutates them).
CHIMERISM_PLAN = (
    ("str", 101, (35.0, 12.0)),
    ("qpcr+ddpcr", 202, (0.5, 0.08)),
    ("ddpcr", 303, (0.3, 0.12)),
    ("str", 404, (20.0, 8.0)),
    ("qpcr+ddpcr", 505, (0.2, 0.05)),
    ("ddpcr", 606, (0.6, 0.2)),
)


@dataclass
class CohortTruth:
    """What :func:`write_cohort_inbox` wrote: tube truths by sample, and each patient's rise."""

    tubes: dict[str, TubeTruth] = field(default_factory=dict)  # sample_id -> truth
    day: dict[str, int] = field(default_factory=dict)  # sample_id -> days since MST
    patient: dict[str, str] = field(default_factory=dict)  # sample_id -> patient_id
    cd3_rise: dict[str, float] = field(default_factory=dict)  # patient_id -> rise at day 30


def raised_cd3(base: TubeTruth, rise: float) -> TubeTruth:
    """``base`` with CD3+ % of lymphocytes ``rise`` points higher (at most 92 %), the share of
    CD3 that is double negative/positive, the CD4:CD8 ratio and the Th subsets kept."""
    cd3 = min(base.cd3_pct_lymph + rise, 92.0)
    other = (base.cd3_pct_lymph - base.cd4_pct_lymph - base.cd8_pct_lymph) / base.cd3_pct_lymph * cd3
    cd8 = (cd3 - other) / (1 + base.cd4_cd8_ratio)
    return dataclasses.replace(base, cd3_pct_lymph=cd3, cd4_pct_lymph=cd3 - other - cd8, cd8_pct_lymph=cd8,
                               drift={})


def write_cohort_inbox(out: Path, n_patients: int = 6, seed: int = 1700, n_events: int = 10_000,
                       cd3_rise: float = 15.0, control_for: str | None = "P01",
                       events_for: dict[str, int] | None = None) -> CohortTruth:
    """Write the cohort into ``out`` (``flow/``, ``chimerism/``, ``sample_sheet.csv``,
    ``patient_registry.csv``); deterministic for a given ``seed``.

    ``control_for``: this patient's day-30 tube gets an unstimulated control tube.
    ``events_for``: sample_id -> events of its tube instead of ``n_events`` (e.g. too few
    events, so QC flags the sample for review).
    """
    rng = np.random.default_rng(seed)
    (out / "flow").mkdir(parents=True, exist_ok=True)
    (out / "chimerism").mkdir(exist_ok=True)
    truth = CohortTruth()
    sheet: list[SampleSheetRow] = []
    registry: list[PatientCycle] = []
    for i in range(n_patients):
        pid = f"P{i + 1:02d}"
        pseed = seed + 100 * (i + 1)
        method, cseed, donor_pcts = CHIMERISM_PLAN[i % len(CHIMERISM_PLAN)]
        cseed += 1000 * (i // len(CHIMERISM_PLAN))
        chim = out / "chimerism"
        if method == "str":
            case = write_str_case(chim, seed=cseed, donor_pcts=donor_pcts, patient_id=pid,
                                  file_name=f"{pid}_genemapper_peaks.txt")
        else:
            if method == "qpcr+ddpcr":
                case = write_qpcr_case(chim, seed=cseed, donor_pcts=donor_pcts, patient_id=pid,
                                       file_name=f"{pid}_quantstudio.txt")
                cseed += 1
            case = write_ddpcr_case(chim, seed=cseed, donor_pcts=donor_pcts, patient_id=pid,
                                    file_name=f"{pid}_qx_manager.csv")
        sheet += case.sheet
        registry += case.registry
        mst = case.registry[0].mst_date
        base = random_truth(rng)
        rise = float(cd3_rise * rng.normal(1.0, 0.15))
        truth.cd3_rise[pid] = rise
        pre = case.case.recipient_sample
        tubes = [(pre, -7, base)] + [(f"{pid}-D{d:03d}", d, raised_cd3(base, rise * min(d, 30) / 30)) for d in FLOW_DAYS]
        for k, (sid, day, target) in enumerate(tubes):
            if not any(r.sample_id == sid for r in sheet):
                sheet.append(SampleSheetRow(sid, pid, mst + dt.timedelta(days=day), "PB", "whole", "post", None))
            acquired = dt.datetime.combine(mst, dt.time(9, 0)) + dt.timedelta(days=day, minutes=15 * i)
            tube = simulate_tube(out / "flow" / f"{sid}.fcs", seed=pseed + 10 + k,
                                 n_events=(events_for or {}).get(sid, n_events), sample_id=sid, truth=target,
                                 acquired_at=acquired)
            truth.tubes[sid], truth.day[sid], truth.patient[sid] = tube, day, pid
            if pid == control_for and day == 30:
                ctrl = f"{sid}-US"
                simulate_tube(out / "flow" / f"{ctrl}.fcs", seed=pseed + 50, n_events=n_events, sample_id=ctrl,
                              truth=tube, control=True, acquired_at=acquired + dt.timedelta(minutes=5))
                row = next(r for r in sheet if r.sample_id == sid)
                sheet.append(dataclasses.replace(row, sample_id=ctrl, control_of=sid))
    write_sample_sheet(out / "sample_sheet.csv", sheet, control_of=True)
    write_registry(out / "patient_registry.csv", registry)
    return truth
