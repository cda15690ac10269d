"""The folder watcher (flows/watch.py), end to end and in pieces.

End to end: one watcher subprocess (``flows.watch.watch``) with its own local Prefect
server (its UI address printed and answering; the server gone after Ctrl-C), fed like a
lab would: a file written slowly, a duplicate under another name,
five broken FCS files; SIGINT to its process group (a terminal's Ctrl-C) in the middle
of a batch must let the batch finish and exit 0. The pieces (stability rule,
temporary names, polling fallback, failed batches) run in-process with a stub batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from ops_helpers import (HANG_LIMIT, REPO, PYTHON, alive, broken_fcs_kinds, cli_env, free_port, prefect_servers_of,
                         query, seeded_prefect_home, simulate, wait_for, write_template)

STABLE = 1.5


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running watcher on a fresh inbox; stopped with SIGINT at the end (exit 0 asserted)."""
    root = tmp_path_factory.mktemp("watch")
    inbox, store = root / "inbox", root / "store"
    inbox.mkdir()
    template = write_template(root / "template.xml")
    config = root / "graftwatch.toml"
    port = free_port()  # the watcher's own Prefect server, not on 4200
    config.write_text(f"[inbox]\nstable_seconds = {STABLE}\npoll_seconds = 0.25\n\n[prefect]\nport = {port}\n"
                      f"start_timeout_seconds = {HANG_LIMIT}\n")
    src = simulate(root / "src", 1, n_events=20000, prefix="SLOW")[0]
    code = ("import sys; from pathlib import Path; from flows.watch import watch; "
            f"sys.exit(watch(Path({str(inbox)!r}), {str(store)!r}, {str(config)!r}, template_path={str(template)!r}))")
    log = root / "watch.log"
    # Its own PREFECT_HOME: the server's SQLite database must not be the one this pytest
    # process's shared test server opens (two servers on one file: "database is locked").
    env = cli_env(None, PREFECT_HOME=str(seeded_prefect_home(root / "prefect")))
    env.pop("PREFECT_API_URL", None)  # the default: the watcher starts its own local Prefect server
    proc = subprocess.Popen([PYTHON, "-c", code], cwd=REPO, env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    # No deadline on the server's start (a loaded machine is slow, not wrong): until the
    # watcher says it is watching, or exits.
    assert wait_for(lambda: "watching" in log.read_text(errors="replace") or proc.poll() is not None, HANG_LIMIT, 0.2), \
        log.read_text(errors="replace")
    assert proc.poll() is None, log.read_text(errors="replace")
    # The lab lead's view: the watcher serves the Prefect UI for its lifetime, at the address it printed.
    assert f"Prefect UI: http://127.0.0.1:{port}" in log.read_text(errors="replace")
    servers = prefect_servers_of(proc.pid)
    assert len(servers) == 1, servers
    assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=HANG_LIMIT).status_code == 200
    ctx = {"root": root, "inbox": inbox, "store": store, "src": src, "log": log, "proc": proc, "servers": servers}
    yield ctx
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


def _ingest(store: Path, name: str) -> list[tuple]:
    if not (store / "commits").exists():
        return []
    return query(store, f"SELECT status, error FROM ingest_log WHERE source_name = '{name}'")


def test_slow_writer_is_read_once_complete(lab):
    data = lab["src"].read_bytes()
    target = lab["inbox"] / "slow.fcs"
    chunks = 8
    step = len(data) // chunks + 1
    with open(target, "wb") as fh:  # an instrument writing over ~4 s, pausing below stable_seconds
        for i in range(chunks):
            fh.write(data[i * step:(i + 1) * step])
            fh.flush()
            os.fsync(fh.fileno())
            if i < chunks - 1:
                time.sleep(0.6)
    stable_at = time.monotonic() + STABLE
    assert wait_for(lambda: _ingest(lab["store"], "slow.fcs"), HANG_LIMIT, 0.1), \
        lab["log"].read_text(errors="replace")
    latency = time.monotonic() - stable_at
    print(f"\nstable -> queryable: {latency:.2f} s")  # speed is benchmarks' business, not a test's
    assert _ingest(lab["store"], "slow.fcs") == [("stored", None)]
    (n_events,) = query(lab["store"], "SELECT n_events FROM samples WHERE sample_id = 'SLOW00'")
    assert n_events == (20000,)  # the complete file, not the part written when it was first seen
    assert not (lab["root"] / "quarantine").exists()


