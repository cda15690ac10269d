"""Find the unstimulated control tube of each stimulated tube (sample sheet ``control_of``).

Control tubes in this run are recognised by the sample_id in their TEXT segment (read
without loading events) and gated first; stimulated tubes then read their control from
the archive, where every stored original lands.
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
        found[sample_id_from(text, Path(f.name).name)] = f.path  # the readable name, as read_fcs is given
    return found


def control_pairs(store: Store) -> dict[str, str]:
    """``{control sample_id: stimulated sample_id}`` from the committed sample sheets."""
    from storage.views import connect

    con = connect(store)
    return dict(con.execute("SELECT sample_id, control_of FROM sheet_latest WHERE control_of IS NOT NULL").fetchall())


def split_controls(files: list[InboxFile], pairs: dict[str, str]) -> tuple[list[InboxFile], list[InboxFile]]:
    """(control tubes, everything else) among ``files``; controls are gated first so that
    their stimulated tubes find them archived."""
    if not pairs:
        return [], list(files)
    ids = _fcs_sample_ids(files)
    control_paths = {ids[c] for c in pairs if c in ids}
    return [f for f in files if f.path in control_paths], [f for f in files if f.path not in control_paths]


def find_controls(store: Store, pairs: dict[str, str]) -> dict[str, Path]:
    """``{stimulated sample_id: archived path of its control tube}`` for stored controls."""
    from storage.views import connect

    if not pairs:
        return {}
    con = connect(store)
    archived = dict(con.execute(
        """SELECT s.sample_id, arg_max(l.archived_as, l.seen_at) FROM samples s
           JOIN ingest_log l ON l.source_sha256 = s.source_sha256 AND l.status = 'stored'
           WHERE s.assay = 'flow' AND l.archived_as IS NOT NULL GROUP BY s.sample_id"""
    ).fetchall())
    out = {}
    for control_id, stimulated_id in pairs.items():
        path = Path(archived[control_id]) if control_id in archived else None
        if path is not None and path.exists():
            out[stimulated_id] = path
        else:
            log.info("an unstimulated control named in the sheet is not stored; "
                     "cytokine gates use the sample's own negatives")
    return out
