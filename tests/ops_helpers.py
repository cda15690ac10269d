"""Helpers shared by the operations tests (watcher, faults, compaction, Prefect server).

Not a test module: imported by ``test_watch``, ``test_faults``, ``test_compaction`` and
``test_prefect_server``. Everything here is cheap except :func:`shared_api_url`, which
starts one Prefect API server per pytest process and reuses it (server start-up is
the largest cost of these tests).
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def write_template(path: Path) -> Path:
    """A small Gating-ML 2.0 template that works on the simulated T-cell tubes.

    Until the adaptive panel is wired into the flow, runs of simulated tubes need a
    template; two gates (scatter rectangle, then a CD3 threshold on the raw BUV395
    channel) give real populations without costing gating time.
    """
    import flowkit as fk

    strategy = fk.GatingStrategy()
    lymph = fk.gates.RectangleGate(
        "Lymphocytes",
        [fk.Dimension("FSC-A", range_min=20000, range_max=120000),
         fk.Dimension("SSC-A", range_min=0, range_max=60000)],
    )
    strategy.add_gate(lymph, ("root",))
    cd3 = fk.gates.RectangleGate("CD3_pos", [fk.Dimension("BUV395-A", range_min=1000)])
    strategy.add_gate(cd3, ("root", "Lymphocytes"))
    with open(path, "wb") as fh:
        fk.export_gatingml(strategy, fh)
    return path


def simulate(folder: Path, n: int, n_events: int = 3000, prefix: str = "T", seed0: int = 100) -> list[Path]:
    """``n`` simulated FCS tubes written into ``folder`` (atomically), sample ids ``<prefix>NN``."""
    from assays.simulators.tcell import simulate_tube

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{prefix}{i:02d}.fcs"
        simulate_tube(p, seed0 + i, n_events=n_events, sample_id=f"{prefix}{i:02d}")
        out.append(p)
    return out


_SERVER = None


def shared_api_url() -> str:
    """URL of one Prefect API server (temporary SQLite) shared by this pytest process.

    Subprocesses pointed at it (``PREFECT_API_URL``) skip the 5-10 s start of their own
    temporary server, which keeps kill points predictable and the tests short.
    """
    global _SERVER
    if _SERVER is None:
        from prefect.server.api.server import SubprocessASGIServer

        _SERVER = SubprocessASGIServer()
        _SERVER.start(timeout=60)
        atexit.register(_SERVER.stop)
    return _SERVER.api_url


def cli_env(api_url: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for a ``python -m flows.cli`` subprocess (no telemetry, quiet logs)."""
    env = dict(os.environ)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    env["PYTHONPATH"] = str(REPO)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


def start_cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``python -m flows.cli ARGS`` in its own session (so kill reaches its children)."""
    fh = open(log, "ab")
    return subprocess.Popen([PYTHON, "-m", "flows.cli", *args], cwd=REPO, env=env, stdout=fh,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process group of ``proc`` (power-failure style for SIGKILL)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed; returns its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def query(store: Path, sql: str) -> list[tuple]:
    from storage.store import Store
    from storage.views import connect

    return connect(Store(store)).execute(sql).fetchall()
