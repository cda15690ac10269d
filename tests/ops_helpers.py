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
    from simulators.tcell import simulate_tube

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{prefix}{i:02d}.fcs"
        simulate_tube(p, seed0 + i, n_events=n_events, sample_id=f"{prefix}{i:02d}")
        out.append(p)
    return out


def migrated_prefect_db() -> Path:
    """A Prefect database with every migration applied, built once per installed Prefect.

    A Prefect server on a fresh PREFECT_HOME first migrates its SQLite database (about
    16 s of CPU, more than the rest of its start); the suite starts several servers, each
    on its own home. They all start from a copy of this one, kept beside the environment
    (``.venv``) and built under a lock, so the two pytest-xdist workers build it once.
    """
    import fcntl
    import shutil
    import sqlite3
    from importlib.metadata import version

    seed = Path(sys.prefix) / f".graftwatch-test-prefect-db-{version('prefect')}"
    db = seed / "prefect.db"
    seed.mkdir(exist_ok=True)
    with open(seed / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not db.exists():
            build = seed / "build"
            shutil.rmtree(build, ignore_errors=True)
            build.mkdir()
            env = {k: v for k, v in os.environ.items() if "DATABASE_CONNECTION_URL" not in k}
            subprocess.run([PYTHON, "-c", "import asyncio; from prefect.server.database import "
                            "provide_database_interface as db; asyncio.run(db().create_db())"],
                           env={**env, "PREFECT_HOME": str(build)}, check=True, capture_output=True)
            # One consistent file (the WAL folded in), published by rename.
            src, dst = sqlite3.connect(build / "prefect.db"), sqlite3.connect(seed / "prefect.db.tmp")
            src.backup(dst)
            src.close()
            dst.close()
            os.replace(seed / "prefect.db.tmp", db)
            shutil.rmtree(build, ignore_errors=True)
    return db


def seeded_prefect_home(home: Path) -> Path:
    """``home`` as a PREFECT_HOME whose database is already migrated (see :func:`migrated_prefect_db`)."""
    import shutil

    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "prefect.db").exists():
        shutil.copyfile(migrated_prefect_db(), home / "prefect.db")
    return home


_SERVER = None


def shared_api_url() -> str:
    """URL of one Prefect API server shared by this pytest process.

    graftwatch's own :class:`flows.runners.LocalServer` on a free port, waited for without
    a deadline (a loaded CI machine makes it slow, never a failure). Subprocesses pointed
    at it (``PREFECT_API_URL``) record their flow runs there.
    """
    global _SERVER
    if _SERVER is None:
        from flows.runners import LocalServer

        seeded_prefect_home(Path(os.environ["PREFECT_HOME"]))
        server = LocalServer(port=None, full=False)
        server.start()
        atexit.register(server.stop)
        server.wait(timeout=None)
        _SERVER = server
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


# Seconds after which a wait counts as a hang, never as slowness: no test asserts speed (a
# loaded CI machine is slow, not wrong), and speed is measured in benchmarks/.
HANG_LIMIT = 900.0


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


# --- FCS files rebuilt from parts, for broken and mutated variants ---------------------

def fcs_parts(path: Path) -> tuple[str, list[tuple[str, str]], bytes]:
    """(version, TEXT keywords in order, DATA bytes) of a well-formed FCS file."""
    raw = Path(path).read_bytes()
    version = raw[:6].decode()
    t0, t1, d0, d1 = (int(raw[a:a + 8]) for a in (10, 18, 26, 34))
    text = raw[t0:t1 + 1]
    delim = text[:1]
    tokens = text[1:-1].split(delim)
    pairs = [(tokens[i].decode(), tokens[i + 1].decode()) for i in range(0, len(tokens) - 1, 2)]
    if d0 == 0:  # offsets past 99,999,999 live in TEXT only
        kw = dict(pairs)
        d0, d1 = int(kw["$BEGINDATA"]), int(kw["$ENDDATA"])
    return version, pairs, raw[d0:d1 + 1]


