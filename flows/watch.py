"""``graftwatch watch``: keep watching the inbox and process each file once it is complete.

How a file goes through:

1. **Seen.** A scan at start, then file-system events (watchdog/inotify) wake the loop;
   a rescan every ``[inbox] poll_seconds`` catches anything events miss (network
   shares deliver no inotify events for writes made on another machine). When inotify
   is unavailable (no support, watch limit reached) the rescan alone is the polling
   fallback.
2. **Complete.** A file is ready once its size and mtime have not changed for
   ``[inbox] stable_seconds``, judged by our own repeated observations (clock skew of a
   file server cannot fool it). A file renamed into place inside the inbox (the
   "write to a temporary name, then rename" pattern) is ready as soon as one more
   observation shows it unchanged. Hidden names (``.x``) and the usual in-progress
   suffixes (``.part``, ``.tmp``, ``.crdownload``, ...) are never read.
3. **Staged.** Ready files are moved (atomic rename, never overwriting) into
   ``.graftwatch-ready/`` beside the inbox, keeping their relative path. The inbox flow
   processes *every* file of the folder it is given, so it must be given a folder that
   holds only complete files; ``archive/``, ``quarantine/`` and the claim folder are
   siblings of that folder exactly as of the inbox, so nothing else changes.
4. **Batched.** Ready files are debounced (``DEBOUNCE_SECONDS`` of quiet, at most
   ``MAX_BATCH_WAIT`` after the first) and handed to the same Prefect flow as
   ``graftwatch run``: :func:`flows.pipeline.process_inbox` on the staging folder, one
   flow run per batch (a flow run costs about a second; one per file would not keep up),
   on the configured Prefect server or on a local one the watcher starts for its
   lifetime (its UI address is printed at start).
   Claims make it safe for several watchers and ``graftwatch run`` to share the folders.

A bad file is quarantined by the flow and the watcher goes on; a batch that fails as a
whole (store unreachable, a bug) is retried with a growing pause, its files staying in
the staging folder. SIGINT/SIGTERM stop the loop after the current batch and exit 0.
Files left in the staging folder by a killed watcher are processed by its next start, or by
the next ``graftwatch run`` on the inbox once no watcher holds the staging lock.

One line is printed per batch, with counts only: file names can carry patient
identifiers, so they are printed only when ``[privacy] show_patient_ids`` is set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from assays.errors import ConfigError
from flows.config import Config, load_config
from flows.inbox import STAGING, InboxFile, file_signature, hold_staging, is_in_progress, list_inbox, sibling

log = logging.getLogger("graftwatch")

DEBOUNCE_SECONDS = 0.5
MAX_BATCH_WAIT = 5.0
RETRY_SECONDS = (5.0, 15.0, 60.0, 300.0)

EXIT_OK, EXIT_USAGE = 0, 2


def is_temporary(name: str) -> bool:
    """True for names a writer uses while the file is incomplete (and for hidden names)."""
    return is_in_progress(name)


# A file written on this machine announces its end: the kernel reports the writer's
# close (inotify IN_CLOSE_WRITE, watchdog's "closed"). Once writes were seen, the file is
# taken only after such a close, however long the writer pauses (a copy that stalls for
# 6 s is still open). Events can be lost (inotify queue overflow): after this long
# without any change, the stability window alone decides.
CLOSE_WAIT_LIMIT = 600.0


@dataclass
class _Seen:
    signature: tuple[int, int]  # (size, mtime_ns)
    since: float  # monotonic time this signature was first observed
    observations: int = 1
    renamed: bool = False  # arrived by a rename inside the watched tree
    writing: bool = False  # a write was reported after the last close: a writer has it open
    closed: bool = False  # its writer's close was reported after the last write


class StabilityTracker:
    """Decides when a file has stopped changing (pure bookkeeping; testable without a clock)."""

    def __init__(self, stable_seconds: float):
        self.stable_seconds = stable_seconds
        self.seen: dict[str, _Seen] = {}

    def _entry(self, rel: str) -> _Seen:
        entry = self.seen.get(rel)
        if entry is None:
            entry = self.seen[rel] = _Seen((-1, -1), time.monotonic(), 0)
        return entry

    def mark_renamed(self, rel: str) -> None:
        self._entry(rel).renamed = True

    def mark_written(self, rel: str) -> None:
        """A write to ``rel`` was reported (a writer on this machine has it open)."""
        entry = self._entry(rel)
        entry.writing, entry.closed = True, False

    def mark_closed(self, rel: str) -> None:
        """The writer of ``rel`` closed it (inotify IN_CLOSE_WRITE)."""
        entry = self._entry(rel)
        entry.writing, entry.closed = False, True

    def observe(self, rel: str, signature: tuple[int, int], now: float) -> bool:
        """Record one observation; True when the file is ready to be read.

        Ready after one more unchanged look when it was renamed into place or its writer
        closed it; never while a reported writer still has it open (up to
        ``CLOSE_WAIT_LIMIT``); otherwise (no events: network shares, files present at
        start) after ``stable_seconds`` unchanged.
        """
        entry = self.seen.get(rel)
        if entry is None or entry.signature != signature:
            flags = (entry.renamed, entry.writing, entry.closed) if entry is not None else (False, False, False)
            self.seen[rel] = _Seen(signature, now, 1, *flags)
            return False
        entry.observations += 1
        if entry.renamed or entry.closed:
            return True  # the writer's rename or close says it is complete; one unchanged look suffices
        if entry.writing:
            return now - entry.since >= CLOSE_WAIT_LIMIT
        return now - entry.since >= self.stable_seconds

    def forget(self, rel: str) -> None:
        self.seen.pop(rel, None)

    def prune(self, present: set[str]) -> None:
        for rel in list(self.seen):
            if rel not in present:
                del self.seen[rel]


def _move_no_replace(src: Path, dst: Path) -> Path:
    """Move ``src`` to ``dst`` or a free variant of it; never overwrites another file.

    ``os.link`` fails when the target exists, which makes the choice of name atomic even
    with two watchers staging at once; a crash between link and unlink leaves the file
    in both places, and the second copy is then a duplicate (same sha256), not lost.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    stem, dot, ext = dst.name.partition(".")
    for i in range(1000):
        candidate = dst if i == 0 else dst.with_name(f"{stem}__watch{i}{dot}{ext}")
        try:
            os.link(src, candidate, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                # No hard links on this filesystem: rename, after checking the name is free.
                if candidate.exists() or candidate.is_symlink():
                    continue
                os.rename(src, candidate)
                return candidate
            raise
        os.unlink(src)
        return candidate
    raise FileExistsError(f"no free name for {dst.name} in {dst.parent}")


def _handler_base():
    try:
        from watchdog.events import FileSystemEventHandler

        return FileSystemEventHandler
    except ImportError:  # watchdog missing: polling still works
        return object


class _Events(_handler_base()):
    """watchdog handler: pushes the relative path of anything that changed; notes renames."""

    def __init__(self, inbox: Path, wake: "queue.Queue[tuple[str, str]]"):
        super().__init__()
        self.inbox = str(inbox)
        self.wake = wake

    def dispatch(self, event) -> None:  # watchdog calls this for every event
        if event.is_directory:
            self.wake.put(("scan", ""))
            return
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return  # readers (our own hashing included) say nothing about completeness
        path = getattr(event, "dest_path", "") if kind == "moved" else event.src_path
        path = os.fsdecode(path)
        if path.startswith(self.inbox + os.sep):
            rel = path[len(self.inbox) + 1:].replace(os.sep, "/")
            # "modified" is a content write (IN_MODIFY; metadata changes are "attrib"); a file
            # moved in from outside the inbox arrives as "created" with no write and no close.
            what = {"moved": "renamed", "closed": "closed", "modified": "written"}
            self.wake.put((what.get(kind, "changed"), rel))


def _start_observer(inbox: Path, handler: _Events):
    """An inotify observer, or None (polling only) when the platform refuses one."""
    try:
        from watchdog.observers import Observer

        observer = Observer()
        observer.schedule(handler, str(inbox), recursive=True)
        observer.daemon = True
        observer.start()
        return observer
    except Exception as exc:  # OSError (inotify limit), ImportError, platform errors
        log.warning("file events unavailable (%s); polling the inbox instead", exc)
        return None


class Watcher:
    """The watch loop; :func:`watch` is its command-line face."""

    def __init__(self, inbox: Path, store: str, config: Config, config_path: str | None = None,
                 template_path: str | None = None, out=None, run_batch=None):
        self.inbox = Path(inbox).resolve()
        self.store = store
        self.config = config
        self.config_path = config_path
        self.template_path = template_path
        self.staging = sibling(self.inbox, STAGING)
        self.tracker = StabilityTracker(config.inbox.stable_seconds)
        self.wake: queue.Queue[tuple[str, str]] = queue.Queue()
        self.stop = threading.Event()
        self.out = out or sys.stdout
        self.batches = 0
        self._run_batch = run_batch or self._run_flow
        self._failures = 0
        self._next_try = 0.0

    # --- scanning ---------------------------------------------------------------------
    def _ready_files(self) -> list[InboxFile]:
        """Observe every candidate once; return those that are complete."""
        now = time.monotonic()
        ready, present = [], set()
        for f in list_inbox(self.inbox):
            if is_temporary(f.name):
                continue
            sig = file_signature(f.path)
            if sig is None:
                continue
            present.add(f.name)
            if self.tracker.observe(f.name, sig, now):
                ready.append(f)
        self.tracker.prune(present)
        return ready

    def _stage(self, files: list[InboxFile]) -> int:
        """Move complete files to the staging folder under their readable names."""
        moved = 0
        for f in files:
            try:
                _move_no_replace(f.path, self.staging / f.name)
                moved += 1
            except FileNotFoundError:
                pass  # another watcher or a `graftwatch run` took it first
            except OSError as exc:
                log.warning("could not stage a file (%s); it stays in the inbox", exc.strerror or exc)
            self.tracker.forget(f.name)
        return moved

    def _staged_count(self) -> int:
        if not self.staging.is_dir():
            return 0
        return sum(1 for _ in list_inbox(self.staging))

    # --- batches ----------------------------------------------------------------------
    def _warm_up(self, stack: contextlib.ExitStack) -> None:
        """Give the watcher its Prefect server for its lifetime, before the first batch.

        ``PREFECT_API_URL`` set: batches are flow runs there. Otherwise a local server
        (:func:`flows.runners.prefect_api`, ``[prefect] port``) is started (or a running one
        reused) and its UI address printed, so a lab lead can follow the batches in the
        Prefect UI; it stops after the watcher (Ctrl-C) and dies with it (kill -9).
        ``ConfigError`` (exit 2) when no server can be had.
        """
        if self._run_batch != self._run_flow:
            return
        from flows.batch import import_first_use
        from flows.runners import prefect_api

        settings = self.config.prefect
        stack.enter_context(prefect_api(settings.port, settings.start_timeout_seconds, announce=self._print))
        import_first_use(template=self.template_path is not None)  # so the first batch does not pay them

    def _run_flow(self):
        from flows.pipeline import process_inbox
        from flows.runners import server_errors

        with server_errors():
            return process_inbox(str(self.staging), self.store, self.config_path, self.template_path)

    def _batch(self) -> None:
        n = self._staged_count()
        if n == 0:
            return
        t0 = time.perf_counter()
        self.batches += 1
        try:
            summary = self._run_batch()
        except Exception as exc:  # the whole batch failed; its files wait in the staging folder
            delay = RETRY_SECONDS[min(self._failures, len(RETRY_SECONDS) - 1)]
            self._failures += 1
            self._next_try = time.monotonic() + delay
            reason = str(exc).splitlines()[0][:200] if str(exc) else ""
            self._print(f"batch {self.batches}: {n} files: FAILED ({type(exc).__name__}: {reason}); "
                        f"retrying in {delay:.0f} s")
            log.debug("batch failed", exc_info=True)
            return
        self._failures = 0
        self._print(self._describe(summary, time.perf_counter() - t0))

    def _describe(self, s, seconds: float) -> str:
        line = (f"batch {self.batches}: {s.files} files: {s.stored} stored, {s.duplicates} duplicates, "
                f"{len(s.quarantined)} quarantined; {s.samples} samples, {len(s.flagged_samples)} flagged; "
                f"{seconds:.1f} s")
        if s.quarantined and self.config.privacy.show_patient_ids:
            line += " [quarantined: " + ", ".join(q.name for q in s.quarantined) + "]"
        return line

    def _print(self, text: str) -> None:
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        print(f"{stamp} {text}", file=self.out, flush=True)

    # --- loop -------------------------------------------------------------------------
    def _wait(self, timeout: float) -> None:
        """Sleep until an event, a stop request or ``timeout``; note renames seen meanwhile."""
        end = time.monotonic() + timeout
        while not self.stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                kind, rel = self.wake.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            self._note(kind, rel)
            # Drain the burst (a slow writer makes one event per write) before rescanning.
            while True:
                try:
                    kind, rel = self.wake.get_nowait()
                except queue.Empty:
                    break
                self._note(kind, rel)
            return

    def _note(self, kind: str, rel: str) -> None:
        """Tell the tracker what an event says about a file's completeness."""
        if not rel or is_temporary(rel):
            return
        if kind == "renamed":
            self.tracker.mark_renamed(rel)
        elif kind == "written":
            self.tracker.mark_written(rel)
        elif kind == "closed":
            self.tracker.mark_closed(rel)

    def run(self) -> None:
        with contextlib.ExitStack() as stack:
            # Held for the watcher's life: `graftwatch run` leaves our staged files alone.
            stack.enter_context(hold_staging(self.inbox))
            self._warm_up(stack)
            self._watch()

    def _watch(self) -> None:
        poll = max(0.1, min(self.config.inbox.poll_seconds, self.config.inbox.stable_seconds or 1.0))
        observer = _start_observer(self.inbox, _Events(self.inbox, self.wake))
        mode = "file events + rescan" if observer else "polling"
        self._print(f"watching {self.inbox} ({mode} every {poll:g} s; files ready after "
                    f"{self.config.inbox.stable_seconds:g} s unchanged); Ctrl-C stops")
        try:
            # Leftovers of a killed watcher first, then whatever is already complete.
            self._batch()
            first_ready: float | None = None
            last_new: float = 0.0
            while not self.stop.is_set():
                ready = self._ready_files()
                now = time.monotonic()
                if ready:
                    self._stage(ready)
                    first_ready = first_ready or now
                    last_new = now
                if first_ready is not None and now >= self._next_try:
                    quiet = now - last_new >= DEBOUNCE_SECONDS
                    if quiet or now - first_ready >= MAX_BATCH_WAIT:
                        first_ready = None
                        self._batch()
                        if self._staged_count():  # failed: keep the batch pending
                            first_ready = time.monotonic()
                        continue
                # Debouncing: look again soon; otherwise wait for an event or the next poll.
                self._wait(DEBOUNCE_SECONDS / 2 if first_ready is not None else poll)
        finally:
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
        self._print(f"stopped after {self.batches} batches")


def _install_signal_handlers(stop: threading.Event) -> None:
    """SIGINT/SIGTERM request a stop; the current batch finishes so nothing is left half done."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        if not stop.is_set():
            print(f"graftwatch: {signal.Signals(signum).name} received, stopping after the current batch",
                  file=sys.stderr, flush=True)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def watch(inbox: Path, store: str, config_path: str | None, *, template_path: str | None = None,
          stop: threading.Event | None = None, out=None) -> int:
    """Watch ``inbox`` and process complete files into ``store`` until SIGINT/SIGTERM.

    Parameters
    ----------
    inbox, store, config_path : as for ``graftwatch run``.
    template_path : a Gating-ML/FlowJo template replacing the built-in panel (keyword only;
        the CLI does not expose it yet).
    stop : an Event that ends the loop when set (for embedding in another program or test).
    out : where batch lines go (default stdout).

    Returns 0 after a clean stop, 2 for a usage or configuration error.
    """
    inbox = Path(inbox)
    if not inbox.is_dir():
        print(f"graftwatch: inbox {inbox} is not a folder (create it, or pass --inbox DIR)", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(config_path)
        if template_path:
            from gating.templates import load_template

            load_template(Path(template_path))  # fail now, not at the first batch
    except ConfigError as exc:
        print(f"graftwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    watcher = Watcher(inbox, store, config, config_path, template_path, out=out)
    if stop is not None:
        watcher.stop = stop
    _install_signal_handlers(watcher.stop)
    try:
        watcher.run()
    except ConfigError as exc:  # no Prefect server could be had; no file was touched
        print(f"graftwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
