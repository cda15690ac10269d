"""Orchestration share on many small files: 100 simulated 10k-event tubes in one run.

Run by hand:  .venv/bin/python benchmarks/bench_small_files.py [--files 100] [--events 10000]

Runs the inbox batch in-process (as a one-shot `graftwatch run` without a Prefect server
does) with the template of ``bench_gating.py`` and prints the wall time, the per-file work
summed over files (read, gate, statistics, ...), and the orchestration share = 1 -
(busiest worker's file work + commit writes) / wall, i.e. the time on the critical path
spent neither on files nor on writing results (the pool, claims, moves, sheet detection).
It also times the same batch on an empty inbox (the fixed cost) and prints the
orchestration share of the rest, i.e. of the time the files add."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gating import PNN, simulate, template_xml  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--pictures", action="store_true", help="also draw gating pictures (default off)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="graftwatch-small-"))
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    import flowio

    inbox = work / "inbox"
    inbox.mkdir()
    _, spill = simulate(1000, seed=1)
    tmpl = work / "template.xml"
    tmpl.write_text(template_xml(spill))
    for i in range(args.files):
        ev, _ = simulate(args.events, seed=1000 + i)
        with open(inbox / f"s{i:03d}.fcs", "wb") as fh:
            flowio.create_fcs(fh, ev.astype("float32").ravel(), channel_names=PNN, metadata_dict={"SAMPLE ID": f"S{i:03d}"})
    cfg = work / "g.toml"
    policy = "all" if args.pictures else "none"
    cfg.write_text(f'[flow]\ngating_pictures = "{policy}"\n')

    from flows.batch import default_workers, import_first_use, run_in_process

    empty_inbox = work / "empty_inbox"
    empty_inbox.mkdir()
    import_first_use(template=True)  # as `graftwatch watch` before its first batch
    floor = []
    for _ in range(3):
        # The fixed cost of a run, as a one-shot `graftwatch run` pays it in-process: set-up,
        # the inbox scan and the summary, with no file.
        t0 = time.perf_counter()
        run_in_process(str(empty_inbox), str(work / "store_empty"), str(cfg), str(tmpl))
        floor.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    summary = run_in_process(str(inbox), str(work / "store"), str(cfg), str(tmpl))
    wall = time.perf_counter() - t0
    floor_s = min(floor)
    writes = summary.stage_seconds.get("write", 0.0)
    # The busiest worker bounds the file work on the critical path; threads share the
    # GIL, so dividing the summed work by the worker count would flatter the pipeline.
    busy = max(summary.worker_seconds.values()) + writes
    print(f"{summary.stored} files x {args.events:,} events: {wall:.2f} s wall, {wall / max(1, summary.stored) * 1000:.0f} ms per file")
    print("stage seconds (summed over files): " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(summary.stage_seconds.items())))
    print(f"orchestration share: {max(0.0, 1 - busy / wall):.1%} (workers: {default_workers()}; "
          f"busy seconds per worker: {sorted(round(v, 2) for v in summary.worker_seconds.values())})")
    files_s = wall - floor_s
    print(f"the same flow on an empty inbox (the fixed cost) takes {floor_s:.2f} s (best of 3); for the files "
          f"(wall minus that): {files_s:.2f} s, of which orchestration {max(0.0, files_s - busy):.2f} s = "
          f"{max(0.0, 1 - busy / files_s):.1%}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
