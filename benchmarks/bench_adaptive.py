"""Adaptive T-cell panel vs the same hierarchy as fixed Gating-ML gates, on a 1M-event tube.

Fixed: a Gating-ML file (the adaptive gates of this tube, exported once) applied with
``gating.sample_gating.apply_strategy``. Adaptive: ``build_adaptive_gating`` (placement) plus the same
``apply_strategy``. The FCS file is read once, outside both timings. Prints the ratio
adaptive / fixed (target <= 2).

    .venv/bin/python benchmarks/bench_adaptive.py [n_events]
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _best(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(n_events: int = 1_000_000) -> None:
    import flowkit as fk

    from assays.fcs import read_fcs
    from simulators.tcell import simulate_tube
    from gating.adaptive import build_adaptive_gating
    from gating.sample_gating import apply_strategy
    from gating.panel import load_panel

    panel = load_panel()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tube.fcs"
        simulate_tube(path, seed=1, n_events=n_events)
        sample = read_fcs(path)
        buf = io.BytesIO()
        fk.export_gatingml(build_adaptive_gating(sample, panel).strategy, buf)
        xml = Path(tmp) / "fixed.xml"
        xml.write_bytes(buf.getvalue())
        fixed_strategy = fk.parse_gating_xml(str(xml))

        fixed = _best(lambda: apply_strategy(fixed_strategy, sample))
        place = _best(lambda: build_adaptive_gating(sample, panel))
        adaptive = _best(lambda: apply_strategy(build_adaptive_gating(sample, panel).strategy, sample))
    print(f"events {n_events}: fixed Gating-ML {fixed:.2f} s, adaptive placement {place:.2f} s, "
          f"adaptive total {adaptive:.2f} s, ratio {adaptive / fixed:.2f} (target <= 2)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
