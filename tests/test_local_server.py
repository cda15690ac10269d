"""The local Prefect server `graftwatch run` starts when no PREFECT_API_URL is set
(flows/runners.py): the run uses it, and it is gone when the command ends, even when the
command is killed with SIGKILL (parent-death signal), so no orphan server piles up on a
lab PC. Data: seeded simulator tubes."""

from __future__ import annotations

import signal
from pathlib import Path

from ops_helpers import cli_env, kill_group, query, simulate, start_cli, wait_for, write_template

SERVER_APP = "prefect.server.api.server:create_app"


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _servers_of(parent: int) -> list[int]:
    """Prefect server processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and SERVER_APP in cmdline:
            found.append(int(entry.name))
    return found


def _start_run(tmp_path: Path, n_tubes: int, prefix: str):
    """`graftwatch run` on ``n_tubes`` fresh 20k-event tubes, without PREFECT_API_URL."""
    inbox = tmp_path / "inbox"
    simulate(inbox, n_tubes, n_events=20_000, prefix=prefix)
    template = write_template(tmp_path / "template.xml")
    env = cli_env(None, PREFECT_HOME=str(tmp_path / "prefect"))
    env.pop("PREFECT_API_URL", None)
    return start_cli(["run", "--inbox", str(inbox), "--store", str(tmp_path / "store"), "--template", str(template)],
                     env, tmp_path / "run.log")


def test_run_uses_its_own_server_and_stops_it(tmp_path):
    proc = _start_run(tmp_path, 2, "LS")
    servers: list[int] = []
    assert wait_for(lambda: bool(servers.extend(_servers_of(proc.pid)) or servers) or proc.poll() is not None, 60)
    assert proc.wait(180) == 0, (tmp_path / "run.log").read_text(errors="replace")[-3000:]
    assert servers, "the run did not start a local Prefect server"
    assert wait_for(lambda: not any(_alive(p) for p in servers), 10), "the local Prefect server outlived the run"
    assert query(tmp_path / "store", "SELECT sample_id FROM samples ORDER BY 1") == [("LS00",), ("LS01",)]


def test_server_dies_with_a_killed_run(tmp_path):
    proc = _start_run(tmp_path, 1, "LK")
    servers: list[int] = []
    assert wait_for(lambda: bool(servers.extend(_servers_of(proc.pid)) or servers), 60), \
        (tmp_path / "run.log").read_text(errors="replace")[-3000:]
    kill_group(proc, signal.SIGKILL)  # the server is in its own session: this does not reach it
    proc.wait(10)
    assert wait_for(lambda: not any(_alive(p) for p in servers), 15), "orphan Prefect server after kill -9"
    # Nothing is lost: the tube is in the inbox, a claim folder or the archive, once.
    assert len(list(tmp_path.rglob("*.fcs"))) == 1
