"""``graftwatch report PATIENT_ID --store DIR --out FILE.html``: write one patient's report.

Orchestration only: checks the store and the patient, reads (and, where missing, draws)
the gating pictures beside the store, asks :mod:`reports.patient` for the page and writes
it atomically. What the page shows is described in :mod:`reports.patient`.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

from reports.patient import build_report, known_patients

EXIT_OK, EXIT_USAGE = 0, 2
# Known patient ids are listed in the "not found" message only when this few (a long list
# of identifiers on a terminal helps nobody and leaks more than needed).
LIST_KNOWN_MAX = 5


def _fail(message: str) -> int:
    print(f"graftwatch: {message}", file=sys.stderr)
    return EXIT_USAGE


def picture_pngs(store_root: str, con, render_missing: bool = True):
    """``(sample_id, analysis_id) -> PNG bytes`` of the gating picture beside the store.

    A picture missing beside the store is drawn from the stored gates and the archived
    original first (``render_missing``); None when there is none (or the store is remote).
    """
    from flows.gating_plots import render_stored_picture
    from reports.gating_pictures import picture_path

    def png(sample_id: str, analysis_id: str) -> bytes | None:
        try:
            path = picture_path(store_root, sample_id, analysis_id)
        except ValueError:  # remote store: no pictures beside it
            return None
        if not path.is_file() and render_missing:
            render_stored_picture(store_root, sample_id, analysis_id, con)
        return path.read_bytes() if path.is_file() else None

    return png


def write_report(patient_id: str, store_root: str, out: Path) -> int:
    """Write the report of ``patient_id`` to ``out``; returns the CLI exit code.

    0: written. 2: the patient is unknown (a one-line reason on stderr naming how many
    patients the store knows, and their ids only when few). A path that is no store raises
    ``ConfigError`` (:meth:`storage.store.Store.existing`; exit 2 in the CLI).
    Gating pictures missing beside the store are re-drawn from the stored Gating-ML and
    the archived FCS where possible (:func:`flows.gating_plots.render_stored_picture`).
    The file is written to a temporary name and renamed, so a viewer never opens half.
    """
    from storage.store import Store
    from storage.views import connect

    con = connect(Store(store_root).existing())
    known = known_patients(con)
    if patient_id not in known:
        listed = f": {', '.join(known)}" if 0 < len(known) <= LIST_KNOWN_MAX else ""
        return _fail(f"no patient {patient_id!r} in the sample sheets or registries of this store "
                     f"({len(known)} patient{'s' if len(known) != 1 else ''} known{listed})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = build_report(con, patient_id, picture_pngs(store_root, con))
    tmp = out.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{out.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out} ({len(text.encode('utf-8')) / 1024:.0f} kB)")
    return EXIT_OK
