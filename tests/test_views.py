"""immune_timeline on population names as other labs' templates spell them, read through the
roles gating writes (gating/roles.py -> flow_populations.role -> storage/views.py).

Synthetic gates: each population holds the first ``count`` of 5000 events; the rows are
made by ``gating.statistics.population_stats`` (what the pipeline writes) and committed with
``storage.store.Batch``. Expected percentages are the counts divided by the live-singlet-
lymphocyte count (1000). "Legacy" stores are written as before the role columns existed
(the three columns dropped from the Parquet) and read after ``flows.backfill``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os

import numpy as np
import pyarrow as pa
import pytest

from gating.compiled_strategy import GateMembership
from gating.qc import QcCheck, quadrant_check
from gating.statistics import population_stats
from storage.schemas import TABLES
from storage.store import Batch, Store, new_id, to_table, utcnow
from storage.views import connect

LYMPH = ("Lymphocytes", "Single Cells", "Single Cells", "Live")
N_EVENTS = 5000
ROLE_COLUMNS = ("role", "unresolved", "unresolved_reason")


def _memberships(populations: list[tuple[str, str, int]]) -> list[GateMembership]:
    """Gates ``(name, parent name, count)`` under the lymphocyte base chain (1000 events each)."""
    out, paths = [], {}
    parent_path: tuple[str, ...] = ()
    chain = [(name, None, 1000) for name in LYMPH] + populations
    for i, (name, parent, count) in enumerate(chain):
        if i < len(LYMPH):
            path = parent_path + (name,)
            parent_path, pp = path, path[:-1]
        else:
            pp = paths[parent]
            path = pp + (name,)
        paths[name] = path
        mask = np.zeros(N_EVENTS, bool)
        mask[:count] = True
        out.append(GateMembership(name, path, pp, mask, "PolygonGate"))
    return out


def _write(store: Store, sid: str, populations: list[tuple[str, str, int]], qc: list[QcCheck] = (),
           legacy: bool = False) -> None:
    """One flow sample as the pipeline stores it (``legacy``: as stored before roles existed)."""
    now, aid = utcnow(), new_id()
    pops = [dict(dataclasses.asdict(p), sample_id=sid, analysis_id=aid)
            for p in population_stats(_memberships(populations), N_EVENTS, None, list(qc))]
    b = Batch(store, "ingest")
    b.add("samples", [{"sample_id": sid, "assay": "flow", "source_sha256": sid, "source_name": f"{sid}.fcs",
                       "ingested_at": now, "n_events": N_EVENTS}])
    b.add("analyses", [{"analysis_id": aid, "sample_id": sid, "kind": "flow", "source_sha256": sid,
                        "template": "lab.wsp", "created_at": now, "review": not all(c.passed for c in qc)}])
    table = to_table("flow_populations", pops)
    qc_table = to_table("flow_qc", [dict(c.row(), sample_id=sid, analysis_id=aid) for c in qc])
    if legacy:
        table = table.drop_columns(list(ROLE_COLUMNS))
        qc_table = qc_table.drop_columns(["threshold", "message"])
    b.add("flow_populations", table)
    b.add("flow_qc", qc_table)
    b.add("sample_sheet", [{"sample_id": sid, "patient_id": "P1", "collection_date": dt.date(2026, 1, 5),
                            "specimen": "PB", "cell_fraction": "whole", "role": "post", "row_no": 0,
                            "ingested_at": now, "source_sha256": f"sheet-{sid}"}])
    b.n_files = 1
    b.commit()


def _read(store: Store, columns: str, legacy: bool) -> list[tuple]:
    if legacy:
        from flows.backfill import backfill_population_roles

        before = connect(store).execute(f"SELECT {columns} FROM immune_timeline").fetchall()
        assert before and all(v is None for v in before[0][:5]), "legacy rows have no roles before the backfill"
        assert backfill_population_roles(store) > 0
        assert backfill_population_roles(store) == 0  # once per store
    return connect(store).execute(f"SELECT {columns} FROM immune_timeline").fetchall()


COLUMNS = "cd3_pct_lymph, cd4_pct_lymph, cd8_pct_lymph, cd4_cd8_ratio, th1_pct_cd4, treg_pct_cd4"
SPELLINGS = [
    # the built-in panel's names
    {"cd3": "CD3+", "cd4": "CD4+CD8-", "cd8": "CD4-CD8+", "th1": "Th1", "treg": "Treg"},
    # Gating-ML ids
    {"cd3": "CD3_pos", "cd4": "CD4_pos_CD8_neg", "cd8": "CD4_neg_CD8_pos", "th1": "Th1", "treg": "Treg"},
    # FlowJo-style: one gate per marker inside CD3+, "T cells" suffixes, plural Tregs
    {"cd3": "CD3+ T cells", "cd4": "CD4+", "cd8": "CD8+", "th1": "Th1 cells", "treg": "Tregs"},
    {"cd3": "T cells", "cd4": "CD4 T cells", "cd8": "CD8 T cells", "th1": "Th1", "treg": "Treg"},
    # quadrant with the markers in the other order
    {"cd3": "CD3", "cd4": "CD8-CD4+", "cd8": "CD8+CD4-", "th1": "Th1", "treg": "Treg"},
]


def _gates(names: dict[str, str]) -> list[tuple[str, str, int]]:
    return [(names["cd3"], "Live", 600), (names["cd4"], names["cd3"], 400), (names["cd8"], names["cd3"], 160),
            (names["th1"], names["cd4"], 40), (names["treg"], names["cd4"], 20)]


@pytest.mark.parametrize("legacy", [False, True], ids=["roles", "legacy"])
@pytest.mark.parametrize("names", SPELLINGS)
def test_timeline_reads_lab_spellings(tmp_path, names, legacy):
    store = Store(tmp_path / "store")
    _write(store, "S1", _gates(names), legacy=legacy)
    assert _read(store, COLUMNS, legacy) == [(60.0, 40.0, 16.0, 2.5, 10.0, 5.0)]


def test_roles_are_data_the_view_does_not_read_names(tmp_path):
    """Gating decides: each role sits on exactly one row; the view reads that row whatever
    it is called (a row renamed after gating keeps its role and its value in the timeline)."""
    store = Store(tmp_path / "store")
    _write(store, "S1", _gates(SPELLINGS[0]))
    con = connect(store)
    roles = dict(con.execute("SELECT role, population FROM flow_populations WHERE role IS NOT NULL").fetchall())
    assert roles == {"lymphocytes": "Live", "cd3": "CD3+", "cd4": "CD4+CD8-", "cd8": "CD4-CD8+", "th1": "Th1",
                     "treg": "Treg"}
    table = store.read_table("flow_populations")
    renamed = table.set_column(table.schema.get_field_index("population"), "population",
                               pa.array([f"gate {i}" for i in range(table.num_rows)]))
    for f in store.files("flow_populations"):
        os.remove(f)
    store.write_table("flow_populations", renamed.cast(TABLES["flow_populations"]), new_id())
    got = connect(store).execute(f"SELECT {COLUMNS} FROM immune_timeline").fetchall()
    assert got == [(60.0, 40.0, 16.0, 2.5, 10.0, 5.0)]


def test_single_marker_gate_outside_cd3_is_not_cd4_t_cells(tmp_path):
    """A "CD4+" gate on all live cells (monocytes are CD4-dim) is not the CD4 T cells."""
    store = Store(tmp_path / "store")
    _write(store, "S1", [("CD3+", "Live", 600), ("CD4+", "Live", 450)])
    got = connect(store).execute(f"SELECT {COLUMNS} FROM immune_timeline").fetchall()
    assert got == [(60.0, None, None, None, None, None)]


@pytest.mark.parametrize("legacy", [False, True], ids=["roles", "legacy"])
def test_unresolved_split_is_null_and_says_why(tmp_path, legacy):
    """No CD4/CD8 split in the data (adaptive panel's unresolved quadrant): CD3 stays, the
    subsets are NULL, and review_reasons says why in words."""
    store = Store(tmp_path / "store")
    unresolved = quadrant_check("CD4", "CD8", "CD3+", "CD3+", "unresolved", 0.002, False)
    _write(store, "S1", _gates(SPELLINGS[0]), qc=[unresolved], legacy=legacy)
    got = _read(store, COLUMNS + ", review, review_reasons", legacy)
    assert got[0][:6] == (60.0, None, None, None, None, None)
    assert got[0][6] is True
    reason = got[0][7]
    if legacy:  # stored without a message: the check's name and value stand in
        assert reason.startswith("quadrant_CD4_CD8@CD3+:unresolved failed")
    else:
        assert reason == unresolved.message and "CD4/CD8 split not resolved in CD3+" in reason


def test_compare_stores_finds_a_changed_number_and_nothing_else(tmp_path):
    """storage.compare (used for the demo store before/after issue 16): same gates -> same
    rows whatever the ids and clock times; one count changed -> that relation differs."""
    from storage.compare import compare_stores

    gates = _gates(SPELLINGS[0])
    for name in ("a", "b"):
        _write(Store(tmp_path / name), "S1", gates)
    counts, diffs = compare_stores(str(tmp_path / "a"), str(tmp_path / "b"))
    assert diffs == [] and counts["immune_timeline"] == 1 and counts["flow_populations_latest"] == len(gates) + 4
    _write(Store(tmp_path / "c"), "S1", gates[:-1] + [(gates[-1][0], gates[-1][1], 21)])
    _counts, diffs = compare_stores(str(tmp_path / "a"), str(tmp_path / "c"))
    assert {d.relation for d in diffs} == {"immune_timeline", "flow_populations_latest"}
