"""``graftwatch resolve``: the lab settles an identity conflict, explicitly and on record.

A file quarantined as an identity conflict (its sample_id already belongs to other bytes)
is brought back with one of two answers, written to the store's ``identity_decisions``
(keyed by the file's sha256, so the answer follows the bytes, whatever the file is
called) before the file goes back to the inbox:

* ``--sample-id ID`` (or ``--rename OLD=NEW`` per sample of an export): this file is
  another sample; its rows are stored under the given ID.
* ``--supersede``: this file replaces what is stored for its sample(s) (re-acquisition,
  corrected export). The earlier file's rows and analyses stay in the store (history);
  the views show the latest analysis.

The quarantine note is kept beside the file's old place as ``<note>.resolved.txt`` with the
decision appended, so the quarantine folder shows what was settled and how.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

from assays.errors import ConfigError
from flows.inbox import ERROR_SUFFIX, RESOLVED_SUFFIX

EXIT_OK, EXIT_USAGE = 0, 2


def _renames(args, file_ids: list[str]) -> dict[str, str]:
    renames: dict[str, str] = {}
    for item in args.rename or []:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ConfigError(f"--rename {item!r}: expected OLD=NEW (the sample ID in the file = the right one)")
        renames[old.strip()] = new.strip()
    if args.sample_id:
        if len(file_ids) != 1:
            raise ConfigError(f"--sample-id: this file holds {len(file_ids)} samples ({', '.join(file_ids[:6])}); "
                              "name each with --rename OLD=NEW")
        renames[file_ids[0]] = args.sample_id.strip()
    unknown = sorted(set(renames) - set(file_ids))
    if unknown:
        raise ConfigError(f"--rename {unknown[0]}=...: the file holds no sample {unknown[0]!r} "
                          f"(it holds {', '.join(file_ids[:6])})")
    return renames


def _file_sample_ids(path: Path) -> list[str]:
    """The sample IDs the file carries, as the run would read them (controls left out)."""
    from assays.detect import detect_kind
    from assays.errors import GraftwatchError
    from assays.fcs import read_fcs
    from flows.process import EXPORT_READERS

    try:
        kind = detect_kind(path)
        if kind == "fcs":
            return [read_fcs(path).sample_id]
        if kind in EXPORT_READERS:
            return EXPORT_READERS[kind].read(path, "").patient_sample_ids
    except GraftwatchError as exc:
        raise ConfigError(f"{path.name} cannot be read ({str(exc).splitlines()[0]}); fix the file first") from None
    raise ConfigError(f"{path.name}: only FCS files and STR/qPCR/ddPCR exports carry sample IDs to resolve")


def resolve(args) -> int:
    """Record the decision, return the file to the inbox; 0, or 2 with a one-line reason."""
    from assays.hashing import sha256_of
    from storage.store import Batch, Store, utcnow

    path = Path(args.file)
    inbox = Path(args.inbox)
    if not path.is_file():
        return _fail(f"{path}: no such file (give the quarantined file's path)")
    if not inbox.is_dir():
        return _fail(f"inbox {inbox} is not a folder")
    if not (args.sample_id or args.rename or args.supersede):
        return _fail("say what the file is: --sample-id ID, --rename OLD=NEW, or --supersede")
    if not (args.reason or "").strip():
        return _fail("--reason is required: a few words for the record (e.g. 'tube relabelled, re-acquired')")
    try:
        ids = _file_sample_ids(path)
        renames = _renames(args, ids)
    except ConfigError as exc:
        return _fail(str(exc))
    sha = sha256_of(path)
    now = utcnow()
    batch = Batch(Store(args.store), "identity")
    batch.add("identity_decisions", [{
        "source_sha256": sha, "source_name": path.name, "from_sample_id": sid, "to_sample_id": renames.get(sid, sid),
        "supersede": bool(args.supersede), "reason": args.reason.strip(), "decided_at": now,
    } for sid in ids])
    batch.n_files = 1
    batch.commit()
    target = inbox / path.name
    if target.exists():
        return _fail(f"{target} already exists in the inbox; move it away, then run this again")
    note = path.with_name(path.name + ERROR_SUFFIX)
    os.replace(path, target)
    if note.exists():
        what = (f"renamed {', '.join(f'{a} -> {b}' for a, b in renames.items())}" if renames else "")
        what = "; ".join(x for x in (what, "supersedes the stored file" if args.supersede else "") if x)
        with open(note, "a", encoding="utf-8") as fh:
            fh.write(f"\nResolved {dt.datetime.now().isoformat(timespec='seconds')}: {what} "
                     f"(reason: {args.reason.strip()}); the file went back to the inbox.\n")
        os.replace(note, note.with_name(note.name[: -len(ERROR_SUFFIX)] + RESOLVED_SUFFIX))
    print(f"recorded: {path.name} ({sha[:12]}) {', '.join(f'{a} -> {b}' for a, b in renames.items()) or ''}"
          f"{' supersedes the stored sample' if args.supersede else ''}; moved back to {target}; "
          "the next run stores it as decided")
    return EXIT_OK


def _fail(message: str) -> int:
    print(f"graftwatch: {message}", file=sys.stderr)
    return EXIT_USAGE
