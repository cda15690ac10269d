"""Review is visible where values are read (issue 12 point 6): ``immune_timeline`` and
``chimerism_timeline`` carry ``review`` and ``review_reasons``; ``flow_qc`` rows carry their
threshold and a sentence.

Flow: two seeded simulator tubes through the real pipeline; 30k events pass every check,
5k events fail ``events_acquired`` (minimum 10,000, gating/qc.py). Chimerism: result rows as
gating/chimerism.py writes them, committed with ``storage.store.Batch``.
"""

from __future__ import annotations

import datetime as dt

from conftest import query, run_pipeline


def test_flagged_tube_reads_review_true_with_its_reason(tmp_path):
    from simulators.tcell import simulate_tube
    from storage.store import Store
    from storage.views import connect, review_reasons

    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    simulate_tube(inbox / "ok.fcs", seed=21, n_events=30_000, sample_id="REV-OK")
    simulate_tube(inbox / "few.fcs", seed=22, n_events=5_000, sample_id="REV-FEW")
    (inbox / "sheet.csv").write_text(
        "sample_id,patient_id,collection_date,specimen,cell_fraction,role,donor_id\n"
        "REV-OK,P9,2025-02-01,PB,whole,post,\nREV-FEW,P9,2025-03-01,PB,whole,post,\n", encoding="utf-8")
    run_pipeline(inbox, store)
    got = {r[0]: r[1:] for r in query(store, "SELECT sample_id, review, review_reasons, cd3_pct_lymph "
                                             "FROM immune_timeline")}
    assert got["REV-OK"][:2] == (False, None)
    review, reasons, cd3 = got["REV-FEW"]
    assert review is True
    assert "Only 5,000 events acquired (needs >= 10,000)." in reasons.split("; ")
    assert cd3 is not None  # a flag marks the values; it does not drop them
    # flow_qc: each row with its threshold and a sentence.
    row = query(store, "SELECT value, passed, threshold, message FROM flow_qc "
                       "WHERE sample_id = 'REV-FEW' AND \"check\" = 'events_acquired'")
    assert row == [(5000.0, False, 10000.0, "Only 5,000 events acquired (needs >= 10,000).")]
    assert query(store, "SELECT count(*) FROM flow_qc WHERE message IS NULL OR message = ''") == [(0,)]
    # The lead's run summary: (sample_id, kind, reason) of flagged samples.
    flagged = review_reasons(connect(Store(store)))
    assert {r[0] for r in flagged} == {"REV-FEW"}
    assert ("REV-FEW", "flow", "Only 5,000 events acquired (needs >= 10,000).") in flagged


def test_chimerism_review_from_status_and_marker_flags(tmp_path):
    from storage.store import Batch, Store, new_id, utcnow
    from storage.views import connect

    store = Store(tmp_path / "store")
    now = utcnow()
    b = Batch(store, "ingest")
    rows, markers, analyses = [], [], []
    cases = {  # sample -> (status, message, marker flag)
        "C-OK": ("ok", None, None),
        "C-ND": ("not_detected", "Donor marker not detected in any replicate.", "not_detected"),
        "C-NOINF": ("no_informative_marker", "No informative marker: none is positive in the donor.", None),
        "C-SD": ("ok", None, "replicate_sd_above_limit"),
    }
    for sid, (status, message, flag) in cases.items():
        aid = new_id()
        analyses.append({"analysis_id": aid, "sample_id": sid, "kind": "chimerism", "created_at": now,
                         "review": False})
        rows.append({"sample_id": sid, "analysis_id": aid, "method": "qpcr", "donor_id": "D1",
                     "donor_pct": None if status == "no_informative_marker" else 2.0, "detected": status == "ok",
                     "n_markers": 1, "status": status, "message": message})
        markers.append({"sample_id": sid, "analysis_id": aid, "method": "qpcr", "marker": "S04",
                        "informative_type": "informative", "donor_pct": 2.0, "used": True, "donor_id": "D1",
                        "flag": flag})
        b.add("sample_sheet", [{"sample_id": sid, "patient_id": "P1", "collection_date": dt.date(2025, 2, 1),
                                "role": "post", "row_no": 0, "ingested_at": now, "source_sha256": "s"}])
    b.add("analyses", analyses)
    b.add("chimerism", rows)
    b.add("chimerism_markers", markers)
    b.commit()
    got = dict((r[0], r[1:]) for r in connect(store).execute(
        "SELECT sample_id, review, review_reasons FROM chimerism_timeline").fetchall())
    assert got["C-OK"] == (False, None)
    assert got["C-ND"] == (False, None)  # not detected is a result, not a problem
    assert got["C-NOINF"] == (True, "No informative marker: none is positive in the donor.")
    assert got["C-SD"] == (True, "QPCR marker S04: replicate Ct values spread more than the allowed SD")


def test_tube_too_small_to_gate_reads_null_not_a_percentage(tmp_path):
    """A seeded simulated tube of 60 events (simulators.tcell, seed 7): no gate can be placed
    on so few events, so CD3 and every subset read NULL, flagged with the reason, instead of
    a percentage of a handful of events."""
    from conftest import query, run_pipeline
    from simulators.tcell import simulate_tube

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    simulate_tube(inbox / "tiny.fcs", 7, n_events=60, sample_id="TINY")
    assert run_pipeline(inbox, tmp_path / "store").stored == 1
    (row,) = query(tmp_path / "store", """SELECT cd3_pct_lymph, cd4_pct_lymph, cd8_pct_lymph, cd4_cd8_ratio,
                                                 review, review_reasons FROM immune_timeline""")
    assert row[:4] == (None, None, None, None)
    assert row[4] is True and row[5]
