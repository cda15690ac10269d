"""Build the demo inbox of `make run` from the project's seeded simulators.

Six patients, one MST cycle each (simulators/cohort.py): flow tubes (T-cell ICS panel,
10,000 events each) before MST and at days 14 and 30, with CD3+ rising after MST (the
built-in effect `make run`'s cohort table shows); chimerism at days 30 and 60 by STR
(P01, P04), qPCR and ddPCR of the same samples (P02, P05: microchimerism) and ddPCR (P03,
P06); an unstimulated control tube for P01's day-30 tube; the sample sheet and the patient
registry.

Usage: python examples/build_demo.py examples/demo_inbox
The output is deterministic (fixed seeds), so the committed files can be rebuilt.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from simulators.cohort import write_cohort_inbox


def build(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    write_cohort_inbox(out, n_patients=6, seed=1700, n_events=10_000)


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/demo_inbox"))
