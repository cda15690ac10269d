"""What an analyst meets at the terminal (issue 18): ``query``, ``report`` and ``cohort`` on a
mistyped store, values formatted for a lab person, a closed pipe, DuckDB's whole error, and
``--version``/``--help``.

The store holds one sample sheet only (no FCS: nothing here is about gating), written by the
real pipeline, so its dates, NULLs and keys are the contract's.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, run_pipeline

SHEET = ("sample_id,patient_id,collection_date,specimen,cell_fraction,role,donor_id\n"
         "AN-1,P-LONG-PATIENT-IDENTIFIER-0001,2025-01-03,PB,whole,recipient_pre,\n"
         "AN-2,P-LONG-PATIENT-IDENTIFIER-0001,2025-02-09,PB,whole,post,\n")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyst")
    inbox = root / "inbox"
    inbox.mkdir()
    (inbox / "sheet.csv").write_text(SHEET, encoding="utf-8")
    run_pipeline(inbox, root / "store")
    return root / "store"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("command", [
    ["query", "select 1"],
    ["report", "P1", "--out", "{tmp}/r.html"],
    ["cohort", "--out", "{tmp}/c.html"],
])
@pytest.mark.parametrize("which", ["missing", "empty-folder"])
def test_a_mistyped_store_is_exit_2_with_one_line(tmp_path, command, which):
    target = tmp_path / "nostore"
    if which == "empty-folder":
        target.mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in command] + ["--store", str(target)]
    r = _cli(*args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    expected = "no such folder" if which == "missing" else "is not a graftwatch store"
    assert expected in r.stderr and "--store folder given to `graftwatch run`" in r.stderr
    assert not list(tmp_path.glob("*.html"))  # nothing written for a store that is not one


def test_csv_and_json_values_as_a_lab_person_reads_them(store, capsys):
    from flows.query import run_query

    sql = ("SELECT sample_id, collection_date, NULL::DOUBLE AS missing, 1.0/3 AS third "
           "FROM sheet_latest ORDER BY sample_id")
    assert run_query(sql, str(store), "csv") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["sample_id,collection_date,missing,third",
                     "AN-1,2025-01-03,,0.3333333333333333",
                     "AN-2,2025-02-09,,0.3333333333333333"]
    assert run_query(sql, str(store), "json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[1] == {"sample_id": "AN-2", "collection_date": "2025-02-09", "missing": None,
                       "third": pytest.approx(1 / 3)}


def test_table_keeps_key_columns_whole_in_a_narrow_terminal(store, capsys, monkeypatch):
    from flows.query import run_query

    monkeypatch.setenv("COLUMNS", "60")
    sql = ("SELECT patient_id, sample_id, collection_date, repeat('a long free-text reason ', 6) AS note, "
           "NULL AS empty FROM sheet_latest ORDER BY sample_id")
    assert run_query(sql, str(store)) == 0
    out = capsys.readouterr().out
    assert "P-LONG-PATIENT-IDENTIFIER-0001" in out  # the key column is never abbreviated
    assert "2025-01-03" in out and "00:00:00" not in out
    assert "<NA>" not in out and "None" not in out and "NaT" not in out
    assert max(len(line) for line in out.splitlines()) <= 60


def test_a_failed_query_keeps_duckdbs_whole_hint(store, capsys):
    from flows.query import run_query

    assert run_query("SELECT sampel_id FROM samples", str(store)) == 2
    err = capsys.readouterr().err
    assert "sampel_id" in err and "sample_id" in err  # DuckDB's candidate binding is kept
    assert "Available tables and views:" in err and "immune_timeline" in err


def test_a_closed_pipe_is_not_a_traceback(store):
    code = ("import sys; from flows.query import run_query; "
            f"sys.exit(run_query('SELECT * FROM range(200000)', {str(store)!r}, 'csv'))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0
    assert first == b"range\n" and "Traceback" not in err and "BrokenPipe" not in err


def test_version_and_every_option_has_help():
    from flows.cli import build_parser

    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("graftwatch ")
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    missing = [f"{name} {opt.option_strings or opt.dest}"
               for name, sub in subparsers.choices.items() for opt in sub._actions
               if not opt.help and opt.dest != "help"]
    assert not missing, f"options without help text: {missing}"
    # `run --help` sends admins to the settings page, which must exist.
    assert "docs/configuration.md" in subparsers.choices["run"].format_help()
    assert (REPO / "docs" / "configuration.md").is_file()
