"""Fixed costs a technician and an analyst wait for, as ratios against a baseline run here.

Run by hand:  .venv/bin/python benchmarks/bench_startup.py [--repeat 5]

1. ``graftwatch run`` on an empty inbox (no PREFECT_API_URL: no Prefect server), wall and
   CPU seconds (user + system of the child), against a bare ``python -c pass`` of the same
   interpreter (the floor any command pays);
2. ``graftwatch query "SELECT count(*) FROM immune_timeline"`` on a small store, against a
   bare ``python -c "import duckdb; ..."`` running the same SQL over the same Parquet;
3. ``graftwatch --help``.

Each figure is the minimum over ``--repeat`` runs (the machine's noise only adds time).
The store is built first by one in-process batch of the demo inbox (examples/demo_inbox, not timed).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GRAFTWATCH = str(ROOT / ".venv/bin/graftwatch")


def timed(cmd: list[str], env: dict, repeat: int) -> tuple[float, float]:
    """(min wall s, min CPU s of the child) over ``repeat`` runs of ``cmd``."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
    return min(walls), min(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="graftwatch-startup-"))
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_HOME=str(work / "prefect"))
    env.pop("PREFECT_API_URL", None)

    import shutil

    from flows.batch import run_in_process

    inbox, store = work / "inbox", work / "store"
    shutil.copytree(ROOT / "examples" / "demo_inbox", inbox)
    run_in_process(str(inbox), str(store))
    empty = work / "empty"
    empty.mkdir()

    py = sys.executable
    base_w, base_c = timed([py, "-c", "pass"], env, args.repeat)
    run_w, run_c = timed([GRAFTWATCH, "run", "--inbox", str(empty), "--store", str(work / "store_empty")], env,
                         args.repeat)
    print(f"python -c pass: {base_w:.2f} s wall, {base_c:.2f} s CPU")
    print(f"graftwatch run, empty inbox: {run_w:.2f} s wall, {run_c:.2f} s CPU (target <= 1.5 s each); "
          f"{run_w / base_w:.1f}x a bare interpreter")

    sql = "SELECT count(*) FROM immune_timeline"
    q_w, q_c = timed([GRAFTWATCH, "query", sql, "--store", str(store)], env, args.repeat)
    bare = (f"import duckdb; duckdb.sql(\"CREATE VIEW immune_timeline AS SELECT * FROM "
            f"read_parquet('{store}/flow_populations/**/*.parquet', hive_partitioning=true)\"); "
            f"print(duckdb.sql('{sql}').fetchall())")
    d_w, d_c = timed([py, "-c", bare], env, args.repeat)
    print(f"graftwatch query: {q_w:.2f} s; bare python + duckdb on the same Parquet: {d_w:.2f} s; "
          f"ratio {q_w / d_w:.2f}x (target <= 2x); CPU {q_c:.2f} s vs {d_c:.2f} s: {q_c / d_c:.2f}x "
          "(the steadier figure on a shared machine)")
    h_w, _ = timed([GRAFTWATCH, "--help"], env, args.repeat)
    print(f"graftwatch --help: {h_w:.2f} s")


if __name__ == "__main__":
    main()
