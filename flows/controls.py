"""Find the unstimulated control tube of each stimulated tube (sample sheet ``control_of``).

A control is looked up among this run's FCS files (by the sample_id in their TEXT
segment, read without loading events) and then among archived originals.
"""

from __future__ import annotations

import logging
from pathlib import Path

from assays.errors import InputError
from assays.fcs import sample_id_from, sniff, validate_structure
from flows.inbox import InboxFile
from storage.store import Store

log = logging.getLogger("graftwatch")


def _fcs_sample_ids(files: list[InboxFile]) -> dict[str, Path]:
    found = {}
    for f in files:
        if f.refused:
            continue
        try:
            with open(f.path, "rb") as fh:
                if not sniff(fh.read(6)):
                    continue
            _, text = validate_structure(f.path)
        except (InputError, OSError):
            continue  # the file's own processing reports the problem
        found[sample_id_from(text, f.path.name)] = f.path
    return found


def find_controls(store: Store, inbox: Path, files: list[InboxFile]) -> dict[str, Path]:
    """``{stimulated sample_id: path of its control tube}`` for every control named in the sheets."""
    from storage.views import connect

    con = connect(store)
    pairs = con.execute(
        "SELECT sample_id, control_of FROM sheet_latest WHERE control_of IS NOT NULL"
    ).fetchall()
    if not pairs:
        return {}
    in_run = _fcs_sample_ids(files)
    archived = dict(con.execute(
        """SELECT s.sample_id, l.archived_as FROM samples s
           JOIN ingest_log l ON l.source_sha256 = s.source_sha256 AND l.status = 'stored'
           WHERE s.assay = 'flow' AND l.archived_as IS NOT NULL"""
    ).fetchall())
    out = {}
    for control_id, stimulated_id in pairs:
        path = in_run.get(control_id) or (Path(archived[control_id]) if control_id in archived else None)
        if path is not None and path.exists():
            out[stimulated_id] = path
        else:
            log.info("control tube %s not found; cytokine gates use the sample's own negatives", control_id)
    return out
