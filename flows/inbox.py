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


def sibling(inbox: Path, name: str) -> Path:
    return Path(inbox).resolve().parent / name


def list_inbox(inbox: Path) -> list[InboxFile]:
    """Every regular file under ``inbox`` (any depth), oldest first.

    Hidden files and folders (``.name``: editors' and copy tools' temporaries) are left
    alone; symlinks are listed as refused rather than followed, so nothing outside
    the inbox is ever read.
    """
    root = Path(inbox).resolve()
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        links = [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
        for d in links:
            dirnames.remove(d)
        for fname in sorted(filenames) + links:
            if fname.startswith("."):
                continue
            p = Path(dirpath) / fname
            rel = p.relative_to(root).as_posix()
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


def _free_name(folder: Path, name: str, tag: str) -> Path:
    target = folder / name
    if not target.exists() and not target.is_symlink():
        return target
    stem, dot, ext = name.partition(".")
    for i in range(1000):
        candidate = folder / f"{stem}__{tag}{'' if i == 0 else f'-{i}'}{dot}{ext}"
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
    raise FileExistsError(f"no free name for {name} in {folder}")


def archive_target(inbox: Path, f: InboxFile, sha256: str, now: dt.datetime | None = None) -> Path:
    """Where ``f`` will be archived: ``archive/YYYY/MM/<name>`` (a free name)."""
    now = now or dt.datetime.now()
    folder = sibling(inbox, "archive") / f"{now:%Y}" / f"{now:%m}"
    folder.mkdir(parents=True, exist_ok=True)
    return _free_name(folder, f.path.name, sha256[:12])


def archive(f: InboxFile, target: Path) -> Path:
    """Move an original to its archive place (never modified); returns where it went."""
    if target.exists():
        target = _free_name(target.parent, target.name, "again")
    os.replace(f.path, target)
    return target


def quarantine(inbox: Path, f: InboxFile, message: str) -> Path:
    """Move a rejected original to ``quarantine/`` and write ``<name>.error.txt`` beside it."""
    folder = sibling(inbox, "quarantine")
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    target = _free_name(folder, f.path.name, stamp)
    note = target.with_name(target.name + ERROR_SUFFIX)
    tmp = note.with_name("." + note.name + ".tmp")
    tmp.write_text(
        f"File: {f.name}\nQuarantined: {dt.datetime.now().isoformat(timespec='seconds')}\n\n{message}\n",
        encoding="utf-8",
    )
    os.replace(tmp, note)
    os.replace(f.path, target)
    return target
