"""The demo inbox of `make run` (examples/build_demo.py, fixed seeds) end to end."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from conftest import REPO, query, run_pipeline

sys.path.insert(0, str(REPO / "examples"))
from build_demo import build  # noqa: E402


def _counts(store: Path) -> dict[str, int]:
    tables = ("samples", "flow_populations", "flow_markers", "flow_gates", "chimerism", "chimerism_markers",
              "sample_sheet", "patients", "analyses")
    return {t: query(store, f"SELECT count(*) FROM {t}")[0][0] for t in tables}


def test_demo_builds_identically_and_runs_twice_without_new_rows(tmp_path):
    build(tmp_path / "demo")
    committed = REPO / "examples" / "demo_inbox"
    for f in committed.rglob("*"):
        if f.is_file():
            assert (tmp_path / "demo" / f.relative_to(committed)).read_bytes() == f.read_bytes(), f.name
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    shutil.copytree(committed, inbox)
    s1 = run_pipeline(inbox, store)
    files = sum(1 for f in committed.rglob("*") if f.is_file())
    assert s1.stored == files == 29 and not s1.quarantined
    immune = query(store, "SELECT patient_id, days_post_mst, th1_pct_cd4 FROM immune_timeline ORDER BY 1, 2")
    # six patients x (pre, day 14, day 30); P01's unstimulated control tube left out
    assert len(immune) == 18 and {r[0] for r in immune} == {f"P0{i}" for i in range(1, 7)}
    chim = query(store, "SELECT sample_id, method, detected FROM chimerism_timeline")
    assert len(chim) == 16 and all(r[2] for r in chim)
    before = _counts(store)
    shutil.copytree(committed, inbox, dirs_exist_ok=True)
    s2 = run_pipeline(inbox, store)
    assert s2.duplicates == files and s2.stored == 0
    assert _counts(store) == before
