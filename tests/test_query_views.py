"""A store connection creates only the views its statements read (storage/views.py), and
sees every one of them all the same; ``graftwatch query`` imports no pyarrow/numpy
(issue 15, point 5).

The store holds two synthetic flow samples written as the pipeline writes them
(tests/test_views.py's ``_write``: counts out of 1000 live singlet lymphocytes) and a
chimerism row, so the contract views have rows to compare.
"""

from __future__ import annotations

import json

import pytest
from test_views import _gates, _write

from flows.query import run_query
from storage.cohort import cohort_params, create_cohort_views
from storage.store import Batch, Store, new_id, utcnow
from storage.views import CONTRACT_VIEWS, connect, relation_names

NAMES = {"cd3": "CD3+", "cd4": "CD4+CD8-", "cd8": "CD4-CD8+", "th1": "Th1", "treg": "Treg"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("query") / "store")
    _write(s, "S1", _gates(NAMES))
    _write(s, "S2", _gates(NAMES))
    b = Batch(s, "ingest")
    aid = new_id()
    b.add("analyses", [{"analysis_id": aid, "sample_id": "S1", "kind": "chimerism", "source_sha256": "x",
                        "template": None, "created_at": utcnow(), "review": False}])
    b.add("chimerism", [{"sample_id": "S1", "analysis_id": aid, "method": "str", "donor_id": "D1",
                         "donor_pct": 3.5, "detected": True, "n_markers": 4, "status": "ok"}])
    b.commit()
    return s


def _rows(con, name: str) -> list[tuple]:
    return sorted(con.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)


def test_every_relation_reads_the_same_on_a_lazy_connection(store):
    full = connect(store)
    names = relation_names(full)
    assert set(CONTRACT_VIEWS) | {"cohort_immune", "cohort_chimerism", "flow_populations"} <= set(names)
    assert not [n for n in names if n.startswith("_raw_")]
    # The views analysts read (each reads most of the others); one fresh connection each.
    for name in (*CONTRACT_VIEWS, "cohort_immune", "cohort_immune_samples", "cohort_chimerism"):
        assert _rows(connect(store), name) == _rows(full, name), name
    (cd3,) = connect(store).execute("select cd3_pct_lymph from IMMUNE_TIMELINE where sample_id = 'S1'").fetchone()
    assert cd3 == pytest.approx(60.0)  # 600 of 1000 lymphocytes
    assert _rows(connect(store), "chimerism_timeline")[0][8] == 3.5


def test_connection_creates_only_what_a_statement_reads(store):
    con = connect(store)
    assert con.execute("SELECT count(*) FROM immune_timeline").fetchone() == (2,)
    assert {"immune_timeline", "flow_populations_latest", "sample_timepoints", "patients_latest"} <= con.created
    assert not con.created & {"chimerism_timeline", "chimerism", "cohort_immune", "unlinked_samples", "str_peaks"}
    # The catalogue lists every relation, so a statement reading it gets them all.
    assert set(relation_names(con)) >= set(CONTRACT_VIEWS) | {"cohort_immune", "str_peaks"}


def test_a_view_the_caller_defines_is_not_replaced(store):
    con = connect(store)
    create_cohort_views(con, cohort_params(windows=("pre:-30..-1", "D10:0..20@10")))
    assert "cohort_sample_windows" in con.created and "sample_timepoints" in con.created
    assert con.execute("SELECT count(*) FROM cohort_immune").fetchone()[0] >= 0  # reads the caller's views
    assert [r[0] for r in con.execute('SELECT "window" FROM cohort_windows ORDER BY window_order').fetchall()] == [
        "pre", "D10"]


def test_query_command_output_and_errors(store, capsys):
    assert run_query("SELECT sample_id, cd4_pct_lymph FROM immune_timeline ORDER BY 1", str(store.base),
                     fmt="json") == 0
    assert json.loads(capsys.readouterr().out) == [{"sample_id": "S1", "cd4_pct_lymph": 40.0},
                                                   {"sample_id": "S2", "cd4_pct_lymph": 40.0}]
    # A view named only inside a string the SQL builds: the full connection answers.
    assert run_query("SELECT count(*) AS n FROM query_table('unlinked' || '_samples')", str(store.base),
                     fmt="csv") == 0
    assert capsys.readouterr().out == "n\n0\n"
    assert run_query("SELECT * FROM no_such_view", str(store.base)) == 2
    err = capsys.readouterr().err
    assert "no_such_view" in err and all(v in err for v in CONTRACT_VIEWS)
