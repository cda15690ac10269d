"""Th-subset accuracy with and without the unstimulated control on seeded simulated tubes
(issue 13 point 5). Prints, per condition, the share of values within the bound
max(0.5 points, 15 % of truth), the NULL rate, the worst error and, for 0 % producers,
the largest false-producer share.

    .venv/bin/python benchmarks/sweep_th_subsets.py [n_seeds] [n_events]

Conditions: producers 0 %, 0.5 % and 1-8 % of CD4 (Th0 1-3 %) at the simulator's usual
brightness and dimmer (x0.3, x0.2, x0.12); each seed draws its own drift (0.8-1.25x) and
marker spellings (``label_variant`` cycles through the variants).
"""

from __future__ import annotations

import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(n_seeds: int = 6, n_events: int = 20_000) -> None:
    from gating.panel import load_panel
    from th_sweep import SUBSETS, Case, run

    panel = load_panel()
    table = defaultdict(lambda: {"n": 0, "within": 0, "null": 0, "worst": 0.0, "false_max": 0.0})
    with tempfile.TemporaryDirectory() as tmp:
        for level in ("none", "half", "1-8"):
            for brightness in (1.0, 0.3, 0.2, 0.12):
                if level == "none" and brightness != 1.0:
                    continue  # no producers: brightness changes nothing
                for control in (False, True):
                    for i in range(n_seeds):
                        case = Case(seed=7000 + 31 * i, level=level, brightness=brightness, control=control,
                                    n_events=n_events, label_variant=i % 4)
                        out = run(case, Path(tmp), panel)
                        row = table[(level, brightness, control)]
                        for key in SUBSETS:
                            row["n"] += 1
                            if out.got[key] is None:
                                row["null"] += 1
                                continue
                            row["within"] += out.within(key)
                            row["worst"] = max(row["worst"], out.error(key))
                            if out.truth[key] == 0:
                                row["false_max"] = max(row["false_max"], out.got[key])
    print(f"{'producers':>9} {'bright':>6} {'control':>7} {'values':>6} {'within':>7} {'NULL':>6} "
          f"{'worst err':>9} {'0% max':>7}")
    for (level, brightness, control), r in table.items():
        print(f"{level:>9} {brightness:>6.2f} {str(control):>7} {r['n']:>6} {r['within'] / r['n']:>7.0%} "
              f"{r['null'] / r['n']:>6.0%} {r['worst']:>9.2f} {r['false_max']:>7.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
