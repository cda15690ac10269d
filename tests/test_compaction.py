"""Compaction (storage/compaction.py): identical query results, exactly-once at every step.

Fast: synthetic batches written with ``storage.store.Batch`` (no Prefect, no FCS).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from storage.compaction import compact
from storage.schemas import TABLES
from storage.store import TMP_PREFIX, Batch, Store, new_id, to_table, utcnow
from storage.views import CONTRACT_VIEWS, connect

UTC = dt.timezone.utc


def _ingest_batch(store: Store, i: int) -> None:
    """One ingest chunk: a flow sample with its analysis, populations, log row and sheet row."""
    sid = f"S{i:03d}"
    now = utcnow()
    aid = new_id()
    b = Batch(store, "ingest")
    b.add("samples", [{"sample_id": sid, "assay": "flow", "source_sha256": f"sha{i}", "source_name": f"{sid}.fcs",
                       "ingested_at": now, "n_events": 1000 + i}])
    b.add("analyses", [{"analysis_id": aid, "sample_id": sid, "kind": "flow", "source_sha256": f"sha{i}",
                        "template": "t.xml", "created_at": now, "review": False}])
    b.add("flow_populations", [
        {"sample_id": sid, "analysis_id": aid, "population": pop, "path": path, "parent": parent,
         "count": c, "parent_count": 1000, "pct_of_parent": c / 10, "pct_of_lymphocytes": c / 8}
        for pop, path, parent, c in [("Lymphocytes", "/Lymphocytes", None, 800 + i),
                                     ("CD3+", "/Lymphocytes/CD3+", "Lymphocytes", 500 + i),
                                     ("CD4+CD8-", "/Lymphocytes/CD3+/CD4+CD8-", "CD3+", 300 + i),
                                     ("CD4-CD8+", "/Lymphocytes/CD3+/CD4-CD8+", "CD3+", 150 + i)]])
    b.add("ingest_log", [{"source_sha256": f"sha{i}", "source_name": f"{sid}.fcs", "assay": "fcs",
                          "status": "stored", "seen_at": now, "n_samples": 1}])
    b.add("sample_sheet", [{"sample_id": sid, "patient_id": f"P{i % 3}", "collection_date": dt.date(2024, 1, 1 + i % 28),
                            "specimen": "PB", "cell_fraction": "whole", "role": "post", "row_no": 0,
                            "ingested_at": now, "source_sha256": f"sheet{i}"}])
    b.n_files = 1
    b.commit()


def _old_month_batch(store: Store, i: int, month: str) -> None:
    """A batch written in an earlier month partition (data and commit)."""
    bid = new_id()
    sid = f"OLD{i}"
    rows = to_table("samples", [{"sample_id": sid, "assay": "str", "source_sha256": f"old{i}", "source_name": "x.txt",
                                 "ingested_at": dt.datetime(2023, 5, 1, tzinfo=UTC), "batch_id": bid}])
    store.write_table("samples", rows, bid, month=month)
    log_rows = to_table("ingest_log", [{"source_sha256": f"old{i}", "source_name": "x.txt", "assay": "str",
                                        "status": "stored", "seen_at": dt.datetime(2023, 5, 1, tzinfo=UTC),
                                        "batch_id": bid}])
    store.write_table("ingest_log", log_rows, bid, month=month)
    store.write_table("commits", to_table("commits", [{"batch_id": bid, "kind": "ingest",
                                                       "committed_at": dt.datetime(2023, 5, 1, tzinfo=UTC),
                                                       "n_files": 1}]), bid, month=month)


def _orphan(store: Store, tag: str, age_minutes: float) -> str:
    """Data files of a batch that never committed (a crash before its commit row)."""
    bid = new_id()
    path = store.write_table("samples", to_table("samples", [{"sample_id": f"ORPHAN-{tag}", "assay": "flow",
                                                              "batch_id": bid}]), bid)
    past = time.time() - age_minutes * 60
    os.utime(path, (past, past))
    return path


def _build(root: Path) -> Store:
    store = Store(root)
    for i in range(12):
        _ingest_batch(store, i)
    for i in range(3):
        _old_month_batch(store, i, "2023-05")
    reg = Batch(store, "ingest")
    reg.add("patients", [{"patient_id": f"P{k}", "cycle": 1, "mst_date": dt.date(2023, 12, 1), "donor_id": "D1",
                          "ingested_at": utcnow()} for k in range(3)])
    reg.commit()
    return store


def _snapshot(store: Store) -> dict[str, list]:
    """Every table (committed rows, batch_id left out) and contract view, sorted."""
    con = connect(store)
    out = {}
    for name in [t for t in TABLES if t != "commits"] + list(CONTRACT_VIEWS):
        cur = con.execute(f"SELECT * FROM {name}")
        cols = [d[0] for d in cur.description]
        keep = [i for i, c in enumerate(cols) if c != "batch_id"]
        out[name] = sorted((tuple(r[i] for i in keep) for r in cur.fetchall()), key=repr)
    return out


def _data_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if p.parent.parent.name != "commits")


def test_results_identical_and_files_merged(tmp_path):
    store = _build(tmp_path / "store")
    old_orphan = _orphan(store, "old", 120)
    young_orphan = _orphan(store, "young", 0)
    stale_tmp = Path(store.table_dir("samples")) / f"month={utcnow():%Y-%m}" / f"{TMP_PREFIX}dead.parquet"
    stale_tmp.write_bytes(b"half a file")
    past = time.time() - 7200
    os.utime(stale_tmp, (past, past))
    before = _snapshot(store)
    n_before = len(_data_files(tmp_path / "store"))

    seen_at_each_step = {}

    def hook(step):
        seen_at_each_step[step] = _snapshot(store)

    report = compact(store, orphan_minutes=60, settle_seconds=0, _hook=hook)
    assert set(seen_at_each_step) == {"merged", "consolidated", "switched", "deleted"}
    for step, snap in seen_at_each_step.items():
        assert snap == before, f"a reader after step {step!r} saw different rows"
    assert _snapshot(store) == before
    assert report.batches_merged == 16 and report.orphan_files_removed == 1 and report.tmp_files_removed == 1
    assert report.young_orphans_kept == 1
    assert not Path(old_orphan).exists() and Path(young_orphan).exists() and not stale_tmp.exists()
    # One file per table and month now (plus the young orphan, kept: it may be in flight).
    files = _data_files(tmp_path / "store")
    partitions = {(p.parent.parent.name, p.parent.name) for p in files}
    assert len(files) == len(partitions) + 1 < n_before
    assert report.files_after == len(files)
    commits = pq.read_table(store.table_dir("commits")).to_pylist()
    assert [c["kind"] for c in commits] == ["compaction"]

    # A second compaction with new small batches merges them into the merged files.
    for i in range(12, 15):
        _ingest_batch(store, i)
    before2 = _snapshot(store)
    report2 = compact(store, orphan_minutes=60, settle_seconds=0)
    assert report2.batches_merged == 4 and _snapshot(store) == before2
    assert len(_data_files(tmp_path / "store")) == len(partitions) + 1


@pytest.mark.parametrize("crash_after", ["merged", "consolidated", "switched"])
def test_crash_mid_compaction_keeps_results(tmp_path, crash_after):
    store = _build(tmp_path / "store")
    before = _snapshot(store)

    def crash(step):
        if step == crash_after:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        compact(store, settle_seconds=0, _hook=crash)
    assert _snapshot(store) == before  # whatever step it died at, readers see every row once
    # The next compaction (orphan age guard off) cleans up and still changes nothing visible.
    compact(store, orphan_minutes=0, settle_seconds=0)
    assert _snapshot(store) == before
    leftovers = [p for p in (tmp_path / "store").rglob("*") if p.name.startswith(TMP_PREFIX)]
    assert not leftovers
    con = connect(store)
    # Every data file holds committed rows only: no orphan is left behind.
    for table in [t for t in TABLES if t != "commits"]:
        raw, shown = con.execute(f"SELECT (SELECT count(*) FROM _raw_{table}), (SELECT count(*) FROM {table})").fetchone()
        assert raw == shown, table


def test_nothing_to_do_is_a_no_op(tmp_path):
    store = Store(tmp_path / "store")
    _ingest_batch(store, 1)
    before = sorted(p.name for p in (tmp_path / "store").rglob("*.parquet"))
    report = compact(store, settle_seconds=0)
    assert report.batches_merged == 0 and report.new_batch_id is None
    assert sorted(p.name for p in (tmp_path / "store").rglob("*.parquet")) == before
    compact(tmp_path / "empty-store", settle_seconds=0)  # an empty store is fine too


def test_copy_of_store_compacts_identically(tmp_path):
    """The store is plain files: a copy (backup) compacts to the same results."""
    store = _build(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    compact(store, settle_seconds=0)
    assert _snapshot(store) == _snapshot(Store(tmp_path / "b"))
