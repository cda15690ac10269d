"""Faults and hostile input: kill -9 at several points, concurrent runs, symlinks, fuzzing.

* ``graftwatch run`` (``python -m flows.cli run``) is started as a subprocess on ten files
  and SIGKILLed (its whole process group, like a power cut) at points chosen by watching
  the claim folder and the store; after each kill and after the final rerun every sample
  is stored exactly once and readers see no temporary file.
* Two runs started together on one inbox store each file once; a symlink is refused.
* Fuzz: mutated FCS HEADER/TEXT segments, sample sheets, registries and instrument
  exports go through ``flows.process.process_file`` directly (no Prefect): each mutant is
  stored or quarantined with a plain reason, within a time and memory bound.

The runs are one-shot runs as a technician starts them (no PREFECT_API_URL: the batch runs
in-process and ingest_log is the record). The claim, commit and archive code they exercise
is the same under a Prefect flow run; that a run with PREFECT_API_URL is a flow run on
record is ``test_empty_inbox_run_is_on_record`` here and ``test_local_server``'s, and
Ctrl-C under a Prefect-served watcher is ``test_watch``'s.
"""

from __future__ import annotations

import io
import random
import resource
import shutil
import signal
import time
from pathlib import Path

import pytest

from ops_helpers import (HANG_LIMIT, REPO, build_fcs, cli_env, fcs_parts, kill_group, query, replace_kw, shared_api_url,
                         simulate, start_cli, wait_for, write_template)

N_FILES = 10


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _check_store_invariants(store: Path) -> None:
    """What a reader may see at any time: each sample once, no temporary file listed."""
    if not (store / "commits").exists():
        return
    rows = query(store, "SELECT sample_id, count(*) FROM samples GROUP BY 1 HAVING count(*) > 1")
    assert rows == [], f"samples stored twice: {rows}"
    rows = query(store, "SELECT sample_id, count(DISTINCT analysis_id) FROM flow_populations GROUP BY 1 "
                        "HAVING count(DISTINCT analysis_id) > 1")
    assert rows == [], f"several analyses of one file: {rows}"
    from storage.store import Store

    s = Store(store)
    for table in ("samples", "flow_populations", "ingest_log", "commits"):
        assert not [f for f in s.files(table) if "/.tmp-" in f]


def _where_is_everything(root: Path, names: list[str]) -> dict[str, int]:
    """How many copies of each original exist across inbox, claims, archive, quarantine."""
    places = [root / "inbox", root / ".graftwatch-claims", root / "archive", root / "quarantine"]
    found = {n: 0 for n in names}
    for place in places:
        for p in _files(place):
            base = p.name.split("__")[0].removesuffix(".fcs") + ".fcs" if "__" in p.name else p.name
            if base in found:
                found[base] += 1
    return found


@pytest.fixture(scope="module")
def fcs_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-src")
    template = write_template(root / "template.xml")
    src = simulate(root / "src", N_FILES, n_events=60000, prefix="K")
    config = root / "graftwatch.toml"
    config.write_text("[inbox]\nchunk_files = 3\n")
    return {"template": template, "src": src, "config": config}


def _run_args(root: Path, setup) -> list[str]:
    return ["run", "--inbox", str(root / "inbox"), "--store", str(root / "store"),
            "--config", str(setup["config"]), "--template", str(setup["template"])]