def test_copy_that_pauses_longer_than_the_window_is_taken_only_when_closed(lab):
    """A copy stalls mid-file for more than twice the stability window, then finishes. The
    writer still has the file open (its close is what inotify reports), so the watcher
    waits: the file is stored complete, never quarantined as truncated."""
    src = simulate(lab["root"] / "src-pause", 1, n_events=20000, prefix="PAUSE", seed0=404)[0]
    data = src.read_bytes()
    target = lab["inbox"] / "paused.fcs"
    with open(target, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        os.fsync(fh.fileno())
        time.sleep(2 * STABLE + 1.0)  # a stalled network copy
        fh.write(data[len(data) // 2:])
    assert wait_for(lambda: _ingest(lab["store"], "paused.fcs"), HANG_LIMIT, 0.1), \
        lab["log"].read_text(errors="replace")
    assert _ingest(lab["store"], "paused.fcs") == [("stored", None)]
    assert query(lab["store"], "SELECT n_events FROM samples WHERE sample_id = 'PAUSE00'") == [(20000,)]
    q = lab["root"] / "quarantine"
    assert not q.exists() or not list(q.glob("paused*"))


def test_duplicate_under_another_name_adds_no_rows(lab):
    assert wait_for(lambda: _ingest(lab["store"], "slow.fcs"), HANG_LIMIT)
    rows_before = query(lab["store"], "SELECT count(*) FROM flow_populations")
    tmp = lab["inbox"] / ".copy.fcs.tmp"  # the writer's rename pattern: hidden name, then rename
    tmp.write_bytes(lab["src"].read_bytes())
    os.rename(tmp, lab["inbox"] / "copy of slow.fcs")
    assert wait_for(lambda: _ingest(lab["store"], "copy of slow.fcs"), HANG_LIMIT, 0.1)
    assert _ingest(lab["store"], "copy of slow.fcs") == [("duplicate", None)]
    assert query(lab["store"], "SELECT count(*) FROM flow_populations") == rows_before
    assert query(lab["store"], "SELECT count(*) FROM samples WHERE sample_id = 'SLOW00'") == [(1,)]


def test_broken_fcs_land_in_quarantine_with_plain_reason(lab):
    kinds = broken_fcs_kinds(lab["src"])
    for name, data in kinds.items():
        (lab["inbox"] / name).write_bytes(data)
    quarantine = lab["root"] / "quarantine"

    def notes():
        return sorted(quarantine.glob("*.error.txt")) if quarantine.exists() else []

    assert wait_for(lambda: len(notes()) >= len(kinds), HANG_LIMIT, 0.2), lab["log"].read_text(errors="replace")
    assert sorted(p.name[: -len(".error.txt")] for p in notes()) == sorted(kinds)
    for note in notes():
        text = note.read_text()
        assert "Traceback" not in text and 'File "' not in text
        assert "Expected" in text and "What to do" in text
        assert (quarantine / note.name[: -len(".error.txt")]).exists()  # the original beside it
    assert not any(lab["inbox"].iterdir())
    # The watcher kept going: a good file after the bad ones is still stored.
    simulate(lab["root"] / "src2", 1, n_events=3000, prefix="AFTER", seed0=7)
    os.replace(lab["root"] / "src2" / "AFTER00.fcs", lab["inbox"] / "after.fcs")
    assert wait_for(lambda: _ingest(lab["store"], "after.fcs") == [("stored", None)], HANG_LIMIT, 0.1)


def test_sigint_during_a_batch_finishes_it_and_exits_0(lab):
    proc = lab["proc"]
    names = [p.name for p in simulate(lab["root"] / "src3", 6, n_events=60000, prefix="LATE", seed0=30)]
    for n in names:
        os.replace(lab["root"] / "src3" / n, lab["inbox"] / n)
    claims = lab["root"] / ".graftwatch-claims"
    assert wait_for(lambda: claims.exists() and any(p.suffix == ".fcs" for p in claims.rglob("*")), HANG_LIMIT, 0.02)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    assert proc.wait(timeout=HANG_LIMIT) == 0
    assert wait_for(lambda: not any(alive(p) for p in lab["servers"]), HANG_LIMIT), "the watcher's Prefect server outlived it"
    archived = {p.name for p in (lab["root"] / "archive").rglob("*.fcs")}
    assert set(names) <= archived  # the batch in progress was finished, nothing lost
    assert query(lab["store"], "SELECT count(*) FROM samples WHERE sample_id LIKE 'LATE%'") == [(6,)]
    out = lab["log"].read_text(errors="replace")
    assert "stopped after" in out and "Traceback" not in out
    batch_lines = [line for line in out.splitlines() if " batch " in line and " files: " in line]
    assert batch_lines and all("FAILED" not in line for line in batch_lines)
    # Counts only: no file names (they can carry patient identifiers) in the batch lines.
    assert not any("slow" in line or "SLOW" in line for line in batch_lines)
    assert not (lab["root"] / ".graftwatch-ready").exists() or not any((lab["root"] / ".graftwatch-ready").rglob("*.fcs"))


# --- pieces, in-process ----------------------------------------------------------------

def test_stability_rule():
    from flows.watch import StabilityTracker, is_temporary

    t = StabilityTracker(2.0)
    assert not t.observe("a", (10, 1), 0.0)
    assert not t.observe("a", (10, 1), 1.0)
    assert not t.observe("a", (20, 2), 2.5)  # grew: the clock restarts
    assert not t.observe("a", (20, 2), 4.0)
    assert t.observe("a", (20, 2), 4.6)
    t.mark_renamed("b")
    assert not t.observe("b", (5, 5), 0.0)  # one look to learn its size...
    assert t.observe("b", (5, 5), 0.1)  # ...one more unchanged and it is ready
    for name in (".x.fcs", "a.fcs.part", "sub/b.FCS.TMP", "c.crdownload", "~$sheet.xlsx", "d.fcs~"):
        assert is_temporary(name), name
    assert not is_temporary("sub/P01-D030.fcs") and not is_temporary("sheet.xlsx")


def test_open_writer_holds_a_file_until_its_close():
    """Pure bookkeeping (no clock): a reported writer keeps a file waiting past the
    stability window; its close makes it ready on the next unchanged look."""
    from flows.watch import CLOSE_WAIT_LIMIT, StabilityTracker, is_temporary

    t = StabilityTracker(2.0)
    t.mark_written("c")
    assert not t.observe("c", (10, 1), 0.0)
    assert not t.observe("c", (10, 1), 6.0)  # paused 6 s, still open: not ready
    assert not t.observe("c", (10, 1), CLOSE_WAIT_LIMIT - 1)
    t.mark_written("c")
    assert not t.observe("c", (30, 3), 7.0)  # the copy resumed
    t.mark_closed("c")
    assert not t.observe("c", (40, 4), 7.1)  # the last write: one look to learn it...
    assert t.observe("c", (40, 4), 7.2)  # ...unchanged after the close: ready at once
    t.mark_written("lost")  # events lost after a write: the stability rule takes over, late
    assert not t.observe("lost", (1, 1), 0.0)
    assert t.observe("lost", (1, 1), CLOSE_WAIT_LIMIT)
    for debris in ("desktop.ini", "sub/Thumbs.db", ".DS_Store", "._x.fcs"):  # OS debris: never read
        assert is_temporary(debris), debris


def _stub_watcher(tmp_path, monkeypatch, runner):
    import flows.watch as w
    from flows.config import Config

    monkeypatch.setattr(w, "_start_observer", lambda inbox, handler: None)  # inotify unavailable
    monkeypatch.setattr(w, "RETRY_SECONDS", (0.2,))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = Config()
    config.inbox.stable_seconds, config.inbox.poll_seconds = 0.3, 0.1
    watcher = w.Watcher(inbox, str(tmp_path / "store"), config, run_batch=runner, out=open(os.devnull, "w"))
    thread = threading.Thread(target=watcher.run, daemon=True)
    return inbox, watcher, thread


def test_polling_fallback_ignores_temporaries_and_retries_failed_batches(tmp_path, monkeypatch):
    processed: list[str] = []
    calls = {"n": 0}
    staging = tmp_path / ".graftwatch-ready"

    def runner():
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("store unreachable")  # the whole batch fails once; nothing may be lost
        for p in sorted(staging.rglob("*")):
            if p.is_file():
                processed.append(p.relative_to(staging).as_posix())
                p.unlink()
        from flows.batch import RunSummary

        return RunSummary(stored=1)

    inbox, watcher, thread = _stub_watcher(tmp_path, monkeypatch, runner)
    (inbox / "sub").mkdir()
    (inbox / "sub" / "a.fcs").write_bytes(b"x" * 10)
    (inbox / "b.fcs.part").write_bytes(b"y")
    (inbox / ".hidden").write_bytes(b"z")
    thread.start()
    try:
        assert wait_for(lambda: processed == ["sub/a.fcs"], HANG_LIMIT)
    finally:
        watcher.stop.set()
        thread.join(10)
    assert calls["n"] == 2 and not thread.is_alive()
    assert sorted(p.name for p in inbox.rglob("*") if p.is_file()) == [".hidden", "b.fcs.part"]


def test_staging_never_overwrites(tmp_path):
    from flows.watch import _move_no_replace

    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.fcs").write_text("first")
    (tmp_path / "in" / "a.fcs").write_text("second")
    moved = _move_no_replace(tmp_path / "in" / "a.fcs", tmp_path / "out" / "a.fcs")
    assert moved.name == "a__watch1.fcs" and moved.read_text() == "second"
    assert (tmp_path / "out" / "a.fcs").read_text() == "first" and not (tmp_path / "in" / "a.fcs").exists()


def test_bad_inbox_is_a_usage_error(tmp_path):
    from flows.watch import watch

    assert watch(tmp_path / "missing", str(tmp_path / "store"), None) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[inbox]\nstable_seconds = 'soon'\n")
    (tmp_path / "inbox").mkdir()
    assert watch(tmp_path / "inbox", str(tmp_path / "store"), str(bad)) == 2


def test_run_takes_back_files_a_dead_watcher_staged(tmp_path):
    """Files staged in `.graftwatch-ready/` by a watcher that died and was never restarted
    are processed by the next `graftwatch run` on the inbox; while a watcher lives (it holds
    the staging lock) they are left to it. Seeded simulator tube."""
    from simulators.tcell import simulate_tube
    from conftest import query, run_pipeline
    from flows.inbox import STAGING, hold_staging, sibling

    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    staged = sibling(inbox, STAGING) / "day1" / "t.fcs"
    staged.parent.mkdir(parents=True)
    simulate_tube(staged, seed=31, n_events=5_000, sample_id="STAGED-1")
    watcher = hold_staging(inbox)  # a live watcher
    try:
        run_pipeline(inbox, store)
        assert staged.is_file()
    finally:
        watcher.close()  # the watcher dies: the kernel drops its lock
    run_pipeline(inbox, store)
    assert not staged.exists()
    assert query(store, "SELECT sample_id FROM samples") == [("STAGED-1",)]
    assert query(store, "SELECT source_name, status FROM ingest_log") == [("day1/t.fcs", "stored")]
