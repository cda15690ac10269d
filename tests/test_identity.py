"""Sample identity (issue 12): no file silently becomes another sample; the lab settles a
conflict explicitly (`graftwatch resolve`); archive folders and duplicate names; OS debris;
files still being written. Data: seeded simulator tubes (tests/ops_helpers.simulate) gated
by the small test template, so each tube's CD3 % is its own.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import run_pipeline
from ops_helpers import PYTHON, REPO, cli_env, query, simulate, write_template


@pytest.fixture(scope="module")
def tubes(tmp_path_factory):
    root = tmp_path_factory.mktemp("identity-src")
    a = simulate(root / "a", 1, n_events=4000, prefix="P1-D030", seed0=11)[0]   # sample P1-D03000
    b = simulate(root / "b", 1, n_events=4000, prefix="P1-D030", seed0=57)[0]   # same ID, other events
    return {"a": a, "b": b, "template": write_template(root / "t.xml")}


def _drop(inbox: Path, src: Path, name: str) -> Path:
    target = inbox / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, target)
    return target


def _cd3(store: Path, sid: str) -> list:
    return query(store, f"SELECT cd3_pct_lymph FROM immune_timeline WHERE sample_id = '{sid}'")


def _notes(root: Path) -> list[Path]:
    q = root / "quarantine"
    return sorted(q.glob("*.error.txt")) if q.is_dir() else []


def _resolve(root: Path, quarantined: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "flows.cli", "resolve", str(quarantined), "--inbox", str(root / "inbox"),
                           "--store", str(root / "store"), *args], cwd=REPO, env=cli_env(None),
                          capture_output=True, text=True)


def test_mislabelled_tube_is_held_back_not_stored_over_the_sample(tmp_path, tubes):
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    _drop(inbox, tubes["a"], "tube_a.fcs")
    run_pipeline(inbox, store, tubes["template"])
    before = _cd3(store, "P1-D03000")
    assert len(before) == 1

    _drop(inbox, tubes["b"], "tube_b.fcs")  # other bytes, other name, same SAMPLE ID
    summary = run_pipeline(inbox, store, tubes["template"])
    assert summary.stored == 0 and [q.name for q in summary.quarantined] == ["tube_b.fcs"]
    assert _cd3(store, "P1-D03000") == before  # the stored sample did not change
    (note,) = _notes(tmp_path)
    text = note.read_text()
    assert "P1-D03000" in text and "tube_a.fcs" in text and "tube_b.fcs" in text
    assert "graftwatch resolve" in text and "sha256" in text
    # nothing lost: the quarantined bytes are the dropped file's
    assert (tmp_path / "quarantine" / "tube_b.fcs").read_bytes() == tubes["b"].read_bytes()


def test_resolve_as_another_sample_stores_it_under_that_id(tmp_path, tubes):
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    _drop(inbox, tubes["a"], "tube_a.fcs")
    run_pipeline(inbox, store, tubes["template"])
    _drop(inbox, tubes["b"], "tube_b.fcs")
    run_pipeline(inbox, store, tubes["template"])
    r = _resolve(tmp_path, tmp_path / "quarantine" / "tube_b.fcs", "--sample-id", "P2-D030",
                 "--reason", "tube relabelled: belongs to patient P2")
    assert r.returncode == 0, r.stderr
    assert (inbox / "tube_b.fcs").exists() and not _notes(tmp_path)
    assert list((tmp_path / "quarantine").glob("*.resolved.txt"))
    summary = run_pipeline(inbox, store, tubes["template"])
    assert summary.stored == 1 and not summary.quarantined
    assert query(store, "SELECT sample_id FROM samples ORDER BY 1") == [("P1-D03000",), ("P2-D030",)]
    assert _cd3(store, "P2-D030") != _cd3(store, "P1-D03000")


def test_resolve_supersede_replaces_in_views_and_keeps_history(tmp_path, tubes):
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    _drop(inbox, tubes["a"], "tube_a.fcs")
    run_pipeline(inbox, store, tubes["template"])
    first = _cd3(store, "P1-D03000")
    _drop(inbox, tubes["b"], "tube_b_reacquired.fcs")
    run_pipeline(inbox, store, tubes["template"])
    r = _resolve(tmp_path, tmp_path / "quarantine" / "tube_b_reacquired.fcs", "--supersede",
                 "--reason", "re-acquired: clog in the first run")
    assert r.returncode == 0, r.stderr
    run_pipeline(inbox, store, tubes["template"])
    now = _cd3(store, "P1-D03000")
    assert len(now) == 1 and now != first
    assert query(store, "SELECT count(DISTINCT analysis_id) FROM flow_populations WHERE sample_id = 'P1-D03000'") \
        == [(2,)]  # the superseded analysis stays in history
    assert query(store, "SELECT reason, supersede FROM identity_decisions") == [("re-acquired: clog in the first run", True)]


def test_resolve_refuses_what_it_cannot_do(tmp_path, tubes):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    q = tmp_path / "quarantine"
    q.mkdir()
    shutil.copy(tubes["b"], q / "x.fcs")
    no_answer = _resolve(tmp_path, q / "x.fcs", "--reason", "why")
    assert no_answer.returncode == 2 and "--sample-id" in no_answer.stderr and "Traceback" not in no_answer.stderr
    bad_rename = _resolve(tmp_path, q / "x.fcs", "--rename", "NOPE=P9", "--reason", "why")
    assert bad_rename.returncode == 2 and "holds no sample 'NOPE'" in bad_rename.stderr
    assert (q / "x.fcs").exists() and not list(inbox.iterdir())  # nothing moved


def test_two_new_files_with_one_id_in_one_drop_are_both_held_back(tmp_path, tubes):
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    _drop(inbox, tubes["a"], "first.fcs")
    _drop(inbox, tubes["b"], "second.fcs")
    summary = run_pipeline(inbox, store, tubes["template"])
    assert summary.stored == 0 and sorted(q.name for q in summary.quarantined) == ["first.fcs", "second.fcs"]
    assert all("same drop" in n.read_text() for n in _notes(tmp_path))
    assert not (store / "samples").exists() or query(store, "SELECT count(*) FROM samples") == [(0,)]


def test_archive_keeps_inbox_folders_and_names_duplicates(tmp_path, tubes):
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    simulate(tmp_path / "src", 2, n_events=3000, prefix="ARC", seed0=300)
    _drop(inbox, tmp_path / "src" / "ARC00.fcs", "cytometer1/sdata.fcs")
    _drop(inbox, tmp_path / "src" / "ARC01.fcs", "cytometer2/sdata.fcs")
    run_pipeline(inbox, store, tubes["template"])
    archived = sorted(p.relative_to(tmp_path / "archive").as_posix() for p in (tmp_path / "archive").rglob("*.fcs"))
    assert [a.split("/", 2)[2] for a in archived] == ["cytometer1/sdata.fcs", "cytometer2/sdata.fcs"]

    _drop(inbox, tmp_path / "src" / "ARC00.fcs", "again/copy.fcs")  # same bytes as cytometer1/sdata.fcs
    summary = run_pipeline(inbox, store, tubes["template"])
    assert summary.duplicates == 1
    (dup,) = [p for p in (tmp_path / "archive").rglob("copy*.fcs")]
    assert dup.name == "copy__duplicate-of-sdata.fcs" and dup.parent.name == "again"


def test_os_debris_is_left_alone_without_notes(tmp_path, tubes):
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    _drop(inbox, tubes["a"], "run1/tube.fcs")
    debris = ["desktop.ini", "run1/Thumbs.db", ".DS_Store", "run1/._tube.fcs", "~$sheet.xlsx"]
    for name in debris:
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_bytes(b"\x00junk")
    summary = run_pipeline(inbox, store, tubes["template"])
    assert summary.stored == 1 and not summary.quarantined
    assert not _notes(tmp_path)
    assert all((inbox / name).exists() for name in debris)
    assert query(store, "SELECT count(*) FROM ingest_log") == [(1,)]


def test_a_name_that_is_not_utf8_is_stored_under_its_readable_name(tmp_path, tubes):
    """A Windows share writing Latin-1 bytes (b"M\\xfcller") gives a name Parquet cannot
    hold: it used to crash every run on that inbox with a UnicodeEncodeError traceback.
    The file is stored, archived and logged as "Müller.fcs" (its bytes read as cp1252),
    and the other file of the drop is stored beside it."""
    import os

    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    latin1 = Path(os.fsdecode(bytes(inbox) + b"/M\xfcller.fcs"))
    shutil.copy(tubes["a"], latin1)
    other = simulate(tmp_path / "src", 1, n_events=3000, prefix="UTF", seed0=5)[0]
    _drop(inbox, other, "other/tube.fcs")
    summary = run_pipeline(inbox, store, tubes["template"])
    assert summary.stored == 2 and not summary.quarantined
    assert sorted(r[0] for r in query(store, "SELECT source_name FROM ingest_log")) == ["Müller.fcs", "other/tube.fcs"]
    assert [p.name for p in (tmp_path / "archive").rglob("M*.fcs")] == ["Müller.fcs"]
    assert not any(inbox.rglob("*.fcs"))


def test_the_watcher_stages_a_not_utf8_name_under_its_readable_name(tmp_path, monkeypatch):
    import os

    from flows.config import Config
    from flows.watch import Watcher

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    Path(os.fsdecode(bytes(inbox) + b"/Gr\xf6\xdfe.csv")).write_text("a,b\n")
    config = Config()
    config.inbox.stable_seconds = 0.0
    watcher = Watcher(inbox, str(tmp_path / "store"), config, run_batch=lambda: None, out=open(os.devnull, "w"))
    ready = watcher._ready_files() or watcher._ready_files()  # the first look only learns the size
    assert [f.name for f in ready] == ["Größe.csv"]
    assert watcher._stage(ready) == 1
    assert [p.name for p in (tmp_path / ".graftwatch-ready").iterdir()] == ["Größe.csv"]
    assert not list(inbox.iterdir())


def test_names_near_the_length_limit_are_quarantined_and_archived_shortened(tmp_path, tubes):
    """A 250-byte name plus ".error.txt" or "__duplicate-of-..." is past the 255-byte
    limit of a file name: the note or the move failed with a traceback and the file stuck
    in the inbox, failing every run. Now the names are cut (the extension kept) and the
    note holds the whole original name."""
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    long_txt = "n" * 246 + ".txt"
    (inbox / "a").mkdir(parents=True)
    (inbox / long_txt).write_text("not a lab file\n")
    _drop(inbox, tubes["a"], "a/" + "t" * 240 + ".fcs")
    summary = run_pipeline(inbox, store, tubes["template"])
    assert summary.stored == 1 and len(summary.quarantined) == 1
    (note,) = _notes(tmp_path)
    assert len(note.name.encode()) <= 255 and f"File: {long_txt}" in note.read_text()
    assert note.name.endswith(".txt.error.txt")

    _drop(inbox, tubes["a"], "b/" + "c" * 240 + ".fcs")  # the same bytes again: a duplicate
    assert run_pipeline(inbox, store, tubes["template"]).duplicates == 1
    (dup,) = (tmp_path / "archive").rglob("c*.fcs")
    assert len(dup.name.encode()) <= 255 and dup.name.endswith(".fcs") and "__" in dup.name
    assert not any(p.is_file() for p in inbox.rglob("*"))


def test_a_file_still_being_written_goes_back_to_the_inbox(tmp_path, tubes):
    """The writer appends after the file was hashed (a paused copy resuming): neither its
    rows nor a note about its half are kept; the file waits in the inbox, complete."""
    from concurrent.futures import Future

    from flows.batch import prepare, process_files, run_inbox

    inbox = tmp_path / "inbox"
    half = tubes["a"].read_bytes()[: len(tubes["a"].read_bytes()) // 2]
    (inbox / "slow.fcs").parent.mkdir(parents=True)
    (inbox / "slow.fcs").write_bytes(half)
    inbox_p, store, config, setup = prepare(str(inbox), str(tmp_path / "store"), None, str(tubes["template"]))
    config.inbox.truncated_recheck_seconds = 0.0

    def submit(files, setup_, known) -> Future:
        outcomes = process_files(files, setup_, known)
        for f in files:  # the copy resumes while the batch works
            with open(f.path, "ab") as fh:
                fh.write(tubes["a"].read_bytes()[len(half):])
        fut: Future = Future()
        fut.set_result(outcomes)
        return fut

    summary = run_inbox(inbox_p, store, config, setup, submit)
    assert summary.returned == 1 and not summary.quarantined and summary.stored == 0
    assert (inbox / "slow.fcs").read_bytes() == tubes["a"].read_bytes()
    assert not _notes(tmp_path)
    assert run_pipeline(inbox, tmp_path / "store", tubes["template"]).stored == 1


def test_control_wells_are_never_identity_conflicts():
    from types import SimpleNamespace as N

    from assays.records import is_control_record

    assert all(is_control_record(N(sample_id=n)) for n in ("NTC", "ntc_2", "Allelic Ladder", "2800M", "blank", "STD3",
                                                             "01-Pos.ktr.__", "02-Neg.ktr.__", "16-Ladder__"))
    assert is_control_record(N(sample_id="P1-std", task="STANDARD"))
    assert not any(is_control_record(N(sample_id=n)) for n in ("HP01-D030", "007-D030", "P007", "Recipient pre"))


def test_str_export_with_one_name_for_several_samples_is_quarantined(tmp_path):
    """A GeneMapper peak report whose recipient, donor and post rows all carry one
    anonymised Sample File Name (seeded STR simulator, names replaced): never stored as
    one sample."""
    from simulators.str_sim import write_str_case

    case = write_str_case(tmp_path / "src", seed=5, donor_pcts=(30.0, 5.0))
    lines = case.path.read_text().splitlines()
    anon = [lines[0]] + ["anonymised.fsa\t" + line.split("\t", 1)[1] for line in lines[1:]]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "anon_peaks.txt").write_text("\n".join(anon) + "\n")
    summary = run_pipeline(inbox, tmp_path / "store")
    assert summary.stored == 0 and [q.name for q in summary.quarantined] == ["anon_peaks.txt"]
    (note,) = _notes(tmp_path)
    text = note.read_text()
    assert "4 samples that all carry the name 'anonymised'" in text and "own Sample Name" in text
    # the same export with its real names is one file of four samples
    (inbox / "peaks.txt").write_text(case.path.read_text())
    assert run_pipeline(inbox, tmp_path / "store").samples == 4


def test_identity_is_per_assay_and_references_rerun_on_plates_are_not_conflicts(tmp_path):
    """Seeded STR simulator, one patient: the same export written twice with other peak
    heights (seed) = a second plate. With the sheet naming the references, the recipient's
    pre-transplant and donor samples on the second plate are no conflict; its post samples
    are (a re-test must be settled). A flow tube of a sample that also has STR is no conflict."""
    from simulators.sheets import write_registry, write_sample_sheet
    from simulators.str_sim import write_str_case

    first = write_str_case(tmp_path / "a", seed=21, donor_pcts=(30.0,))
    second = write_str_case(tmp_path / "b", seed=22, donor_pcts=(30.0,))
    refs_only = tmp_path / "refs_plate.txt"  # the second plate's reference lanes only
    lines = second.path.read_text().splitlines()
    post_ids = {p.sample_id for p in second.posts}
    refs_only.write_text("\n".join([lines[0]] + [ln for ln in lines[1:]
                                                 if ln.split("\t")[0].removesuffix(".fsa") not in post_ids]) + "\n")
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    write_sample_sheet(inbox / "sheet.csv", first.sheet)
    write_registry(inbox / "registry.csv", first.registry)
    shutil.copy(first.path, inbox / "plate1.txt")
    assert run_pipeline(inbox, store).stored == 3

    shutil.copy(refs_only, inbox / "plate2_refs.txt")
    summary = run_pipeline(inbox, store)
    assert summary.stored == 1 and not summary.quarantined

    shutil.copy(second.path, inbox / "plate3_retest.txt")  # references and the post sample again
    summary = run_pipeline(inbox, store)
    assert [q.name for q in summary.quarantined] == ["plate3_retest.txt"]
    assert all(pid in summary.quarantined[0].reason for pid in post_ids)

    from simulators.tcell import simulate_tube

    post = sorted(post_ids)[0]
    simulate_tube(inbox / "tube.fcs", 5, n_events=3000, sample_id=post)  # the post sample's flow tube
    assert run_pipeline(inbox, store, write_template(tmp_path / "t.xml")).stored == 1
    assert query(store, f"SELECT assay FROM samples WHERE sample_id = '{post}' ORDER BY 1") == [("flow",), ("str",)]


def test_fixed_file_marks_its_old_note_resolved(tmp_path, tubes):
    """A technician drops a broken tube, then the fixed one under the same name: the old
    note becomes <name>.resolved.txt saying so; the quarantined original stays."""
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    data = tubes["a"].read_bytes()
    (inbox / "tube.fcs").write_bytes(data[: len(data) // 3])  # cut off
    run_pipeline(inbox, store, tubes["template"])
    assert [n.name for n in _notes(tmp_path)] == ["tube.fcs.error.txt"]
    (inbox / "tube.fcs").write_bytes(data)
    assert run_pipeline(inbox, store, tubes["template"]).stored == 1
    assert not _notes(tmp_path)
    resolved = (tmp_path / "quarantine" / "tube.fcs.resolved.txt").read_text()
    assert "Resolved" in resolved and "stored" in resolved
    assert (tmp_path / "quarantine" / "tube.fcs").exists()