def test_kill9_at_several_points_then_rerun_stores_each_sample_once(tmp_path, fcs_setup):
    root = tmp_path
    (root / "inbox").mkdir()
    for p in fcs_setup["src"]:
        shutil.copy(p, root / "inbox" / p.name)
    names = [p.name for p in fcs_setup["src"]]
    env = cli_env()
    claims = root / ".graftwatch-claims"
    commits = root / "store" / "commits"

    def n_commits() -> int:
        return len(_files(commits))

    # Each kill point: (what it means, condition watched before SIGKILL).
    points = [
        ("while starting up (0.5 s)", lambda: False, 0.5),
        ("files claimed, nothing committed", lambda: any(p.is_file() for p in _files(claims)), HANG_LIMIT),
        ("right after a chunk commit", None, HANG_LIMIT),
        ("half of the files archived", lambda: len(_files(root / "archive")) >= N_FILES // 2, HANG_LIMIT),
    ]
    killed_alive = []
    for label, cond, timeout in points:
        proc = start_cli(_run_args(root, fcs_setup), env, root / "run.log")
        if cond is None:
            start = n_commits()
            cond = (lambda s=start: n_commits() > s)
        wait_for(lambda c=cond: c() or proc.poll() is not None, timeout, 0.01)
        alive = proc.poll() is None
        kill_group(proc, signal.SIGKILL)
        proc.wait(HANG_LIMIT)
        killed_alive.append((label, alive))
        _check_store_invariants(root / "store")
        copies = _where_is_everything(root, names)
        assert all(c >= 1 for c in copies.values()), f"lost after kill {label!r}: {copies}"
    print("\nkill points (process still working when killed):", killed_alive)
    assert sum(alive for _, alive in killed_alive) >= 3

    proc = start_cli(_run_args(root, fcs_setup), env, root / "run.log")
    assert proc.wait(HANG_LIMIT) == 0, (root / "run.log").read_text(errors="replace")[-3000:]
    _check_store_invariants(root / "store")
    got = query(root / "store", "SELECT sample_id, count(*) FROM samples GROUP BY 1 ORDER BY 1")
    assert got == [(f"K{i:02d}", 1) for i in range(N_FILES)]
    assert query(root / "store", "SELECT count(DISTINCT sample_id) FROM flow_populations") == [(N_FILES,)]
    assert query(root / "store", "SELECT count(*) FROM ingest_log WHERE status = 'stored'") == [(N_FILES,)]
    assert not _files(root / "inbox") and not _files(claims) and not _files(root / "quarantine")
    archived = _files(root / "archive")
    assert sorted(p.name for p in archived) == sorted(names)  # every original kept, exactly once


def test_run_with_only_a_dead_runs_claims_processes_them(tmp_path, fcs_setup):
    """The inbox is empty but a killed run left a file in its claim folder: `graftwatch run`
    takes it back and stores it instead of answering "nothing to do" (found by the kill -9
    test once runs got fast enough to claim every file before the kill)."""
    root = tmp_path
    (root / "inbox").mkdir()
    src = fcs_setup["src"][0]
    dead = root / ".graftwatch-claims" / "20250101T000000000000-deadbeef"
    dead.mkdir(parents=True)
    shutil.copy(src, dead / src.name)
    proc = start_cli(_run_args(root, fcs_setup), cli_env(), root / "run.log")
    assert proc.wait(HANG_LIMIT) == 0, (root / "run.log").read_text(errors="replace")[-3000:]
    assert query(root / "store", "SELECT count(*) FROM samples") == [(1,)]
    assert not _files(root / ".graftwatch-claims") and [p.name for p in _files(root / "archive")] == [src.name]


def test_two_runs_at_once_and_symlinks_refused(tmp_path, fcs_setup):
    root = tmp_path
    inbox = root / "inbox"
    inbox.mkdir()
    for p in fcs_setup["src"]:
        shutil.copy(p, inbox / p.name)
    outside = root / "outside"
    outside.mkdir()
    secret = outside / "elsewhere.fcs"
    shutil.copy(fcs_setup["src"][0], secret)
    (inbox / "link.fcs").symlink_to(secret)
    (inbox / "linked-folder").symlink_to(outside, target_is_directory=True)
    env = cli_env()
    procs = [start_cli(_run_args(root, fcs_setup), env, root / f"run{i}.log") for i in range(2)]
    for i, proc in enumerate(procs):
        assert proc.wait(HANG_LIMIT) == 0, (root / f"run{i}.log").read_text(errors="replace")[-3000:]
    _check_store_invariants(root / "store")
    assert query(root / "store", "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(N_FILES, N_FILES)]
    statuses = query(root / "store", "SELECT status, count(*) FROM ingest_log GROUP BY 1 ORDER BY 1")
    assert statuses == [("quarantined", 2), ("stored", N_FILES)]
    # The links went to quarantine as links, with a reason; what they pointed at is untouched.
    notes = sorted((root / "quarantine").glob("*.error.txt"))
    assert len(notes) == 2 and all("symbolic link" in n.read_text() for n in notes)
    assert secret.read_bytes() == fcs_setup["src"][0].read_bytes() and len(list(outside.iterdir())) == 1
    assert not _files(inbox)


def test_ctrl_c_during_run_loses_no_file(tmp_path, fcs_setup):
    root = tmp_path
    (root / "inbox").mkdir()
    for p in fcs_setup["src"]:
        shutil.copy(p, root / "inbox" / p.name)
    names = [p.name for p in fcs_setup["src"]]
    proc = start_cli(_run_args(root, fcs_setup), cli_env(), root / "run.log")
    claims = root / ".graftwatch-claims"
    assert wait_for(lambda: any(p.suffix == ".fcs" for p in _files(claims)) or proc.poll() is not None,
                    HANG_LIMIT, 0.01)
    assert proc.poll() is None, "the run ended before any file was claimed: nothing to interrupt"
    kill_group(proc, signal.SIGINT)  # a terminal's Ctrl-C
    proc.wait(HANG_LIMIT)
    copies = _where_is_everything(root, names)
    assert all(c == 1 for c in copies.values()), f"files lost or doubled by Ctrl-C: {copies}"


# --- fuzzing through process_file (no Prefect) ----------------------------------------

MAX_SECONDS_PER_FILE = 300  # a hang detector, not a speed requirement
MAX_RSS_GROWTH_MB = 400


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _alarm(signum, frame):
    raise TimeoutError("mutant took too long (hang?)")


def _process_all(folder: Path, setup) -> list:
    """Run every file of ``folder`` through process_file with a per-file time limit."""
    from flows.inbox import InboxFile
    from flows.process import process_file

    outcomes = []
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for p in sorted(folder.iterdir()):
            signal.alarm(MAX_SECONDS_PER_FILE)
            try:
                out = process_file(InboxFile(p, p.name), setup, set())
            finally:
                signal.alarm(0)
            outcomes.append(out)
    finally:
        signal.signal(signal.SIGALRM, old)
    return outcomes


def _judge(outcomes, what: str) -> list[str]:
    """Each outcome stored with rows, or quarantined with a plain reason; returns the
    quarantine reasons that came from the catch-all (reader gaps worth fixing)."""
    unexpected = []
    for out in outcomes:
        assert out.status in ("stored", "quarantined"), (out.file.name, out.status)
        if out.status == "stored":
            if not any(out.rows.values()):
                unexpected.append(f"{out.file.name}: stored with no rows")
        else:
            assert out.error and len(out.error) > 20, (out.file.name, out.error)
            assert "Traceback" not in out.error and 'File "' not in out.error, out.file.name
            if "unexpected problem" in out.error:
                unexpected.append(f"{out.file.name}: {out.error[:160]}")
    return unexpected


def _fcs_mutants(good: Path) -> dict[str, bytes]:
    version, pairs, data = fcs_parts(good)
    kw = dict(pairs)
    tot, par = int(kw["$TOT"]), int(kw["$PAR"])
    raw = good.read_bytes()
    m: dict[str, bytes] = {"control_good.fcs": raw}
    b = lambda name, prs=pairs, d=data, **hdr: m.__setitem__(name, build_fcs(version, prs, d, header=hdr or None))  # noqa: E731
    # HEADER offsets
    b("hdr_text_beyond_eof.fcs", text_start="90000000", text_end="90000100")
    b("hdr_text_reversed.fcs", text_start="500", text_end="100")
    b("hdr_text_in_header.fcs", text_start="10", text_end="40")
    b("hdr_offsets_letters.fcs", text_start="abcdefgh")
    b("hdr_data_mismatch.fcs", data_start="70")
    b("hdr_data_beyond_eof.fcs", data_end="99999999")
    m["hdr_version_garbage.fcs"] = b"FCS9.9" + raw[6:]
    m["hdr_only.fcs"] = raw[:58]
    m["tiny.fcs"] = raw[:20]
    # $TOT / $PAR
    for name, value in [("tot_zero", "0"), ("tot_double", str(tot * 2)), ("tot_half", str(tot // 2)),
                        ("tot_negative", "-5"), ("tot_letters", "many"), ("tot_huge", "9" * 18),
                        ("tot_missing", None)]:
        b(f"{name}.fcs", replace_kw(pairs, P_TOT=value))
    for name, value in [("par_zero", "0"), ("par_plus_one", str(par + 1)), ("par_minus_one", str(par - 1)),
                        ("par_huge", "99999999"), ("par_letters", "x"), ("par_missing", None)]:
        b(f"{name}.fcs", replace_kw(pairs, P_PAR=value))
    # $DATATYPE / $BYTEORD
    for dt_ in ("I", "D", "A", "Z", ""):
        b(f"datatype_{dt_ or 'empty'}.fcs", replace_kw(pairs, P_DATATYPE=dt_))
    b("datatype_D_consistent.fcs", replace_kw(pairs, P_DATATYPE="D", P_TOT=str(tot // 2)))
    for bo in ("4,3,2,1", "1,2", "2,1,4,3", "", "1,2,3,4,5,6,7,8"):
        b(f"byteorder_{bo.replace(',', '') or 'empty'}.fcs", replace_kw(pairs, P_BYTEORD=bo))
    b("pnb_odd_int.fcs", replace_kw(pairs, P_DATATYPE="I", P_P1B="7"))
    b("p3n_missing.fcs", replace_kw(pairs, P_P3N=None))
    b("begindata_letters.fcs", replace_kw(pairs, P_BEGINDATA="start"))
    # Huge values
    b("pnr_huge.fcs", replace_kw(pairs, P_P1R="1" + "0" * 300))
    b("pne_bad.fcs", replace_kw(pairs, P_P6E="banana"))
    b("spillover_garbage.fcs", pairs + [("$SPILLOVER", "3,A,B,C,1,2")])
    b("spillover_huge_n.fcs", pairs + [("$SPILLOVER", "999999999,A")])
    b("keyword_5mb.fcs", pairs + [("COMMENT", "x" * (5 * 2**20))])
    b("nextdata_beyond.fcs", replace_kw(pairs, P_NEXTDATA="999999999"))
    # Truncation
    for frac in (0.1, 0.5, 0.99):
        m[f"truncated_{int(frac * 100)}.fcs"] = raw[: int(len(raw) * frac)]
    m["data_missing_last_byte.fcs"] = raw[:-1]
    # Random byte flips in HEADER and TEXT (seeded, reproducible)
    rng = random.Random(20240611)
    text_end = int(raw[18:26])
    for i in range(12):
        buf = bytearray(raw)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(0, text_end + 1)
            buf[pos] = rng.randrange(256)
        m[f"flip_{i:02d}.fcs"] = bytes(buf)
    return m


def test_fuzz_fcs_header_and_text(tmp_path, fcs_setup):
    from flows.config import Config
    from flows.batch import build_setup

    good = simulate(tmp_path / "src", 1, n_events=3000, prefix="FZ")[0]
    folder = tmp_path / "mutants"
    folder.mkdir()
    for name, data in _fcs_mutants(good).items():
        (folder / name).write_bytes(data)
    setup = build_setup(Config(), str(fcs_setup["template"]))
    rss0, t0 = _rss_mb(), time.monotonic()
    outcomes = _process_all(folder, setup)
    grown, took = _rss_mb() - rss0, time.monotonic() - t0
    unexpected = _judge(outcomes, "FCS mutant")
    by_name = {o.file.name: o for o in outcomes}
    assert by_name["control_good.fcs"].status == "stored"
    for name in ("hdr_text_beyond_eof.fcs", "tot_double.fcs", "tot_huge.fcs", "par_huge.fcs", "datatype_Z.fcs",
                 "byteorder_2143.fcs", "truncated_50.fcs", "hdr_only.fcs", "tiny.fcs", "par_missing.fcs"):
        assert by_name[name].status == "quarantined", name
    stored = sorted(n for n, o in by_name.items() if o.status == "stored")
    print(f"\n{len(outcomes)} FCS mutants in {took:.1f} s, max RSS grew {grown:.0f} MB; stored: {stored}")
    if unexpected:
        print("caught by the catch-all (reader could explain better):\n  " + "\n  ".join(unexpected))
    assert grown < MAX_RSS_GROWTH_MB


def _text_mutants(seed_dir: Path) -> dict[str, bytes]:
    demo = REPO / "examples" / "demo_inbox"
    sheet = (demo / "sample_sheet.csv").read_text(encoding="utf-8")
    registry = (demo / "patient_registry.csv").read_text(encoding="utf-8")
    peaks = (demo / "chimerism" / "P01_genemapper_peaks.txt").read_text(encoding="utf-8")
    qpcr = (demo / "chimerism" / "P02_quantstudio.txt").read_text(encoding="utf-8")
    ddpcr = (demo / "chimerism" / "P02_qx_manager.csv").read_text(encoding="utf-8-sig")
    m: dict[str, bytes] = {}
    u = lambda s: s.encode("utf-8")  # noqa: E731
    lines = sheet.splitlines()
    m["sheet_good.csv"] = u(sheet)
    m["sheet_date_us.csv"] = u(sheet.replace("2025-02-09", "02/09/2025"))
    m["sheet_date_impossible.csv"] = u(sheet.replace("2025-02-09", "2025-13-45"))
    m["sheet_date_words.csv"] = u(sheet.replace("2025-02-09", "ninth of Feb"))
    m["sheet_date_empty.csv"] = u(sheet.replace("2025-02-09", ""))
    m["sheet_no_patient_col.csv"] = u("\n".join(",".join(c for i, c in enumerate(l.split(",")) if i != 1) for l in lines))
    m["sheet_header_only.csv"] = u(lines[0] + "\n")
    m["sheet_role_unknown.csv"] = u(sheet.replace(",post,", ",after,", 1))
    m["sheet_utf16.csv"] = sheet.encode("utf-16")
    m["sheet_latin1.csv"] = sheet.replace("whole", "entière").encode("latin-1")
    m["sheet_cp1252_quotes.csv"] = sheet.replace("whole", "\u201cwhole\u201d").encode("cp1252")
    m["sheet_bom.csv"] = b"\xef\xbb\xbf" + u(sheet)
    m["sheet_nul_bytes.csv"] = u(sheet).replace(b",", b"\x00,", 5)
    m["sheet_semicolons.csv"] = u(sheet.replace(",", ";"))
    m["sheet_truncated.csv"] = u(sheet)[: len(sheet) // 2]
    m["sheet_ragged.csv"] = u(sheet + "P09-X,P09\n")
    m["sheet_long_line.csv"] = u(sheet + "Q," + "x" * (8 * 2**20) + ",2025-01-01,PB,whole,post,,\n")
    m["sheet_many_rows.csv"] = u(lines[0] + "\n" + "".join(f"S{i},P{i % 50},2025-01-01,PB,whole,post,,\n"
                                                             for i in range(20000)))
    m["registry_bad_date.csv"] = u(registry.replace("2025-01-10", "10.01.2025", 1))
    m["registry_cycle_text.csv"] = u(registry.replace(",1,", ",first,", 1))
    m["registry_no_donor.csv"] = u("\n".join(l.rsplit(",", 1)[0] for l in registry.splitlines()))
    m["str_good.txt"] = u(peaks)
    m["str_no_area.txt"] = u("\n".join("\t".join(l.split("\t")[:6]) for l in peaks.splitlines()))
    m["str_height_text.txt"] = u(peaks.replace("\t6792\t", "\thigh\t", 1))
    m["str_truncated.txt"] = u(peaks[: len(peaks) // 3])
    m["str_utf16.txt"] = peaks.encode("utf-16")
    m["qpcr_good.txt"] = u(qpcr)
    m["qpcr_no_results_marker.txt"] = u(qpcr.replace("[Results]", "[Stuff]"))
    m["qpcr_ct_letters.txt"] = u(qpcr.replace("Undetermined", "n/a-ish", 3))
    m["qpcr_header_only.txt"] = u(qpcr.split("[Results]")[0] + "[Results]\n")
    m["qpcr_cp1252.txt"] = qpcr.replace("Cт", "Ct").replace("ΔΔ", "dd").encode("cp1252", "replace")
    m["ddpcr_good.csv"] = u(ddpcr)
    m["ddpcr_no_target.csv"] = u(ddpcr.replace("Target,", "Tgt,", 1))
    m["ddpcr_counts_text.csv"] = u(ddpcr.replace(",16589,", ",lots,", 2))
    m["ddpcr_latin1.csv"] = ddpcr.encode("latin-1", "replace")
    m["ddpcr_truncated.csv"] = u(ddpcr[: len(ddpcr) // 2])
    m["garbage.bin"] = bytes(random.Random(5).randrange(256) for _ in range(5000))
    m["empty.csv"] = b""
    m.update(_xlsx_mutants(sheet))
    return m


def _xlsx_mutants(sheet_csv: str) -> dict[str, bytes]:
    import csv

    import openpyxl

    rows = list(csv.reader(io.StringIO(sheet_csv)))

    def book(rows_) -> bytes:
        wb = openpyxl.Workbook()
        ws = wb.active
        for r in rows_:
            ws.append(r)
        buf = io.BytesIO()
        wb.save(buf)
        return buf.getvalue()

    good = book(rows)
    bad_date = [list(r) for r in rows]
    bad_date[2][2] = "2025/02/31"
    missing = [[c for i, c in enumerate(r) if i != 2] for r in rows]
    return {"sheet_good.xlsx": good, "sheet_bad_date.xlsx": book(bad_date), "sheet_no_date_col.xlsx": book(missing),
            "sheet_corrupt.xlsx": good[: len(good) // 2], "sheet_zip_bomb_like.xlsx": b"PK\x03\x04" + b"\x00" * 4000}


def test_fuzz_exports_and_sample_sheets(tmp_path):
    from flows.process import GatingSetup

    folder = tmp_path / "mutants"
    folder.mkdir()
    mutants = _text_mutants(tmp_path)
    for name, data in mutants.items():
        (folder / name).write_bytes(data)
    rss0, t0 = _rss_mb(), time.monotonic()
    outcomes = _process_all(folder, GatingSetup())
    grown, took = _rss_mb() - rss0, time.monotonic() - t0
    unexpected = _judge(outcomes, "text mutant")
    by_name = {o.file.name: o for o in outcomes}
    for good in ("sheet_good.csv", "sheet_good.xlsx", "str_good.txt", "qpcr_good.txt", "ddpcr_good.csv", "sheet_bom.csv"):
        assert by_name[good].status == "stored", (good, by_name[good].error)
    for bad in ("sheet_date_us.csv", "sheet_date_impossible.csv", "sheet_date_words.csv", "sheet_bad_date.xlsx",
                "registry_bad_date.csv", "sheet_corrupt.xlsx", "garbage.bin", "empty.csv"):
        assert by_name[bad].status == "quarantined", bad
    for bad in ("sheet_date_us.csv", "sheet_date_impossible.csv", "registry_bad_date.csv"):
        assert "row" in by_name[bad].error.lower(), (bad, by_name[bad].error)  # names the row
    # Exports cut off mid-row are refused, not stored without their last row's values.
    for cut in ("str_truncated.txt", "ddpcr_truncated.csv"):
        assert by_name[cut].status == "quarantined" and "cut off" in by_name[cut].error, (cut, by_name[cut].error)
    stored = sorted(n for n, o in by_name.items() if o.status == "stored")
    print(f"\n{len(outcomes)} text mutants in {took:.1f} s, max RSS grew {grown:.0f} MB; stored: {stored}")
    if unexpected:
        print("caught by the catch-all (reader could explain better):\n  " + "\n  ".join(unexpected))
    assert grown < MAX_RSS_GROWTH_MB


def test_empty_inbox_run_is_on_record(tmp_path):
    """`graftwatch run` on an empty inbox exits 0, says so (without importing flowkit), and
    is one completed process-inbox flow run on the Prefect server with a 0-file summary
    artifact: a scheduled check that found nothing is visible like any other run."""
    import httpx

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    api = shared_api_url()
    # Python's import profile goes to the log: a run without a template must not load flowkit (issue 15 point 3).
    proc = start_cli(["run", "--inbox", str(inbox), "--store", str(tmp_path / "store")],
                     cli_env(api, PYTHONPROFILEIMPORTTIME="1"), tmp_path / "run.log")
    code = proc.wait(HANG_LIMIT)
    lines = (tmp_path / "run.log").read_text(errors="replace").splitlines()
    imported = [line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")]
    said = "\n".join(line for line in lines if not line.startswith("import time:"))
    assert code == 0, said[-3000:]
    # flowkit._models is the empty package gating.flowkit_import looks into to make flowkit lazy.
    loaded = [m for m in imported if m.split(".")[0] in ("flowkit", "bokeh") and m != "flowkit._models"]
    assert "prefect" in imported and not loaded, loaded
    assert "is empty: nothing to do" in " ".join(said.split())
    runs = httpx.post(f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": ["process-inbox"]}}, "limit": 200},
                      timeout=300).json()
    mine = [r for r in runs if r["parameters"].get("inbox") == str(inbox)]
    assert len(mine) == 1 and mine[0]["state_type"] == "COMPLETED", mine
    arts = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [mine[0]["id"]]}}},
                      timeout=300).json()
    assert [a["key"] for a in arts] == ["inbox-run-summary"]
    assert "| 0 | 0 | 0 | 0 | 0 | 0 | 0 |" in arts[0]["data"]


def test_a_file_whose_rows_no_table_holds_is_quarantined_and_the_batch_goes_on(tmp_path, fcs_setup, monkeypatch):
    """A bug after reading (here: converting one file's rows to Arrow fails, as a name with
    surrogate escapes once did) quarantines that file; before, the exception left the
    batch, every file went back to the inbox and every later run failed the same way."""
    import flows.process as process
    from conftest import run_pipeline

    real = process.to_table

    def failing(table, rows):
        if any(r.get("source_name") == "K01.fcs" for r in rows):
            raise UnicodeEncodeError("utf-8", "K\udce9", 1, 2, "surrogates not allowed")
        return real(table, rows)

    monkeypatch.setattr(process, "to_table", failing)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for src in fcs_setup["src"][:3]:
        shutil.copy(src, inbox)
    summary = run_pipeline(inbox, tmp_path / "store", fcs_setup["template"])
    assert summary.stored == 2 and [q.name for q in summary.quarantined] == ["K01.fcs"]
    assert "unexpected problem" in (tmp_path / "quarantine" / "K01.fcs.error.txt").read_text()
    assert not _files(inbox)