def build_fcs(version: str, pairs: list[tuple[str, str]], data: bytes, header: dict[str, str] | None = None) -> bytes:
    """Bytes of an FCS file: HEADER with offsets computed, TEXT ('/' delimited), DATA.

    ``$BEGINDATA``/``$ENDDATA`` are set to the true offsets unless ``pairs`` sets them
    explicitly to something that is not digits; ``header`` overrides HEADER fields
    (``text_start``, ``text_end``, ``data_start``, ``data_end``) verbatim (8 chars).
    """
    pairs = [(k, v) for k, v in pairs]
    keys = [k.upper() for k, _ in pairs]
    for k in ("$BEGINDATA", "$ENDDATA"):
        if k not in keys:
            pairs.append((k, "0"))
    # Fixed-width offsets so their own length does not move the DATA segment.
    width = 20

    def text_bytes(d0: int, d1: int) -> bytes:
        body = []
        for k, v in pairs:
            if k.upper() == "$BEGINDATA" and v.isdigit():
                v = str(d0).rjust(width)
            elif k.upper() == "$ENDDATA" and v.isdigit():
                v = str(d1).rjust(width)
            body.append(f"{k}/{v}")
        return ("/" + "/".join(body) + "/").encode("utf-8")

    text_start = 58
    probe = text_bytes(0, 0)
    text_end = text_start + len(probe) - 1
    d0 = text_end + 1
    d1 = d0 + len(data) - 1
    text = text_bytes(d0, d1)
    assert len(text) == len(probe)
    fields = {"text_start": str(text_start), "text_end": str(text_end),
              "data_start": str(d0) if d1 <= 99_999_999 else "0", "data_end": str(d1) if d1 <= 99_999_999 else "0"}
    fields.update(header or {})
    head = version.encode() + b"    " + b"".join(
        fields[k].rjust(8)[:8].encode() for k in ("text_start", "text_end", "data_start", "data_end")
    ) + b"       0       0"
    return head + text + data


def replace_kw(pairs: list[tuple[str, str]], **changes: str | None) -> list[tuple[str, str]]:
    """``pairs`` with keywords changed (``P_TOT="9"`` changes ``$TOT``); None removes one."""
    names = {k.replace("P_", "$", 1) if k.startswith("P_") else k: v for k, v in changes.items()}
    out = []
    for k, v in pairs:
        if k.upper() in names:
            if names[k.upper()] is not None:
                out.append((k, names[k.upper()]))
        else:
            out.append((k, v))
    return out


def broken_fcs_kinds(good: Path) -> dict[str, bytes]:
    """Five kinds of broken FCS the lab meets: truncated copy, bad offsets, $TOT lie,
    unknown $DATATYPE, bogus $BYTEORD."""
    version, pairs, data = fcs_parts(good)
    raw = good.read_bytes()
    tot = int(dict(pairs)["$TOT"])
    return {
        "truncated.fcs": raw[: len(raw) * 2 // 3],
        "bad_offsets.fcs": build_fcs(version, pairs, data, header={"text_start": "99999990", "text_end": "99999999"}),
        "tot_lie.fcs": build_fcs(version, replace_kw(pairs, P_TOT=str(tot * 3)), data),
        "datatype_z.fcs": build_fcs(version, replace_kw(pairs, P_DATATYPE="Z"), data),
        "byteorder.fcs": build_fcs(version, replace_kw(pairs, P_BYTEORD="3,1,2,4"), data),
    }


PREFECT_SERVER_APP = "prefect.server.api.server:create_app"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a test's own Prefect server)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def prefect_servers_of(parent: int) -> list[int]:
    """Prefect server processes whose parent is ``parent`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and PREFECT_SERVER_APP in cmdline:
            found.append(int(entry.name))
    return found
