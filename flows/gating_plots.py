"""Writes the gating pictures beside the store (drawing: :mod:`reports.gating_pictures`).

Orchestration: joins the gating evaluator's coordinates (``gating.sample_gating.sample_columns``,
so pictures and stored numbers come from one channel lookup and one compensation) to the
drawing, writes the PNG atomically, and re-draws a stored analysis from its Gating-ML and
archived original. A drawing problem never fails a run: :func:`write_gating_png` logs a
warning (no sample id: ids carry patient ids) and returns None.
"""

from __future__ import annotations

import io
import logging
import os
import uuid
from pathlib import Path

from gating.sample_gating import sample_columns
from reports.gating_pictures import PICTURES_DIR, picture_path, render_gating_png

log = logging.getLogger("graftwatch")

__all__ = ["render_picture", "write_gating_png", "render_stored_picture", "picture_path", "PICTURES_DIR"]


def render_picture(sample, strategy, memberships, names: dict[str, str] | None = None) -> bytes:
    """The gating picture of ``sample`` (see :func:`reports.gating_pictures.render_gating_png`)."""
    return render_gating_png(sample, strategy, memberships, names,
                             lambda rows: sample_columns(strategy, sample, rows))


def write_gating_png(store_root: str, sample, strategy, memberships, names: dict[str, str] | None,
                     analysis_id: str) -> Path | None:
    """Render and atomically write the picture of one analysis; None (and a warning) on failure.

    The file is written to a temporary name and renamed, so the report never links a
    half-written picture. Failures are logged without the sample id (ids carry patient
    ids, DESIGN.md) and never raised: a picture is a convenience, the numbers are stored.
    """
    try:
        path = picture_path(store_root, sample.sample_id, analysis_id)
        png = render_picture(sample, strategy, memberships, names)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
        tmp.write_bytes(png)
        os.replace(tmp, path)
        return path
    except Exception as exc:
        log.warning("gating picture not written (%s: %s)", type(exc).__name__, exc)
        return None


def render_stored_picture(store_root: str, sample_id: str, analysis_id: str, con=None) -> Path | None:
    """Re-draw the picture of a stored flow analysis from the store alone; None when it cannot.

    For analyses stored before pictures existed, or whose picture was lost: the exact gates
    are in ``flow_gates.gatingml`` (with ``population_ids`` for display names) and the
    original file is in the archive (``ingest_log.archived_as`` of the analysis's
    ``source_sha256``). The Gating-ML re-applied gives the stored counts (DESIGN.md), so the
    picture matches the numbers. Not possible when the template had no Gating-ML form
    (some FlowJo constructs) or the archived original is gone.
    """
    import json

    import flowkit as fk

    from assays.fcs import read_fcs
    from gating.sample_gating import apply_strategy
    from storage.store import Store
    from storage.views import connect

    con = con or connect(Store(store_root))
    row = con.execute(
        "SELECT g.gatingml, g.population_ids, a.source_sha256 FROM flow_gates g "
        "JOIN analyses a USING (analysis_id, sample_id) WHERE g.sample_id = ? AND g.analysis_id = ?",
        [sample_id, analysis_id],
    ).fetchone()
    if row is None or not row[0] or not row[2]:
        return None
    gatingml, population_ids, sha = row
    archived = con.execute(
        "SELECT archived_as FROM ingest_log WHERE source_sha256 = ? AND status = 'stored' "
        "AND archived_as IS NOT NULL ORDER BY seen_at DESC LIMIT 1",
        [sha],
    ).fetchone()
    if archived is None or not Path(archived[0]).is_file():
        return None
    try:
        strategy = fk.parse_gating_xml(io.BytesIO(gatingml.encode("utf-8")))
        sample = read_fcs(Path(archived[0]), sha)
        memberships = apply_strategy(strategy, sample)
    except Exception as exc:
        log.warning("stored gating could not be re-applied for a picture (%s: %s)", type(exc).__name__, exc)
        return None
    names = json.loads(population_ids) if population_ids else {}
    return write_gating_png(store_root, sample, strategy, memberships, names, analysis_id)
