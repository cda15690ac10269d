"""Build the demo inbox of `make run` from the project's seeded simulators.

Two patients, each with a pre-transplant and two post-MST timepoints:

* P01: flow tubes (T-cell ICS panel) + an unstimulated control for day 30, and a
  GeneMapper STR peak report (recipient, donor, posts at 35 % and 12 % donor);
* P02: flow tubes, a QuantStudio qPCR plate and a QX Manager ddPCR plate
  (microchimerism: posts at 0.5 % and 0.08 % donor);
* the sample sheet and the patient registry.

Usage: python examples/build_demo.py examples/demo_inbox
The output is deterministic (fixed seeds), so the committed files can be rebuilt.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import sys
from pathlib import Path

from simulators.ddpcr_sim import write_ddpcr_case
from simulators.qpcr_sim import write_qpcr_case
from simulators.sheets import write_registry, write_sample_sheet
from simulators.str_sim import write_str_case
from simulators.tcell import simulate_tube

N_EVENTS = 15_000


def build(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    (out / "flow").mkdir(parents=True)
    (out / "chimerism").mkdir()
    p1 = write_str_case(out / "chimerism", seed=101, donor_pcts=(35.0, 12.0), patient_id="P01",
                        file_name="P01_genemapper_peaks.txt")
    p2q = write_qpcr_case(out / "chimerism", seed=202, donor_pcts=(0.5, 0.08), patient_id="P02",
                          file_name="P02_quantstudio.txt")
    write_ddpcr_case(out / "chimerism", seed=203, donor_pcts=(0.5, 0.08), patient_id="P02",
                     file_name="P02_qx_manager.csv")
    sheet = list(p1.sheet) + list(p2q.sheet)
    seed = 300
    for case in (p1.case, p2q.case):
        flow_ids = [case.recipient_sample] + [p.sample_id for p in case.posts]
        for sid in flow_ids:
            seed += 1
            truth = simulate_tube(out / "flow" / f"{sid}.fcs", seed=seed, n_events=N_EVENTS, sample_id=sid,
                                  acquired_at=dt.datetime(2025, 1, 1, 9, 0) + dt.timedelta(days=seed - 300))
            if sid == case.posts[0].sample_id:
                ctrl = f"{sid}-US"
                simulate_tube(out / "flow" / f"{ctrl}.fcs", seed=seed + 1000, n_events=N_EVENTS, sample_id=ctrl,
                              truth=truth, control=True)
                row = next(r for r in sheet if r.sample_id == sid)
                sheet.append(dataclasses.replace(row, sample_id=ctrl, control_of=sid))
    write_sample_sheet(out / "sample_sheet.csv", sheet, control_of=True)
    write_registry(out / "patient_registry.csv", list(p1.registry) + list(p2q.registry))


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/demo_inbox"))
