"""End-to-end runs of the inbox flow on real reference files (issue 2).

Truth comes from the files' authors: the ISAC Gating-ML 2.0 compliance results and
FlowJo's own counts stored in each workspace's Population nodes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from defusedxml import ElementTree as ET

from conftest import query, run_pipeline

pytestmark = pytest.mark.reference


def _gml_truth(shared: Path) -> dict[str, int]:
    truth = {}
    for f in (shared / "fcs/gatingml2/truth").glob("Results_*.txt"):
        gate = f.stem[len("Results_"):]
        truth[gate] = sum(1 for line in f.read_text().split() if line.strip() == "1")
    return truth


def test_gatingml_compliance_counts_stored(shared_data, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(shared_data / "fcs/gatingml2/data1.fcs", inbox)
    summary = run_pipeline(inbox, tmp_path / "store", template=shared_data / "fcs/gatingml2/gml/gml_all_gates.xml")
    assert summary.stored == 1 and not summary.quarantined
    stored = dict(query(tmp_path / "store", "SELECT population, count FROM flow_populations"))
    truth = _gml_truth(shared_data)
    checked = [gate for gate in stored if gate in truth]
    assert len(checked) == len(stored) == 49  # every gate of gml_all_gates.xml has a truth file
    for gate in checked:
        assert stored[gate] == truth[gate], gate
    # The exact gates used are stored as Gating-ML that flowkit parses again.
    import flowkit as fk
    import io

    (gml,) = query(tmp_path / "store", "SELECT gatingml FROM flow_gates")[0:1]
    strategy = fk.parse_gating_xml(io.BytesIO(gml[0].encode()))
    assert len(strategy.get_gate_ids()) >= len(truth)
    assert (tmp_path / "archive").is_dir() and not any(inbox.iterdir())


def _flowjo_counts(wsp: Path) -> dict[str, int]:
    """FlowJo's counts for the sample (SampleList), not the group."""
    root = ET.parse(wsp).getroot()
    counts = {}
    for sample in root.iter("Sample"):
        for pop in sample.iter("Population"):
            counts[pop.get("name")] = int(pop.get("count"))
    return counts


@pytest.mark.parametrize(
    "wsp,fcs",
    [
        ("simple_diamond_example/simple_diamond_example_quad_gate.wsp", "simple_diamond_example/test_data_diamond_01.fcs"),
        ("simple_diamond_example/test_data_diamond_asinh_rect.wsp", "simple_diamond_example/test_data_diamond_01.fcs"),
        ("simple_diamond_example/test_data_diamond_asinh_rect2.wsp", "simple_diamond_example/test_data_diamond_01.fcs"),
        ("simple_diamond_example/test_data_diamond_biex_rect.wsp", "simple_diamond_example/test_data_diamond_01.fcs"),
        ("simple_line_example/single_ellipse_51_events.wsp", "simple_line_example/data_set_simple_line_100.fcs"),
    ],
)
def test_flowjo_workspace_counts(shared_data, tmp_path, wsp, fcs):
    base = shared_data / "fcs/flowkit"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(base / fcs, inbox)
    run_pipeline(inbox, tmp_path / "store", template=base / wsp)
    stored = dict(query(tmp_path / "store", "SELECT population, count FROM flow_populations"))
    expected = _flowjo_counts(base / wsp)
    assert expected
    for name, n in expected.items():
        assert stored[name] == n, name


def _make_truncated(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * 0.6)])


