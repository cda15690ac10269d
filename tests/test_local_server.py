"""Prefect servers and the commands (issue 15): a one-shot `graftwatch run` starts none;
with PREFECT_API_URL its batch is a flow run on record there; `graftwatch watch` starts one
local server for its lifetime and takes it down on a kill -9 (its UI address, and the
server gone after Ctrl-C, are asserted on test_watch's watcher, which already runs one);
a server that cannot start is exit 2 with one line and no file moved.
Data: seeded simulator tubes. No deadline is placed on a server's start: waits end when
the awaited line appears or the process ends (a loaded machine makes them slow, not red).
"""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from ops_helpers import (HANG_LIMIT, alive, cli_env, free_port, kill_group, prefect_servers_of, query,
                         seeded_prefect_home, shared_api_url, simulate, start_cli, wait_for, write_template)

def _env(tmp_path: Path, api_url: str | None = None, **extra: str) -> dict[str, str]:
    env = cli_env(api_url, PREFECT_HOME=str(seeded_prefect_home(tmp_path / "prefect")), **extra)
    if api_url is None:
        env.pop("PREFECT_API_URL", None)
    return env


def _log(tmp_path: Path, name: str) -> str:
    return (tmp_path / name).read_text(errors="replace")


def test_one_shot_run_starts_no_server(tmp_path):
    inbox = tmp_path / "inbox"
    simulate(inbox, 2, n_events=20_000, prefix="LS")
    template = write_template(tmp_path / "template.xml")
    proc = start_cli(["run", "--inbox", str(inbox), "--store", str(tmp_path / "store"), "--template", str(template)],
                     _env(tmp_path), tmp_path / "run.log")
    servers: set[int] = set()
    while proc.poll() is None:  # watch the whole run for a server child
        servers.update(prefect_servers_of(proc.pid))
    assert proc.returncode == 0, _log(tmp_path, "run.log")[-3000:]
    assert not servers, "a one-shot run without PREFECT_API_URL started a Prefect server"
    assert query(tmp_path / "store", "SELECT sample_id FROM samples ORDER BY 1") == [("LS00",), ("LS01",)]
    assert query(tmp_path / "store", "SELECT count(*) FROM ingest_log WHERE status = 'stored'") == [(2,)]


def test_run_with_prefect_api_url_is_a_flow_run_on_record(tmp_path):
    import httpx

    inbox = tmp_path / "inbox"
    simulate(inbox, 1, n_events=5_000, prefix="RC")
    url = shared_api_url()
    before = _flow_run_ids(url, inbox)
    proc = subprocess.run([*_cli(), "run", "--inbox", str(inbox), "--store", str(tmp_path / "store")],
                          env=_env(tmp_path, url), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = _flow_run_ids(url, inbox) - before
    assert len(new) == 1, "the run did not record exactly one flow run on the configured server"
    # Read over HTTP: a Prefect client in this process, where PREFECT_API_URL is not set,
    # would start Prefect's own temporary server with its 20 s deadline (a loaded CI failed on it).
    (run_id,) = new
    run = httpx.get(f"{url}/flow_runs/{run_id}", timeout=60).json()
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert query(tmp_path / "store", "SELECT sample_id FROM samples") == [("RC00",)]


def _cli() -> list[str]:
    from ops_helpers import PYTHON

    return [PYTHON, "-m", "flows.cli"]


def _flow_run_ids(url: str, inbox: Path) -> set:
    """Flow runs on the server whose inbox parameter is ``inbox`` (other tests share the server)."""
    import httpx

    resp = httpx.post(f"{url}/flow_runs/filter", json={"limit": 200}, timeout=60)
    resp.raise_for_status()
    return {r["id"] for r in resp.json() if (r.get("parameters") or {}).get("inbox") == str(inbox)}


def _start_watch(tmp_path: Path, port: int, log: str = "watch.log") -> subprocess.Popen:
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    config = tmp_path / "graftwatch.toml"
    config.write_text(f"[prefect]\nport = {port}\nstart_timeout_seconds = {HANG_LIMIT}\n\n[inbox]\nstable_seconds = 0.5\n")
    return start_cli(["watch", "--inbox", str(inbox), "--store", str(tmp_path / "store"), "--config", str(config)],
                     _env(tmp_path), tmp_path / log)


def _watching(tmp_path: Path, proc: subprocess.Popen, log: str = "watch.log") -> bool:
    wait_for(lambda: "watching" in _log(tmp_path, log) or proc.poll() is not None, HANG_LIMIT, interval=0.2)
    return "watching" in _log(tmp_path, log)


def test_watch_server_dies_with_a_killed_watcher(tmp_path):
    proc = _start_watch(tmp_path, free_port())
    assert _watching(tmp_path, proc), _log(tmp_path, "watch.log")[-3000:]
    servers = prefect_servers_of(proc.pid)
    assert servers
    kill_group(proc, signal.SIGKILL)  # the server is in its own session: this does not reach it
    proc.wait(HANG_LIMIT)
    assert wait_for(lambda: not any(alive(p) for p in servers), HANG_LIMIT), "orphan Prefect server after kill -9"


def _one_line_exit_2(proc: subprocess.CompletedProcess | subprocess.Popen, text: str) -> None:
    assert proc.returncode == 2, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert text.strip().startswith("graftwatch: ") and len(text.strip().splitlines()) == 1, text[-3000:]


def test_port_in_use_is_exit_2_and_no_file_moves(tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)  # something that is not a Prefect server holds the port
    try:
        simulate(tmp_path / "inbox", 1, n_events=2_000, prefix="PU")
        proc = _start_watch(tmp_path, blocker.getsockname()[1])
        proc.wait(HANG_LIMIT)
    finally:
        blocker.close()
    text = _log(tmp_path, "watch.log")
    _one_line_exit_2(proc, text)
    assert "in use by another program" in text
    assert [p.name for p in (tmp_path / "inbox").iterdir()] == ["PU00.fcs"]


def test_server_that_cannot_start_is_exit_2(tmp_path):
    """A database the server cannot open (here: a PostgreSQL URL where nothing listens)."""
    simulate(tmp_path / "inbox", 1, n_events=2_000, prefix="DB")
    port = free_port()
    config = tmp_path / "graftwatch.toml"
    config.write_text(f"[prefect]\nport = {port}\n")
    env = _env(tmp_path, PREFECT_SERVER_DATABASE_CONNECTION_URL=f"postgresql+asyncpg://gw:gw@127.0.0.1:{free_port()}/x")
    proc = subprocess.run([*_cli(), "watch", "--inbox", str(tmp_path / "inbox"), "--store", str(tmp_path / "store"),
                           "--config", str(config)], env=env, capture_output=True, text=True)
    text = proc.stderr
    _one_line_exit_2(proc, text)
    assert "Prefect server" in text
    assert [p.name for p in (tmp_path / "inbox").iterdir()] == ["DB00.fcs"]


def test_unreachable_configured_server_is_exit_2_and_files_stay(tmp_path):
    simulate(tmp_path / "inbox", 1, n_events=2_000, prefix="UR")
    env = _env(tmp_path, f"http://127.0.0.1:{free_port()}/api", PREFECT_CLIENT_MAX_RETRIES="0")
    proc = subprocess.run([*_cli(), "run", "--inbox", str(tmp_path / "inbox"), "--store", str(tmp_path / "store")],
                          env=env, capture_output=True, text=True)
    _one_line_exit_2(proc, proc.stderr)
    assert "cannot be reached" in proc.stderr
    assert [p.name for p in (tmp_path / "inbox").iterdir()] == ["UR00.fcs"]
