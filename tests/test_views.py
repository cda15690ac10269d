"""immune_timeline on population names as other labs' templates spell them (storage/views.py).

Synthetic rows written with ``storage.store.Batch``: the expected percentages are the
counts written here divided by the live-singlet-lymphocyte count (1000).
"""

from __future__ import annotations

import datetime as dt

import pytest

from storage.store import Batch, Store, new_id, utcnow
from storage.views import connect

LYMPH = ("Lymphocytes", "Single Cells", "Single Cells", "Live")


def _write(store: Store, sid: str, populations: list[tuple[str, str, int]]) -> None:
    """One flow sample whose gates are ``(name, parent name, count)`` under the lymphocyte base."""
    now, aid = utcnow(), new_id()
    rows, paths = [], {}
    parent_path = ""
    for name in LYMPH:  # the base chain, 1000 events each
        path = f"{parent_path}/{name}"
        rows.append((name, path, parent_path.rsplit("/", 1)[-1] or None, 1000))
        paths[name], parent_path = path, path
    for name, parent, count in populations:
        path = f"{paths[parent]}/{name}"
        paths[name] = path
        rows.append((name, path, parent, count))
    b = Batch(store, "ingest")
    b.add("samples", [{"sample_id": sid, "assay": "flow", "source_sha256": sid, "source_name": f"{sid}.fcs",
                       "ingested_at": now, "n_events": 5000}])
    b.add("analyses", [{"analysis_id": aid, "sample_id": sid, "kind": "flow", "source_sha256": sid,
                        "template": "lab.wsp", "created_at": now, "review": False}])
    b.add("flow_populations", [
        {"sample_id": sid, "analysis_id": aid, "population": name, "path": path, "parent": parent, "count": c,
         "parent_count": 1000, "pct_of_parent": None, "pct_of_lymphocytes": 100.0 * c / 1000}
        for name, path, parent, c in rows])
    b.add("sample_sheet", [{"sample_id": sid, "patient_id": "P1", "collection_date": dt.date(2026, 1, 5),
                            "specimen": "PB", "cell_fraction": "whole", "role": "post", "row_no": 0,
                            "ingested_at": now, "source_sha256": f"sheet-{sid}"}])
    b.n_files = 1
    b.commit()


COLUMNS = "cd3_pct_lymph, cd4_pct_lymph, cd8_pct_lymph, cd4_cd8_ratio, th1_pct_cd4, treg_pct_cd4"


@pytest.mark.parametrize("names", [
    # the built-in panel's names
    {"cd3": "CD3+", "cd4": "CD4+CD8-", "cd8": "CD4-CD8+", "th1": "Th1", "treg": "Treg"},
    # Gating-ML ids
    {"cd3": "CD3_pos", "cd4": "CD4_pos_CD8_neg", "cd8": "CD4_neg_CD8_pos", "th1": "Th1", "treg": "Treg"},
    # FlowJo-style: one gate per marker inside CD3+, "T cells" suffixes, plural Tregs
    {"cd3": "CD3+ T cells", "cd4": "CD4+", "cd8": "CD8+", "th1": "Th1 cells", "treg": "Tregs"},
    {"cd3": "T cells", "cd4": "CD4 T cells", "cd8": "CD8 T cells", "th1": "Th1", "treg": "Treg"},
    # quadrant with the markers in the other order
    {"cd3": "CD3", "cd4": "CD8-CD4+", "cd8": "CD8+CD4-", "th1": "Th1", "treg": "Treg"},
])
def test_timeline_reads_lab_spellings(tmp_path, names):
    store = Store(tmp_path / "store")
    _write(store, "S1", [(names["cd3"], "Live", 600), (names["cd4"], names["cd3"], 400),
                         (names["cd8"], names["cd3"], 160), (names["th1"], names["cd4"], 40),
                         (names["treg"], names["cd4"], 20)])
    got = connect(store).execute(f"SELECT {COLUMNS} FROM immune_timeline").fetchall()
    assert got == [(60.0, 40.0, 16.0, 2.5, 10.0, 5.0)]


def test_single_marker_gate_outside_cd3_is_not_cd4_t_cells(tmp_path):
    """A "CD4+" gate on all live cells (monocytes are CD4-dim) is not the CD4 T cells."""
    store = Store(tmp_path / "store")
    _write(store, "S1", [("CD3+", "Live", 600), ("CD4+", "Live", 450)])
    got = connect(store).execute(f"SELECT {COLUMNS} FROM immune_timeline").fetchall()
    assert got == [(60.0, None, None, None, None, None)]