def test_bad_files_quarantined_good_stored(shared_data, tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    for f in (shared_data / "fcs/flowkit/noncompliant").glob("*.fcs"):
        shutil.copy(f, inbox)
    _make_truncated(shared_data / "fcs/flowkit/100715.fcs", inbox / "truncated.fcs")
    (inbox / "empty.fcs").write_bytes(b"")
    (inbox / "sub" / "notes.fcs").write_text("Patient notes, not cytometry\n")
    shutil.copy(shared_data / "fcs/gatingml2/data1.fcs", inbox / "sub")
    summary = run_pipeline(inbox, tmp_path / "store", template=shared_data / "fcs/gatingml2/gml/gml_all_gates.xml")
    assert summary.stored == 1
    assert len(summary.quarantined) == 5
    q = tmp_path / "quarantine"
    notes = sorted(q.glob("*.error.txt"))
    assert len(notes) == 5
    for note in notes:
        text = note.read_text()
        assert "Traceback" not in text and "Expected" in text and "What to do" in text
        assert (q / note.name[: -len(".error.txt")]).exists()  # the original sits beside it
    statuses = query(tmp_path / "store", "SELECT status, count(*) FROM ingest_log GROUP BY 1 ORDER BY 1")
    assert statuses == [("quarantined", 5), ("stored", 1)]
    assert not [p for p in inbox.rglob("*") if p.is_file()]


def test_duplicates_and_late_sheet(shared_data, tmp_path):
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    tmpl = shared_data / "fcs/gatingml2/gml/gml_all_gates.xml"
    shutil.copy(shared_data / "fcs/gatingml2/data1.fcs", inbox / "a.fcs")
    shutil.copy(shared_data / "fcs/gatingml2/data1.fcs", inbox / "a_copy.fcs")  # same bytes, other name
    s1 = run_pipeline(inbox, store, template=tmpl)
    assert (s1.stored, s1.duplicates) == (1, 1)
    n_rows = query(store, "SELECT count(*) FROM flow_populations")[0][0]
    shutil.copy(shared_data / "fcs/gatingml2/data1.fcs", inbox / "renamed_again.fcs")
    s2 = run_pipeline(inbox, store, template=tmpl)
    assert (s2.stored, s2.duplicates) == (0, 1)
    assert query(store, "SELECT count(*) FROM flow_populations")[0][0] == n_rows
    assert query(store, "SELECT count(*) FROM samples")[0][0] == 1
    assert [r[0] for r in query(store, "SELECT sample_id FROM unlinked_samples")] == ["Default Patient ID"]

    # The sheet and registry arrive later: the sample links with no reprocessing.
    (inbox / "sheet.csv").write_text(
        "Sample ID,Patient ID,Collection Date,Specimen,Cell Fraction,Role,Donor ID\n"
        "Default Patient ID,P01,2026-02-10,PB,whole,post,\n"
    )
    (inbox / "registry.csv").write_text("patient_id,cycle,mst_date,donor_id\nP01,1,2026-01-01,D1\nP01,2,2026-02-01,D2\n")
    n_analyses = query(store, "SELECT count(*) FROM analyses")[0][0]
    run_pipeline(inbox, store, template=tmpl)
    assert query(store, "SELECT count(*) FROM unlinked_samples")[0][0] == 0
    assert query(store, "SELECT count(*) FROM analyses")[0][0] == n_analyses
    row = query(store, "SELECT patient_id, days_post_mst, cycle FROM immune_timeline")
    assert row == [("P01", 40, 2)]


def test_cli_run_and_query(shared_data, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(shared_data / "fcs/gatingml2/data1.fcs", inbox)
    exe = [sys.executable, "-m", "flows.cli"]
    bad = subprocess.run(exe + ["run", "--inbox", str(tmp_path / "nope"), "--store", str(tmp_path / "s")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "nope" in bad.stderr
    bad_t = tmp_path / "t.xml"
    bad_t.write_text("<notgml/>")
    r = subprocess.run(exe + ["run", "--inbox", str(inbox), "--store", str(tmp_path / "s"), "--template", str(bad_t)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "t.xml" in r.stderr
    assert (inbox / "data1.fcs").exists()  # nothing moved on a usage error
    r = subprocess.run(exe + ["run", "--inbox", str(inbox), "--store", str(tmp_path / "s"),
                              "--template", str(shared_data / "fcs/gatingml2/gml/gml_all_gates.xml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    q = subprocess.run(exe + ["query", "SELECT count FROM flow_populations WHERE population = 'Rectangle1'",
                              "--store", str(tmp_path / "s"), "--format", "csv"], capture_output=True, text=True)
    assert q.returncode == 0
    truth = _gml_truth(shared_data)["Rectangle1"]
    assert q.stdout.split() == ["count", str(truth)]
    j = subprocess.run(exe + ["query", "SELECT 1 AS x FROM nothing_here", "--store", str(tmp_path / "s")],
                       capture_output=True, text=True)
    assert j.returncode == 2 and "immune_timeline" in j.stderr


def test_real_panel_100715_through_the_default_panel(shared_data, tmp_path):
    """100715.fcs (real FACSAria T-cell panel, no cytokines) on the built-in adaptive panel.

    CD3+ is plausible; CD4 and CD8 show no split in this file (see test_adaptive_panel), so
    the sample is flagged for review and its CD4/CD8 subsets are NULL, not an invented ratio.
    """
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(shared_data / "fcs/flowkit/100715.fcs", inbox)
    summary = run_pipeline(inbox, tmp_path / "store")
    assert summary.stored == 1 and summary.flagged_samples == ["100715"]
    (row,) = query(tmp_path / "store", """SELECT cd3_pct_lymph, cd4_pct_lymph, cd8_pct_lymph, cd4_cd8_ratio,
                                                 th1_pct_cd4, treg_pct_cd4 FROM immune_timeline""")
    assert 40 <= row[0] <= 90
    assert row[1:] == (None, None, None, None, None)
    counts = dict(query(tmp_path / "store", "SELECT population, count FROM flow_populations"))
    assert counts["CD3+"] > 0 and "CD4+CD8-" in counts  # populations stay stored for review
