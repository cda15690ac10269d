"""Where per-file work runs, and the local Prefect API a command talks to.

:func:`make_task_runner` picks Prefect's task runner for the inbox flow: threads on this
machine (default), or prefect-dask's ``DaskTaskRunner`` either on a throw-away local Dask
cluster or on an existing scheduler (``tcp://host:8786``) for a cluster. Per-file work is
independent and returns rows; only the flow process writes the store, so Dask workers
need read access to the inbox/claim folder (the same paths: a shared filesystem) and
nothing else.

:func:`start_local_api` starts Prefect's temporary server (used when no
``PREFECT_API_URL`` is set) in its own session: a Ctrl-C in the terminal then reaches
graftwatch, which stops cleanly, but not the server, which must outlive the batch in
progress (a server killed mid-run makes the client hang on its state updates).
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def _children_in_own_session():
    """Processes spawned inside this block start their own session and die with us.

    Own session: the terminal's Ctrl-C (sent to the foreground process group) does not
    reach them. Parent-death signal (Linux): a kill -9 of graftwatch does not leave an
    orphan server behind. Only used around the one call that spawns Prefect's server.
    """
    real_init = subprocess.Popen.__init__

    def _set_pdeathsig() -> None:
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except Exception:
            pass

    def init(self, *args, **kwargs):
        kwargs.setdefault("start_new_session", True)
        if kwargs.get("preexec_fn") is None and os.name == "posix":
            kwargs["preexec_fn"] = _set_pdeathsig
        real_init(self, *args, **kwargs)

    subprocess.Popen.__init__ = init
    try:
        yield
    finally:
        subprocess.Popen.__init__ = real_init


def start_local_api(timeout: int = 60) -> str | None:
    """Start Prefect's temporary server now, shielded from Ctrl-C; its URL, or None.

    None means an API is configured (``PREFECT_API_URL``: a real server) and nothing was
    started. Prefect reuses this server for every flow run of the process (it is a
    per-process singleton), and stops it at exit. Must be called from the main thread
    (the parent-death signal is tied to the thread that spawns the server).

    The first request to a fresh server takes ~0.5 s (it sets itself up lazily); one is
    made here so that this fixed cost is paid at start-up, not inside the first flow run.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    from prefect.client.orchestration import get_client
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    if not server.running:
        with _children_in_own_session():
            server.start(timeout=timeout)
        with get_client(sync_client=True) as client:
            client.api_version()
    return server.api_url


@contextlib.contextmanager
def local_api(timeout: int = 60):
    """Flow runs inside this block use a real API if configured, else the temporary server.

    On the temporary server, flow-run heartbeats are switched off: they exist so that a
    long-lived server can mark runs whose process died, but this server dies with the
    process, and the heartbeat thread (sleeping in 1 s steps) holds every flow run up to
    1 s at its end. Yields the temporary server's URL, or None for a configured API.
    """
    url = start_local_api(timeout)
    if url is None:
        yield None
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield url


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
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or os.name != "posix":
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        return bool(libc.mallopt(m_mmap_threshold, 256 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False
