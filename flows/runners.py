"""Where per-file work runs, and the local Prefect API a command talks to.

:func:`make_task_runner` picks Prefect's task runner for the inbox flow: threads on this
machine (default), or prefect-dask's ``DaskTaskRunner`` either on a throw-away local Dask
cluster or on an existing scheduler (``tcp://host:8786``) for a cluster. Per-file work is
independent and returns rows; only the flow process writes the store, so Dask workers
need read access to the inbox/claim folder (the same paths: a shared filesystem) and
nothing else.

:func:`local_api` gives a command its Prefect API: ``PREFECT_API_URL`` when set, else a
local server that graftwatch starts (:func:`spawn_local_api` launches it early so it starts
up while the command imports) in its own session: a Ctrl-C in the terminal then reaches
graftwatch, which stops cleanly, but not the server, which must outlive the batch in
progress (a server killed mid-run makes the client hang on its state updates).
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
        flow's default (:func:`flows.pipeline.default_workers`).
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

        from flows.pipeline import default_workers  # the inbox flow's own default pool size

        return ThreadPoolTaskRunner(max_workers=workers or default_workers())
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError(f"--task-runner dask needs prefect-dask: pip install '{PREFECT_DASK_PIN}'") from None
    if address:
        if not address.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
            raise ConfigError(f"--dask-address {address}: expected a scheduler address such as tcp://host:8786")
        return DaskTaskRunner(address=address)
    from flows.pipeline import default_workers  # same memory reasoning: ~0.5 GB per 1M-event file

    n = workers or default_workers()
    # One thread per worker process: gating is CPU-bound numpy code, and separate processes
    # sidestep the GIL the way a real cluster would.
    return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "dashboard_address": None})


def _set_pdeathsig() -> None:
    """In the child: die with the parent (Linux), so a kill -9 of graftwatch leaves no orphan server."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:
        pass


class _LocalServer:
    """Prefect's API server for this process's flow runs, on 127.0.0.1.

    Started the way Prefect starts its own temporary server (uvicorn on
    ``prefect.server.api.server:create_app`` in ephemeral mode: no UI, no background
    services), but by graftwatch, so that (1) it can be launched before graftwatch's own
    imports and start up meanwhile (~3 s each, on two cores), and (2) the command's
    process never imports the server package (~2 s). Own session: the terminal's Ctrl-C
    (sent to the foreground process group) does not reach it, so a run stops cleanly
    instead of losing its server mid-batch (a server killed mid-run makes the client
    hang on its state updates).
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.ready = False

    def spawn(self) -> None:
        import atexit
        import importlib.util
        import socket
        import sys

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        app_dir = os.path.dirname(importlib.util.find_spec("prefect").submodule_search_locations[0])
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
               # The task-run recorder writes task states into SQLite while the next flow run
               # is being created: SQLITE_BUSY -> HTTP 503 -> the client backs off 2 s, on about
               # half of back-to-back runs (measured). Nobody reads this server's task runs (no
               # UI, it dies with the command); flow runs and artifacts are still recorded.
               "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", app_dir, "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "error", "--lifespan", "on"],
            env=env, start_new_session=True, preexec_fn=_set_pdeathsig if os.name == "posix" else None,
        )
        self.url, self.ready = f"http://127.0.0.1:{port}/api", False
        # At exit, SIGTERM without waiting ~0.3 s for its shutdown: nothing of this
        # command needs it any more, and it dies on its own (or of the parent-death signal).
        atexit.register(self.stop, wait=False)

    def wait(self, timeout: float) -> str:
        """Block until the server answers; its API URL. Raises ``ConfigError`` if it cannot start."""
        import time

        import httpx

        deadline = time.monotonic() + timeout
        retried = False
        while not self.ready:
            if self.proc.poll() is not None:
                if not retried:  # e.g. the port was taken between choosing and binding it
                    retried = True
                    self.spawn()
                    continue
                raise ConfigError(f"the local Prefect server exited (code {self.proc.returncode}); "
                                  "set PREFECT_API_URL to a running Prefect server instead")
            try:
                self.ready = httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                pass
            if not self.ready:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ConfigError(f"the local Prefect server did not answer within {timeout:.0f} s; "
                                      "set PREFECT_API_URL to a running Prefect server instead")
                time.sleep(0.05)
        # The first request to a fresh server takes ~0.5 s (it sets itself up lazily):
        # made here, it is paid at start-up instead of inside the first flow run.
        httpx.get(f"{self.url}/admin/version", timeout=30)
        return self.url

    def stop(self, wait: bool = True) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            if not wait:
                self.proc, self.ready = None, False
                return
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc, self.ready = None, False


_SERVER = _LocalServer()


def spawn_local_api() -> None:
    """Launch the local Prefect server now without waiting for it (no-op when
    ``PREFECT_API_URL`` is set in the environment or it is already launched)."""
    if _SERVER.proc is None and not os.environ.get("PREFECT_API_URL"):
        _SERVER.spawn()


def start_local_api(timeout: int = 60, meanwhile=None) -> str | None:
    """The local Prefect server's API URL once it answers, launching it if needed; None
    when an API is configured (``PREFECT_API_URL``: a real server), which is then used.

    ``meanwhile``: a callable run while the server starts up (this process would
    otherwise only wait), e.g. importing what the flow will need.

    Must be called from the main thread (the parent-death signal is tied to the thread
    that spawns the server).
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        _SERVER.stop()  # launched early, but a Prefect profile names a server
        return None
    if _SERVER.proc is None:
        _SERVER.spawn()
    _import_flow_engine()
    if meanwhile is not None:
        meanwhile()
    return _SERVER.wait(timeout)


