"""The inbox and its sibling folders: listing, archiving, quarantining.

Layout (DESIGN.md, Folders): ``inbox/`` and beside it ``archive/YYYY/MM/`` and
``quarantine/``. Moves are renames within one filesystem, so a file is always in
exactly one of the folders.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

ERROR_SUFFIX = ".error.txt"


@dataclass(frozen=True)
class InboxFile:
    """A candidate file, or an entry refused before reading (symlink, escaping path)."""

    path: Path
    name: str  # path relative to the inbox, '/'-separated
    refused: str | None = None  # why it must be quarantined unread
    kind: str | None = None  # assays.detect kind, once sniffed


def file_signature(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of ``path``, or None when it is gone: what a writer changes."""
    try:
        st = path.lstat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def sibling(inbox: Path, name: str) -> Path:
    return Path(inbox).resolve().parent / name


# Names writers use while a file is incomplete (browsers, rsync, Office, copy tools).
IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".filepart",
                        ".swp", ".!sync", "~")


# What operating systems leave in shared folders (Windows folder settings and thumbnail
# caches; macOS's .DS_Store and ._ resource forks are hidden names already): not lab
# files, so they are left where they are, unread and without a quarantine note.
OS_DEBRIS = frozenset({"desktop.ini", "thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "icon\r"})


def is_os_debris(name: str) -> bool:
    """True for files the operating system leaves in folders (``desktop.ini``, ``Thumbs.db``, ...)."""
    return name.rsplit("/", 1)[-1].lower() in OS_DEBRIS


def is_in_progress(name: str) -> bool:
    """True for names never read: hidden names (``.DS_Store``, ``._x``), Office lock files
    (``~$x``), names a writer uses while the file is incomplete, and OS debris."""
    base = name.rsplit("/", 1)[-1]
    return base.startswith((".", "~$")) or base.lower().endswith(IN_PROGRESS_SUFFIXES) or is_os_debris(base)


def readable_name(name: str) -> str:
    """``name`` as text that Parquet, logs, notes and pictures accept.

    A name whose bytes are not UTF-8 (a Windows share or USB stick writing Latin-1, e.g.
    ``M\xfcller.fcs``) reaches Python with surrogate escapes, which every UTF-8 writer
    refuses. Its bytes are read as Windows-1252, the encoding such names almost always
    come from; a byte that code page leaves undefined becomes U+FFFD.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("cp1252", errors="replace")


def list_inbox(inbox: Path) -> list[InboxFile]:
    """Every regular file under ``inbox`` (any depth), oldest first.

    Hidden files and folders (``.name``: editors' and copy tools' temporaries) are left
    alone; symlinks are listed as refused rather than followed, so nothing outside
    the inbox is ever read. ``name`` is the readable name (``readable_name``); a claim
    renames the file to it, so later steps see one name.
    """
    root = Path(inbox).resolve()
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        links = [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
        for d in links:
            dirnames.remove(d)
        for fname in sorted(filenames) + links:
            if is_in_progress(fname):
                continue
            p = Path(dirpath) / fname
            rel = readable_name(p.relative_to(root).as_posix())
            if p.is_symlink():
                out.append(InboxFile(p, rel, "it is a symbolic link; graftwatch reads only real files inside the inbox"))
            elif p.is_file():
                out.append(InboxFile(p, rel))
    def mtime(f: InboxFile) -> float:
        try:
            return f.path.lstat().st_mtime
        except OSError:
            return 0.0
    return sorted(out, key=mtime)


NAME_MAX = 255  # bytes in one file name (ext4, xfs, btrfs, APFS, NTFS shares: 255)


def fit_name(name: str, reserve: int = 0) -> str:
    """``name`` cut to ``NAME_MAX - reserve`` bytes, keeping a short extension.

    Quarantine notes (``<name>.error.txt``) and archive names (``__duplicate-of-...``,
    ``__<tag>``) add to a name that may already be near the limit; unshortened, the
    rename fails and the file sticks in the inbox. The original name is kept in the
    quarantine note and in ``ingest_log``.
    """
    room = NAME_MAX - reserve
    if len(os.fsencode(name)) <= room:
        return name
    base, ext = os.path.splitext(name)
    if len(os.fsencode(ext)) > 16:
        base, ext = name, ""
    keep = room - len(os.fsencode(ext)) - 1
    cut = os.fsencode(base)[:keep].decode("utf-8", errors="ignore")  # never half a character
    return f"{cut}~{ext}"


def _free_name(folder: Path, name: str, tag: str, reserve: int = 0) -> Path:
    """``folder/name``, or ``folder/<stem>__<tag>[-i]<ext>`` when that is taken; every
    candidate leaves ``reserve`` bytes of the name free (see ``fit_name``)."""
    target = folder / fit_name(name, reserve)
    if not target.exists() and not target.is_symlink():
        return target
    stem, dot, ext = fit_name(name, reserve + len(f"__{tag}-999")).partition(".")
    for i in range(1000):
        candidate = folder / f"{stem}__{tag}{'' if i == 0 else f'-{i}'}{dot}{ext}"
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
    raise FileExistsError(f"no free name for {name} in {folder}")


def archive_target(inbox: Path, f: InboxFile, sha256: str, now: dt.datetime | None = None,
                   duplicate_of: str | None = None) -> Path:
    """Where ``f`` will be archived: ``archive/YYYY/MM/<its inbox-relative folder>/<name>``.

    The inbox folder is kept, so two ``sdata.txt`` from two instrument folders stay apart.
    ``duplicate_of``: the archived name of the stored file with the same bytes; the copy is
    archived as ``<stem>__duplicate-of-<that name>`` so its archive name says so. A name
    already taken in the folder gets the file's sha256 prefix.
    """
    now = now or dt.datetime.now()
    rel = Path(f.name)
    folder = sibling(inbox, "archive") / f"{now:%Y}" / f"{now:%m}" / rel.parent
    folder.mkdir(parents=True, exist_ok=True)
    name = Path(f.name).name
    if duplicate_of:
        stem, dot, ext = name.partition(".")
        name = f"{stem}__duplicate-of-{Path(duplicate_of).name}"
        if dot and not name.endswith(dot + ext):
            name += dot + ext
    return _free_name(folder, name, sha256[:12])


def archive(f: InboxFile, target: Path) -> Path:
    """Move an original to its archive place (never modified); returns where it went."""
    if target.exists():
        target = _free_name(target.parent, target.name, "again")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(f.path, target)
    return target


def quarantine(inbox: Path, f: InboxFile, message: str) -> Path:
    """Move a rejected original to ``quarantine/`` and write ``<name>.error.txt`` beside it."""
    folder = sibling(inbox, "quarantine")
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    # room for the note beside it and the note's temporary name: ".<name>.error.txt.tmp"
    target = _free_name(folder, Path(f.name).name, stamp, reserve=len(ERROR_SUFFIX) + len("..tmp"))
    note = target.with_name(target.name + ERROR_SUFFIX)
    tmp = note.with_name("." + note.name + ".tmp")
    # what is wrong comes first (the lab reads the first line); which file and when, after
    tmp.write_text(
        f"{message}\n\nFile: {f.name}\nQuarantined: {dt.datetime.now().isoformat(timespec='seconds')}\n",
        encoding="utf-8",
    )
    os.replace(tmp, note)
    os.replace(f.path, target)
    return target


RESOLVED_SUFFIX = ".resolved.txt"


def mark_resolved(inbox: Path, name: str, how: str) -> int:
    """A file named ``name`` was stored: notes of earlier quarantined files of that name
    become ``<file>.resolved.txt`` with ``how`` appended, so the quarantine folder shows
    which problems are settled. The quarantined originals stay. Returns the notes marked."""
    folder = sibling(inbox, "quarantine")
    if not folder.is_dir():
        return 0
    base = Path(name).name
    stem, dot, ext = base.partition(".")
    marked = 0
    for note in folder.glob(f"{stem}*{ERROR_SUFFIX}"):
        original = note.name[: -len(ERROR_SUFFIX)]
        o_stem, o_dot, o_ext = original.partition(".")
        # `x.fcs`, or `x__20260101T120000.fcs` (a second quarantined file of the same name)
        if original != base and not (o_ext == ext and o_stem.startswith(stem + "__")):
            continue
        with open(note, "a", encoding="utf-8") as fh:
            fh.write(f"\nResolved {dt.datetime.now().isoformat(timespec='seconds')}: {how}\n")
        os.replace(note, folder / (original + RESOLVED_SUFFIX))
        marked += 1
    return marked


# --- Claims: two runs on one inbox never process the same file -------------------------
#
# A run moves each file it is about to read into ``.graftwatch-claims/<run_id>/`` beside the
# inbox (an atomic rename: of two runs, exactly one wins) and holds an exclusive lock on
# ``<run_id>.lock`` while it lives. A claim folder whose lock can be taken belongs to a run
# that died (kill -9, power loss): its files go back to the inbox and are processed again;
# rows already committed for them make them duplicates, so nothing is stored twice.

CLAIMS = ".graftwatch-claims"
# Where `graftwatch watch` stages complete files for its next batch (beside the inbox),
# and the lock every live watcher holds shared while it runs.
STAGING = ".graftwatch-ready"
STAGING_LOCK = STAGING + ".lock"


class ClaimSession:
    """This run's claim folder and the lock that shows it is alive."""

    def __init__(self, inbox: Path, run_id: str):
        import fcntl

        self.inbox = Path(inbox).resolve()
        self.root = sibling(inbox, CLAIMS)
        self.dir = self.root / run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / f"{run_id}.lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)

    def claim(self, f: InboxFile) -> InboxFile | None:
        """Move ``f`` into this run's claim folder; None when another run took it first."""
        target = self.dir / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(f.path, target)
        except FileNotFoundError:
            return None
        return InboxFile(target, f.name, f.refused, f.kind)

    def close(self) -> None:
        """Return anything still claimed to the inbox (an interrupted or failed run), then
        release the claim. Files are never deleted: only empty folders are removed."""
        import fcntl
        import shutil

        _return_to_inbox(self.dir, self.inbox)
        shutil.rmtree(self.dir, ignore_errors=True)
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()
        try:
            os.unlink(self.root / f"{self.dir.name}.lock")
        except FileNotFoundError:
            pass


def _return_to_inbox(folder: Path, inbox: Path) -> int:
    """Move every file under ``folder`` back to the same place in ``inbox``; the count."""
    moved = 0
    for p in sorted(folder.rglob("*")):
        if p.is_file() or p.is_symlink():
            back = inbox / p.relative_to(folder)
            back.parent.mkdir(parents=True, exist_ok=True)
            if back.exists() or back.is_symlink():
                back = _free_name(back.parent, back.name, "recovered")
            os.replace(p, back)
            moved += 1
    return moved


def recover_stale_claims(inbox: Path) -> int:
    """Return files of dead runs' claim folders to the inbox; the count moved back."""
    import fcntl
    import shutil

    root = sibling(inbox, CLAIMS)
    if not root.is_dir():
        return 0
    moved = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        lock_path = root / f"{folder.name}.lock"
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its run is alive
            moved += _return_to_inbox(folder, Path(inbox))
            shutil.rmtree(folder, ignore_errors=True)
            fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            os.unlink(lock_path)
        except FileNotFoundError:
            pass
    return moved


def hold_staging(inbox: Path):
    """Open and share-lock the staging lock of ``inbox``; keep the returned file open
    while watching (the kernel releases the lock when the watcher dies, however)."""
    import fcntl

    fh = open(sibling(inbox, STAGING_LOCK), "a")
    fcntl.flock(fh, fcntl.LOCK_SH)
    return fh


def take_back_leftovers(inbox: Path) -> int:
    """Return to ``inbox`` what dead runs claimed and dead watchers staged; the count.

    Called by the inbox flow before it lists the inbox, so those files are processed like
    any inbox file (also when the inbox itself is empty).
    """
    return recover_stale_claims(inbox) + recover_abandoned_staging(inbox)


def recover_abandoned_staging(inbox: Path) -> int:
    """Return files a dead watcher staged (``.graftwatch-ready/``) to ``inbox``; the count.

    Only when no watcher holds the staging lock: a live watcher processes its own staged
    files. Without this, files staged by a watcher that was killed and never restarted
    would wait there unseen by ``graftwatch run``.
    """
    import fcntl

    inbox = Path(inbox).resolve()
    staging = sibling(inbox, STAGING)
    if inbox == staging.resolve() or not staging.is_dir():
        return 0
    with open(sibling(inbox, STAGING_LOCK), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # a watcher is alive
        try:
            return _return_to_inbox(staging, inbox)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
