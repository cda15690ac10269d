"""End-to-end speed and memory: flowkit ``Session`` vs ``graftwatch run --template``.

Run by hand (not a test):

    .venv/bin/python benchmarks/bench_pipeline.py [--files 12] [--events 1000000] [--workdir DIR]

Writes N simulated tubes (13 channels, the generator and the 9-gate logicle Gating-ML
template of ``bench_gating.py``) as FCS 3.1 files, then in this process:

1. flowkit 1.3.2: ``Session(gating_strategy=template, fcs_samples=files).analyze_samples()``
   (its defaults), counts from ``get_gate_count``;
2. ``graftwatch run`` on an empty inbox (the fixed cost: process start, imports, exit;
   without PREFECT_API_URL no Prefect server is involved) and ``graftwatch --help``, as
   subprocesses;
3. ``graftwatch run --template`` on the N files, as a subprocess, and the same batch
   in-process for the per-stage breakdown.

Checks every population count is identical between flowkit and the store, and prints
the times, the ratio (flowkit seconds / graftwatch seconds for the files, i.e. total
minus the fixed cost), peak RSS of the graftwatch subprocess, and the stages.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gating import PNN, simulate, template_xml  # noqa: E402


def write_files(workdir: Path, n_files: int, n_events: int) -> tuple[list[Path], Path]:
    import flowio

    src = workdir / "files"
    src.mkdir(parents=True, exist_ok=True)
    paths = []
    spill = None
    for i in range(n_files):
        path = src / f"tube{i:02d}.fcs"
        events, spill = simulate(n_events, seed=1)  # same spillover for the template
        if not path.exists():
            events, _ = simulate(n_events, seed=100 + i)
            with open(path, "wb") as fh:
                flowio.create_fcs(fh, events.astype("float32").ravel(), channel_names=PNN,
                                  metadata_dict={"SAMPLE ID": f"BENCH-{i:02d}"})
        paths.append(path)
    tmpl = workdir / "template.xml"
    tmpl.write_text(template_xml(spill))
    return paths, tmpl


def run_cli(args: list[str], env: dict) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MB) of that graftwatch process (GNU time), stderr tail
    (which ends with the process's CPU seconds, ``CPU_S user+system``)."""
    timer = ["/usr/bin/time", "-f", "MAXRSS_KB %M\nCPU_S %U+%S"] if Path("/usr/bin/time").exists() else []
    t0 = time.perf_counter()
    r = subprocess.run([*timer, str(ROOT / ".venv/bin/graftwatch"), *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"graftwatch {' '.join(args)} failed: {r.stderr[-2000:]}")
    kb = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("MAXRSS_KB ")]
    return wall, (kb[-1] // 1024 if kb else -1), r.stderr[-300:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "graftwatch-bench"))
    args = ap.parse_args()
    work = Path(args.workdir)
    files, tmpl = write_files(work, args.files, args.events)
    print(f"{len(files)} files x {args.events:,} events x {len(PNN)} channels, template {tmpl}")

    import flowkit as fk

    t0, c0 = time.perf_counter(), time.process_time()
    session = fk.Session(gating_strategy=str(tmpl), fcs_samples=[str(p) for p in files])
    session.analyze_samples(use_mp=False)
    t_fk, c_fk = time.perf_counter() - t0, time.process_time() - c0
    fk_counts = {}
    for sid in session.get_sample_ids():
        res = session.get_gating_results(sid)
        for gid, gpath in session.get_gate_ids():
            fk_counts[(sid, gid)] = res.get_gate_count(gid, gate_path=gpath)
    print(f"flowkit Session.analyze_samples: {t_fk:.2f} s ({c_fk:.2f} s CPU)")

    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_HOME=str(work / "prefect"))
    env.pop("PREFECT_API_URL", None)  # the one-shot path: no server
    t_help, _, _ = run_cli(["--help"], env)
    empty = work / "empty_inbox"
    empty.mkdir(exist_ok=True)
    t_empty, _, _ = run_cli(["run", "--inbox", str(empty), "--store", str(work / "store_empty")], env)
    # The fixed cost of a run that has work: one small file (the local Prefect server
    # starts). 20k events: enough to pass QC, so no gating picture is drawn for it (the
    # 12 tubes pass QC too; a picture would inflate the fixed cost).
    tiny_in = work / "tiny_inbox"
    for d in (tiny_in, work / "store_tiny"):
        shutil.rmtree(d, ignore_errors=True)
    tiny_in.mkdir()
    tiny_src = work / "small20k.fcs"
    if not tiny_src.exists():
        import flowio

        ev, _ = simulate(20_000, seed=7)
        with open(tiny_src, "wb") as fh:
            flowio.create_fcs(fh, ev.astype("float32").ravel(), channel_names=PNN)
    shutil.copy(tiny_src, tiny_in)
    t_tiny, _, _ = run_cli(["run", "--inbox", str(tiny_in), "--store", str(work / "store_tiny"),
                            "--template", str(tmpl)], env)

    inbox, store = work / "inbox", work / "store"
    for d in (inbox, store, work / "archive", work / "quarantine"):
        shutil.rmtree(d, ignore_errors=True)
    inbox.mkdir()
    for p in files:
        os.link(p, inbox / p.name) if os.stat(p).st_dev == os.stat(work).st_dev else shutil.copy(p, inbox)
    t_run, rss, tail = run_cli(["run", "--inbox", str(inbox), "--store", str(store), "--template", str(tmpl)], env)

    from storage.store import Store
    from storage.views import connect

    con = connect(Store(store))
    # flowkit names samples by file name; the store by the SAMPLE ID keyword.
    ours = {(name, p): c for name, p, c in con.execute(
        """SELECT s.source_name, f.population, f.count FROM flow_populations f
           JOIN samples s USING (sample_id)""").fetchall()}
    mismatches = [k for k, v in fk_counts.items() if ours.get(k) != v]
    # The formula: the fixed cost is the empty-inbox run, which pays everything a
    # run pays (process start, imports, the local Prefect server, one flow run, exit).
    files_time = t_run - t_empty
    print(f"graftwatch --help: {t_help:.2f} s; run on empty inbox (fixed cost): {t_empty:.2f} s; "
          f"run on one 20k-event file: {t_tiny:.2f} s")
    print(f"graftwatch run --template on {len(files)} files: {t_run:.2f} s total, {files_time:.2f} s for the files "
          f"(total minus the empty-inbox run); peak RSS {rss} MB; {tail.strip().splitlines()[-1]}")
    print(f"ratio flowkit / graftwatch, whole run (fixed cost included): {t_fk / t_run:.2f}x")
    print(f"ratio flowkit / graftwatch (files): {t_fk / files_time:.2f}x; counts identical: {not mismatches} "
          f"({len(fk_counts)} populations compared, {len(mismatches)} differ)")
    print(f"  (total minus the one-file run instead: {t_run - t_tiny:.2f} s, ratio {t_fk / (t_run - t_tiny):.2f}x)")

    # Per-stage breakdown from the same flow, in-process.
    for d in (inbox, store, work / "archive"):
        shutil.rmtree(d, ignore_errors=True)
    inbox.mkdir()
    for p in files:
        shutil.copy(p, inbox)
    os.environ.update(env)
    from flows.batch import import_first_use, run_in_process

    import_first_use(template=True)  # as `graftwatch watch` before its first batch: the stages time the files
    t0 = time.perf_counter()
    summary = run_in_process(str(inbox), str(store), None, str(tmpl))
    t_inproc = time.perf_counter() - t0
    stages = sorted(summary.stage_seconds.items(), key=lambda kv: -kv[1])
    work_sum = sum(summary.stage_seconds.values())
    print(f"in-process flow: {t_inproc:.2f} s wall; stage seconds summed over files (threads overlap):")
    for stage, sec in stages:
        print(f"  {stage:<12} {sec:7.2f} s")
    busy = max(summary.worker_seconds.values()) + summary.stage_seconds.get("write", 0.0)
    print(f"  busiest worker {max(summary.worker_seconds.values()):.2f} s of {t_inproc:.2f} s wall; "
          f"orchestration (wall - busiest worker - writes): {max(0.0, t_inproc - busy):.2f} s")


if __name__ == "__main__":
    main()