def _import_flow_engine() -> None:
    """Import what Prefect imports lazily at the first flow run (~0.1 s), while the server
    is still starting up, instead of inside the run."""
    import fastapi.encoders  # noqa: F401  (JSON encoding of flow-run parameters)
    import prefect.flow_engine  # noqa: F401
    import prefect.utilities.visualization  # noqa: F401  (imports graphviz)


@contextlib.contextmanager
def local_api(timeout: int = 60, open_client: bool = False, meanwhile=None):
    """Flow runs inside this block use a real API if configured, else the local server.

    On the local server, flow-run heartbeats are switched off: they exist so that a
    long-lived server can mark runs whose process died, but this server dies with the
    process, and the heartbeat thread (sleeping in 1 s steps) holds every flow run up to
    1 s at its end. With ``open_client`` (a short command), one API client is opened
    now and serves every flow run of the block: the first run then skips building it
    (its TLS context alone is ~20 ms) and the server version check. ``meanwhile``: see
    :func:`start_local_api`. Yields the local server's URL, or None for a configured API.
    """
    url = start_local_api(timeout, meanwhile)
    if url is None:
        yield None
        return
    from prefect.context import SyncClientContext
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        with SyncClientContext.get_or_create() if open_client else contextlib.nullcontext():
            yield url


@contextlib.contextmanager
def blas_threads_per_worker(workers: int):
    """Limit BLAS (OpenBLAS/MKL) to ``cores // workers`` threads while the block runs.

    numpy's OpenBLAS starts one thread per core for each large call (the compensation
    solve, the population x bucket histogram product); called from two worker threads
    on two cores that is four busy threads, and OpenBLAS's threads spin while waiting
    for work, taking the core from the other worker. Measured on 12 x 1M-event files
    with two workers: 3.7-4.2 s limited vs 4.5-5.8 s not. Results are unchanged: the
    threads split right-hand-side columns, never one column's arithmetic (tested).
    Process-wide (the library's own setting), restored on exit.
    """
    with _blas_controller().limit(limits=max(1, (os.cpu_count() or 1) // max(1, workers)), user_api="blas"):
        yield


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, built once per process (it scans
    every loaded shared library: ~8 ms with Prefect, pyarrow and DuckDB loaded)."""
    import numpy  # noqa: F401  (its OpenBLAS must be loaded before the scan)
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
    """
    import ctypes

    try:
        # By its soname: ctypes.util.find_library would run ldconfig (~60 ms) every flow run.
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        return bool(libc.mallopt(m_mmap_threshold, 256 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False
