"""Where per-file work runs, and the local Prefect API a command talks to.

:func:`make_task_runner` picks Prefect's task runner for the inbox flow: threads on this
machine (default), or prefect-dask's ``DaskTaskRunner`` either on a throw-away local Dask
cluster or on an existing scheduler (``tcp://host:8786``) for a cluster. Per-file work is
independent and returns rows; only the flow process writes the store, so Dask workers
need read access to the inbox/claim folder (the same paths: a shared filesystem) and
nothing else.

:func:`configured_api_url` tells whether a Prefect server is configured (a one-shot run
then records a flow run there; without one it runs in-process and needs no server).
:func:`prefect_api` gives a long-lived command (``watch``, ``serve``) a server for its
lifetime: the configured one, or a local one it starts (:class:`LocalServer`) in its own
session, so a Ctrl-C in the terminal reaches graftwatch, which stops cleanly, but not the
server, which must outlive the batch in progress.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess

from assays.errors import ConfigError

log = logging.getLogger("graftwatch")

KINDS = ("thread", "dask")
PREFECT_DASK_PIN = "prefect-dask==0.3.7"


def make_task_runner(kind: str | None, address: str | None = None, workers: int | None = None):
    """A Prefect task runner for the inbox flow.

    Parameters
    ----------
    kind : ``"thread"`` (or None): a thread pool in this process, sized as the inbox
        flow's default (:func:`flows.batch.default_workers`).
        ``"dask"``: prefect-dask's ``DaskTaskRunner``.
    address : with ``dask``, a running scheduler (``tcp://10.0.0.5:8786``); without it a
        local cluster of worker processes is started for the run and closed after it.
    workers : thread-pool size, or local Dask worker processes (default: one per core, at most 4).

    Raises ``ConfigError`` (exit 2 in the CLI) for an unknown kind, an address without
    ``dask``, or prefect-dask not installed.
    """
    kind = (kind or "thread").lower()
    if kind not in KINDS:
        raise ConfigError(f"--task-runner {kind}: unknown (choose {' or '.join(KINDS)})")
    if kind == "thread":
        if address:
            raise ConfigError("--dask-address needs --task-runner dask")
        from prefect.task_runners import ThreadPoolTaskRunner

        from flows.batch import default_workers  # the inbox flow's own default pool size

        return ThreadPoolTaskRunner(max_workers=workers or default_workers())
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError("--task-runner dask needs prefect-dask, which graftwatch installs: this environment "
                          f"lacks it; run `make setup` (or reinstall graftwatch, which pins {PREFECT_DASK_PIN})") from None
    if address:
        if not address.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
            raise ConfigError(f"--dask-address {address}: expected a scheduler address such as tcp://host:8786")
        return DaskTaskRunner(address=address)
    from flows.batch import default_workers  # same memory reasoning: ~0.5 GB per 1M-event file

    n = workers or default_workers()
    # One thread per worker process: gating is CPU-bound numpy code, and separate processes
    # sidestep the GIL the way a real cluster would.
    return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "dashboard_address": None})


def configured_api_url() -> str | None:
    """The Prefect API this process is configured to use, or None (then a one-shot run
    needs no server). Read without importing Prefect (~2 s): ``PREFECT_API_URL`` from the
    environment, else from the active profile of ``$PREFECT_HOME/profiles.toml``
    (``PREFECT_PROFILE`` or the file's ``active`` key), as Prefect itself reads them.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    import tomllib
    from pathlib import Path

    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or doc.get("active")
    profile = (doc.get("profiles") or {}).get(active) or {}
    return profile.get("PREFECT_API_URL") or None


def _set_pdeathsig() -> None:
    """In the child: die with the parent (Linux), so a kill -9 of graftwatch leaves no orphan server."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:
        pass


DEFAULT_PORT = 4200  # Prefect's own default: the lab's bookmarks of the UI keep working


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalServer:
    """A Prefect server on 127.0.0.1 for a long-lived command (``watch``, ``serve``).

    The same server as ``prefect server start`` (uvicorn on Prefect's ``create_app``:
    the UI, the scheduler and the other background services, SQLite under
    ``PREFECT_HOME``), started by graftwatch in its own session, so the terminal's Ctrl-C
    reaches graftwatch, which finishes its batch and then stops the server, and with a
    parent-death signal, so a kill -9 of graftwatch takes the server with it. When a
    Prefect server already answers on the port, it is reused (and left running).
    """

    def __init__(self, port: int | None = DEFAULT_PORT, full: bool = True) -> None:
        self.port = port if port else _free_port()  # 0/None: any free port (tests)
        # full=False: API only (no UI, only the services Prefect runs in its temporary
        # server): starts in a fraction of the time, for a test's shared server.
        self.full = full
        self.proc: subprocess.Popen | None = None
        self.reused = False
        self._log = None

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    def start(self) -> None:
        """Launch the server (or note that one answers on the port); ``ConfigError`` when
        the port is taken by another program. Must run in the main thread (the
        parent-death signal belongs to the spawning thread)."""
        import sys
        import tempfile

        if not _port_free(self.port):
            if _answers(self.api_url):
                self.reused = True
                return
            raise ConfigError(f"port {self.port} on this computer is in use by another program, so the Prefect "
                              f"server cannot start: stop that program, choose another port ([prefect] port in the "
                              f"config), or set PREFECT_API_URL to a running Prefect server")
        env = {**os.environ, "PREFECT_UI_ENABLED": "true", "PREFECT_SERVER_API_HOST": "127.0.0.1",
               "PREFECT_SERVER_API_PORT": str(self.port), "PREFECT_UI_API_URL": self.api_url}
        for key in ("PREFECT_API_URL", "PREFECT__SERVER_EPHEMERAL", "PREFECT__SERVER_FINAL"):
            env.pop(key, None)
        if not self.full:
            env.update({"PREFECT_UI_ENABLED": "false", "PREFECT__SERVER_EPHEMERAL": "1"})
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_set_pdeathsig if os.name == "posix" else None,
        )

    def wait(self, timeout: float | None = None) -> str:
        """Block until the server answers; its API URL.

        ``timeout``: seconds, or None to wait as long as the server process lives (tests:
        a loaded machine must not fail a test on start-up time). ``ConfigError`` (exit 2
        in the CLI) when the server exits or misses the deadline; the log's last line says why
        (a locked database, a port taken meanwhile).
        """
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while not _answers(self.api_url):
            if self.proc is not None and self.proc.poll() is not None:
                raise ConfigError(f"the local Prefect server stopped at start-up ({self._last_log_line()}); "
                                  "set PREFECT_API_URL to a running Prefect server, or see docs/operations.md")
            if deadline is not None and time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"the local Prefect server did not answer within {timeout:.0f} s (the computer "
                                  "may be busy: try again, or set PREFECT_API_URL to a running Prefect server)")
            time.sleep(0.1)
        return self.api_url

    def _last_log_line(self) -> str:
        if self._log is None:
            return "no output"
        self._log.seek(0)
        lines = [ln.strip() for ln in self._log.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else f"exit code {self.proc.returncode if self.proc else '?'}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def prefect_api(port: int = DEFAULT_PORT, timeout: float | None = 120.0, announce=None):
    """Flow runs inside this block go to a Prefect server that lives as long as the block.

    ``PREFECT_API_URL`` (or the active Prefect profile) names a server: it is used. Else a
    :class:`LocalServer` on ``port`` is started (or an already running one reused), set as
    ``PREFECT_API_URL`` for this process and its children, and stopped at the end.
    ``announce(text)`` is told the UI address. Yields the API URL. ``ConfigError`` (exit 2)
    when no server can be had; nothing has been touched then.
    """
    url = configured_api_url()
    if url is not None:
        yield url
        return
    server = LocalServer(port)
    server.start()
    try:
        url = server.wait(timeout)
        if announce is not None:
            how = "already running, reused" if server.reused else "started for this command, stops with it"
            announce(f"Prefect UI: {server.ui_url} ({how})")
        from prefect.settings import PREFECT_API_URL, temporary_settings

        old = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url  # for subprocesses (serve's flow-run processes)
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                yield url
        finally:
            if old is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = old
    finally:
        server.stop()


@contextlib.contextmanager
def server_errors():
    """Turn a Prefect API that cannot be reached mid-command into ``ConfigError`` (one
    line, exit 2) instead of a traceback; the batch's claimed files go back to the inbox."""
    import httpx

    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise ConfigError(_unreachable(str(exc))) from None
    except RuntimeError as exc:  # prefect's words for an API it cannot reach or start
        if "reach API" in str(exc) or "API server" in str(exc):
            raise ConfigError(_unreachable(str(exc).splitlines()[0][:200])) from None
        raise


def _unreachable(detail: str) -> str:
    return (f"the Prefect server at {configured_api_url()} cannot be reached ({detail}); start it "
            "(`prefect server start`), or unset PREFECT_API_URL to run without one")


def check_api(url: str) -> None:
    """``ConfigError`` unless the Prefect API at ``url`` answers (before any file is claimed)."""
    if not _answers(url.rstrip("/")):
        raise ConfigError(_unreachable("no answer from its /health"))


@contextlib.contextmanager
def blas_threads_per_worker(workers: int, scipy_blas: bool = True):
    """Limit BLAS (OpenBLAS/MKL) to ``cores // workers`` threads while the block runs.

    numpy's OpenBLAS starts one thread per core for each large call (the compensation
    solve, the population x bucket histogram product); called from two worker threads
    on two cores that is four busy threads, and OpenBLAS's threads spin while waiting
    for work, taking the core from the other worker. Measured on 12 x 1M-event files
    with two workers: 3.7-4.2 s limited vs 4.5-5.8 s not. Results are unchanged: the
    threads split right-hand-side columns, never one column's arithmetic (tested).
    Process-wide (the library's own setting), restored on exit. ``scipy_blas``: also
    SciPy's own OpenBLAS (loaded first; the adaptive panel's scikit-learn uses it). A
    template run never calls it, and loading scipy.linalg costs it ~0.25-0.5 s.
    """
    with _blas_controller(scipy_blas).limit(limits=max(1, (os.cpu_count() or 1) // max(1, workers)), user_api="blas"):
        yield


@functools.cache
def _blas_controller(scipy_blas: bool = True):
    """threadpoolctl's view of the loaded BLAS libraries, built once per process (it scans
    every loaded shared library: ~8 ms with Prefect, pyarrow and DuckDB loaded)."""
    import numpy  # noqa: F401  (its OpenBLAS must be loaded before the scan)

    if scipy_blas:
        import scipy.linalg  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed arrays for reuse instead of returning them to the kernel.

    Every file allocates the same sizes again (events, masks, compensated channels:
    ~8-100 MB each). By default glibc maps large blocks fresh and unmaps them on free,
    so each file pays page faults for all of them, and two worker threads faulting at
    once serialise on the kernel's memory lock (measured: a (group x bucket) histogram
    per channel ran 2x slower in two threads than in one). With a 256 MB mmap
    threshold and no trimming, blocks up to 256 MB are reused: resident memory stays at
    the high-water mark of one batch of files in flight instead of going up and down
    (peak RSS unchanged). glibc only (Linux); returns False when not applied.

    One arena for all threads: glibc gives each new thread its own arena, whose heaps are
    at most 64 MB, so a worker thread's larger arrays (a 1M-event file's events, 104 MB,
    its compensated channels, 72 MB) were mmapped fresh and unmapped on free whatever the
    threshold: every file paid the kernel's zeroing of ~200 MB (12 x 1M-event files:
    150-240k page faults, 2-3 s system CPU; with one arena ~35k, ~1.5 s). Called before the
    command starts other threads (``flows.cli``), since it only affects arenas made later.
    """
    import ctypes

    try:
        # By its soname: ctypes.util.find_library would run ldconfig (~60 ms) every flow run.
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # malloc.h
        return (bool(libc.mallopt(m_arena_max, 1)) and bool(libc.mallopt(m_mmap_threshold, 256 * 2**20))
                and bool(libc.mallopt(m_trim_threshold, 2**31 - 1)))
    except (OSError, AttributeError):
        return False
