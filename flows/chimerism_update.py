"""Recompute donor chimerism after new data, sheets or registries arrive.

Chimerism needs several files (the post sample, the recipient's pre-transplant
genotype, the donors' genotypes, the roles from the sample sheet), which arrive in
any order. After each run the quantification is redone from the committed raw
measurements; a sample gets a new analysis only when its results changed, so a
re-run adds no rows.
"""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace

from assays.records import DdpcrWell, PatientCycle, QpcrWell, SampleSheetRow, StrPeak
from flows.config import Config
from storage.store import Batch, Store, new_id, utcnow

log = logging.getLogger("graftwatch")

_LATEST_SOURCE = """
SELECT m.* FROM {table} m
JOIN (SELECT sample_id, arg_max(source_sha256, ingested_at) AS sha FROM samples
      WHERE assay = '{assay}' GROUP BY sample_id) s
  ON s.sample_id = m.sample_id AND s.sha = m.source_sha256
"""


def _records(con, cls, sql: str, params: list | None = None) -> list:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    wanted = [f.name for f in dataclasses.fields(cls)]
    return [cls(**{k: v for k, v in zip(cols, row) if k in wanted}) for row in cur.fetchall()]


def _fingerprint(results: list) -> tuple:
    def r(x):
        return None if x is None else round(float(x), 9)

    return tuple(sorted(
        (c.method, c.donor_id or "", r(c.donor_pct), r(c.ci_low), r(c.ci_high), r(c.lod_pct),
         c.detected, c.n_markers, c.status or "") for c in results
    ))


def _plate_inputs(con, table: str, assay: str, cls, post_ids: set[str]):
    """Per plate (source file) holding post samples: its own wells, plus the wells of
    reference samples (recipient pre, donors) that are not on it, from their latest plate.

    Standards, NTCs and blanks only ever come from the plate itself: a plate's
    calibration must not change when an unrelated plate arrives later.
    """
    latest = _records(con, cls, _LATEST_SOURCE.format(table=table, assay=assay))
    plates = con.execute(
        f"""SELECT m.source_sha256, max(s.ingested_at) AS stored_at FROM {table} m
            JOIN samples s ON s.source_sha256 = m.source_sha256 AND s.sample_id = m.sample_id
            GROUP BY 1 ORDER BY stored_at, 1"""
    ).fetchall()
    for sha, _ in plates:
        wells = _records(con, cls, f"SELECT * FROM {table} WHERE source_sha256 = ?", [sha])
        on_plate = {w.sample_id for w in wells}
        if not on_plate & post_ids:
            continue
        borrowed = [w for w in latest if w.sample_id not in on_plate and w.sample_id not in post_ids]
        yield on_plate & post_ids, wells + borrowed


def update_chimerism(store: Store, config: Config) -> int:
    """Quantify every post sample with the data now stored; returns result rows written."""
    from gating.chimerism import ChimerismConfig, quantify_chimerism
    from storage.views import connect

    con = connect(store)
    sheet = _records(con, SampleSheetRow, "SELECT * FROM sheet_latest")
    if not any(r.role == "post" for r in sheet):
        return 0
    registry = _records(con, PatientCycle, "SELECT * FROM patients_latest")
    post_ids = {r.sample_id for r in sheet if r.role == "post"}
    cfg = ChimerismConfig(
        reference_genes=tuple(config.chimerism.reference_genes),
        str_lod_pct=config.chimerism.str_lod_pct,
        qpcr_lod_pct=config.chimerism.qpcr_lod_pct or None,  # 0 = no floor
    )
    markers, results = [], []
    peaks = _records(con, StrPeak, _LATEST_SOURCE.format(table="str_peaks", assay="str"))
    if peaks:
        m, r = quantify_chimerism(sheet, registry, peaks, [], [], cfg)
        markers += m
        results += r
    # qPCR and ddPCR are quantified plate by plate; a post sample on several plates
    # takes the result of its latest plate.
    for table, assay, cls, slot in (("qpcr_wells", "qpcr", QpcrWell, 1), ("ddpcr_wells", "ddpcr", DdpcrWell, 2)):
        chosen_m: dict[str, list] = {}
        chosen_r: dict[str, list] = {}
        for posts, wells in _plate_inputs(con, table, assay, cls, post_ids):
            args: list[list] = [[], [], []]
            args[slot] = wells
            m, r = quantify_chimerism(sheet, registry, *args, cfg)
            for sid in posts:
                chosen_m[sid] = [x for x in m if x.sample_id == sid]
                chosen_r[sid] = [x for x in r if x.sample_id == sid]
        markers += [x for v in chosen_m.values() for x in v]
        results += [x for v in chosen_r.values() for x in v]
    if not results:
        return 0
    stored_rows = con.execute(
        "SELECT c.* FROM chimerism c JOIN latest_analyses a USING (analysis_id, sample_id) WHERE a.kind = 'chimerism'"
    ).fetchall()
    cols = [d[0] for d in con.description]
    previous: dict[str, list] = {}
    for row in stored_rows:
        rec = dict(zip(cols, row))
        previous.setdefault(rec["sample_id"], []).append(
            SimpleNamespace(**{k: rec.get(k) for k in
                               ("method", "donor_id", "donor_pct", "ci_low", "ci_high", "lod_pct", "detected", "n_markers", "status")})
        )
    by_sample: dict[str, list] = {}
    for res in results:
        by_sample.setdefault(res.sample_id, []).append(res)
    batch = Batch(store, "chimerism")
    now = utcnow()
    written = 0
    for sample_id, res in by_sample.items():
        if sample_id in previous and _fingerprint(previous[sample_id]) == _fingerprint(res):
            continue
        analysis_id = new_id()
        batch.add("analyses", [{"analysis_id": analysis_id, "sample_id": sample_id, "kind": "chimerism",
                                "template": None, "created_at": now, "review": False}])
        batch.add("chimerism", [dict(dataclasses.asdict(r), analysis_id=analysis_id) for r in res])
        batch.add("chimerism_markers", [dict(dataclasses.asdict(m), analysis_id=analysis_id)
                                        for m in markers if m.sample_id == sample_id])
        written += len(res)
    if not batch.empty:
        batch.commit()
    return written
