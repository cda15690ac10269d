"""``graftwatch report``, headless-Chromium rendering, and the snippets of docs/analysts.md.

The store is built once per module by the real Prefect pipeline from simulated files:
patient HP01 with an STR peak report and a qPCR plate (recipient, donor, 9 post samples
from day 30 to day 270, some below the STR LOD) and 10 FCS tubes (pre-transplant + the 9
post samples), gated by the built-in adaptive T-cell panel; patient HP02 exists only in
the registry. No row is written by hand.
"""

from __future__ import annotations

import csv
import html.parser
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, query, run_pipeline

PATIENT = "HP01"
STR_PCTS = (60.0, 30.0, 10.0, 3.0, 0.5, 0.0, 0.0, 20.0, 40.0)
QPCR_PCTS = (60.0, 30.0, 10.0, 3.0, 0.5, 0.05, 0.0, 20.0, 40.0)


def _write_sheets(inbox: Path, case) -> None:
    with open(inbox / "sheet.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["sample_id", "patient_id", "collection_date", "specimen", "cell_fraction", "role", "donor_id"])
        for r in case.sheet:
            w.writerow([r.sample_id, r.patient_id, r.collection_date.isoformat(), r.specimen or "",
                        r.cell_fraction or "", r.role, r.donor_id or ""])
    with open(inbox / "registry.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "cycle", "mst_date", "donor_id"])
        for r in case.registry:
            w.writerow([r.patient_id, r.cycle, r.mst_date.isoformat(), r.donor_id])
        w.writerow(["HP02", 1, "2025-03-01", "HP02-DN1"])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from simulators.qpcr_sim import write_qpcr_case
    from simulators.str_sim import write_str_case
    from simulators.tcell import simulate_tube

    root = tmp_path_factory.mktemp("report")
    inbox = root / "inbox"
    inbox.mkdir()
    case = write_str_case(inbox, seed=3, donor_pcts=STR_PCTS, patient_id=PATIENT)
    write_qpcr_case(inbox, seed=4, donor_pcts=QPCR_PCTS, patient_id=PATIENT)
    _write_sheets(inbox, case)
    flow_ids = [case.case.recipient_sample] + [p.sample_id for p in case.posts]
    for i, sid in enumerate(flow_ids):
        simulate_tube(inbox / f"{sid}.fcs", seed=100 + i, n_events=10_000, sample_id=sid)
    # The built-in panel named explicitly, so the test does not depend on the default lookup.
    config = root / "graftwatch.toml"
    config.write_text(f'panel = "{(REPO / "gating" / "panels" / "tcell.toml").as_posix()}"\n')
    summary = run_pipeline(inbox, root / "store", config=config)
    assert not summary.quarantined, summary.quarantined
    return root / "store"


class _Tables(html.parser.HTMLParser):
    """Collects ``data-*`` of the report's table cells and the ids/classes of SVG elements."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[dict]] = {}
        self.current: str | None = None
        self.row: dict | None = None
        self.ids: set[str] = set()
        self.elements: list[tuple[str, dict]] = []
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        self.elements.append((tag, a))
        if tag == "table":
            self.current = a.get("id")
            self.tables[self.current] = []
        elif tag == "tr" and self.current and "data-sample" in a:
            self.row = {"_sample": a["data-sample"], "_analysis": a.get("data-analysis")}
            self.tables[self.current].append(self.row)
        elif tag == "td" and self.row is not None and "data-col" in a:
            self.row[a["data-col"]] = None if a.get("data-null") else a.get("data-value")
        elif tag == "a" and "gating" in (a.get("class") or ""):
            self.links.append(a["href"])
        elif tag == "img" and "gating" in (a.get("class") or ""):
            self.images.append(a["src"])

    def handle_endtag(self, tag):
        if tag == "table":
            self.current = None
        elif tag == "tr":
            self.row = None


def _parse(path: Path) -> _Tables:
    p = _Tables()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _same(cell: str | None, value) -> bool:
    """A table cell's exact ``data-value`` against the view's value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return cell is None
    if isinstance(value, bool):
        return cell == str(value).lower()
    if isinstance(value, float):
        return cell is not None and float(cell) == value  # repr round-trips exactly
    if hasattr(value, "isoformat"):
        return cell == value.isoformat()
    return cell == str(value)


def _view_rows(store: Path, view: str, columns) -> list[dict]:
    from storage.store import Store
    from storage.views import connect

    cur = connect(Store(store)).execute(f"SELECT * FROM {view} WHERE patient_id = ?", [PATIENT])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


@pytest.fixture(scope="module")
def report(store, tmp_path_factory) -> tuple[Path, float]:
    from flows.report import write_report

    out = tmp_path_factory.mktemp("out") / "reports" / f"{PATIENT}.html"
    t0 = time.perf_counter()
    assert write_report(PATIENT, str(store), out) == 0
    return out, time.perf_counter() - t0


def test_report_numbers_equal_the_views(store, report):
    from reports.patient import CHIMERISM_COLUMNS, IMMUNE_COLUMNS

    out, _seconds = report
    parsed = _parse(out)
    for table, view, columns in (("immune-table", "immune_timeline", IMMUNE_COLUMNS),
                                 ("chimerism-table", "chimerism_timeline", CHIMERISM_COLUMNS)):
        rows = _view_rows(store, view, columns)
        shown = parsed.tables[table]
        assert len(shown) == len(rows) > 0, table
        # Rows are matched on (sample, method, donor): the report may order them differently.
        def key(r):
            return (r["sample_id"], r.get("method"), r.get("donor_id"))
        by_key = {(c["sample_id"], c.get("method"), c.get("donor_id")): c for c in shown}
        for r in rows:
            cell_row = by_key[key(r)]
            for col in columns:
                assert _same(cell_row[col], r[col]), (table, r["sample_id"], col, cell_row[col], r[col])
    # The store has what the timelines must show: several timepoints, a pre-transplant
    # flow sample, two methods, and not-detected chimerism results.
    chim = _view_rows(store, "chimerism_timeline", ())
    assert {r["method"] for r in chim} == {"str", "qpcr"}
    assert any(not r["detected"] for r in chim) and any(r["detected"] for r in chim)
    assert len(_view_rows(store, "immune_timeline", ())) == 10


def test_report_timelines_elements(store, report):
    out, _ = report
    p = _parse(out)
    assert {"chimerism-timeline", "immune-timeline", "immune-lymphocytes", "immune-ratio", "immune-th",
            "immune-table", "chimerism-table", "qc-flags", "gating-pictures"} <= p.ids
    text = out.read_text(encoding="utf-8")
    chim_svg = text[text.index('<svg id="chimerism-timeline"'):]
    chim_svg = chim_svg[:chim_svg.index("</svg>")]
    rows = _view_rows(store, "chimerism_timeline", ())
    plotted = [r for r in rows if r["days_post_mst"] is not None]
    assert chim_svg.count('class="pt detected"') == sum(1 for r in plotted if r["detected"])
    assert chim_svg.count('class="pt not-detected"') == sum(1 for r in plotted if not r["detected"])
    # Not-detected points are open markers drawn at the LOD.
    for m in re.finditer(r'<(?:circle|rect|polygon) class="pt not-detected"[^>]*fill="([^"]+)"', chim_svg):
        assert m.group(1) == "white"
    # Each method's LOD and each MST cycle are drawn.
    assert {m for m in re.findall(r'class="lod" data-method="([^"]+)"', chim_svg)} == {"str", "qpcr"}
    n_cycles = query(store, f"SELECT count(*) FROM patients_latest WHERE patient_id = '{PATIENT}'")[0][0]
    assert chim_svg.count('class="mst"') == n_cycles == 1
    immune_svg = text[text.index('<svg id="immune-timeline"'):]
    for col in ("cd3_pct_lymph", "cd4_pct_lymph", "cd8_pct_lymph", "cd4_cd8_ratio", "th1_pct_cd4",
                "th2_pct_cd4", "th0_pct_cd4", "th17_pct_cd4", "treg_pct_cd4"):
        assert f'data-column="{col}"' in immune_svg
    # Self-contained: nothing fetched at view time.
    assert not re.search(r'<script|<link |src="http|href="http|@import|url\(', text)


def test_report_size_and_gating_pictures_embedded(store, report, tmp_path):
    """Pictures are in the file (data URIs), so the report works mailed or moved: a copy
    alone in another folder refers to nothing outside itself."""
    import base64

    out, seconds = report
    size = out.stat().st_size
    moved = tmp_path / "mailed" / out.name
    moved.parent.mkdir()
    moved.write_bytes(out.read_bytes())
    p = _parse(moved)
    flow = _view_rows(store, "immune_timeline", ())
    assert len(p.images) == len(p.links) == len(flow) == 10
    for src in p.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for href in p.links:  # table links jump to the picture in the same page
        assert href.startswith("#") and href[1:] in p.ids, href
    assert not re.search(r'(src|href)="(?!data:|#)', moved.read_text(encoding="utf-8"))
    assert size < 8 * 1024 * 1024
    print(f"\nreport of 10 flow + {len({r['sample_id'] for r in _view_rows(store, 'chimerism_timeline', ())})} "
          f"chimerism samples: {size / 1024:.0f} kB, written in {seconds:.1f} s (pictures re-drawn as needed)")


def test_report_qc_flags_match_store(store, report):
    out, _ = report
    text = out.read_text(encoding="utf-8")
    failed = query(store, f"""
        SELECT q.sample_id, q."check" FROM flow_qc q
        JOIN latest_analyses a USING (analysis_id, sample_id) JOIN sheet_latest s USING (sample_id)
        WHERE s.patient_id = '{PATIENT}' AND NOT q.passed""")
    for sid, check in failed:
        assert f'data-sample="{sid}" data-check="{check}"' in text
    not_ok = query(store, f"SELECT count(*) FROM chimerism_timeline WHERE patient_id = '{PATIENT}' AND status <> 'ok'")[0][0]
    assert text.count('class="flag chimerism"') == not_ok > 0


def test_unknown_patient_and_empty_patient(store, tmp_path, capsys):
    from assays.errors import ConfigError
    from flows.report import write_report

    assert write_report("NOPE-99", str(store), tmp_path / "x.html") == 2
    err = capsys.readouterr().err
    assert "2 patients known" in err and "HP01" in err  # few ids: listed
    assert not (tmp_path / "x.html").exists()
    assert write_report("HP02", str(store), tmp_path / "hp02.html") == 0
    text = (tmp_path / "hp02.html").read_text(encoding="utf-8")
    assert "No chimerism results" in text and "No flow cytometry results" in text
    with pytest.raises(ConfigError, match="no such folder"):  # exit 2 in the CLI (tests/test_analyst_cli.py)
        write_report(PATIENT, str(tmp_path / "no-store"), tmp_path / "y.html")
    assert not (tmp_path / "y.html").exists()


def test_cli_report(store, tmp_path):
    exe = Path(sys.executable).with_name("graftwatch")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "flows.cli"]
    out = tmp_path / "cli.html"
    r = subprocess.run(cmd + ["report", PATIENT, "--store", str(store), "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and 'id="chimerism-timeline"' in out.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- Chromium


def _chromium() -> str:
    """Debian's chromium; the project's set-up (`make test`) installs it when missing."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    pytest.fail("chromium not found: run `make setup` (it installs Debian's chromium) or apt-get install chromium")


def _chromium_args(profile: Path) -> list[str]:
    return [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--window-size=1200,2000"]


def test_report_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    out, _ = report
    url = out.resolve().as_uri()
    shot = tmp_path / "shot.png"
    r = subprocess.run(_chromium_args(tmp_path / "profile") + [f"--screenshot={shot}", url],
                       capture_output=True, text=True, timeout=180)
    assert shot.is_file(), r.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape[:2] == (2000, 1200)
    # Not blank: a white page has variance 0; charts, text and tables give far more.
    assert img.std() > 20, img.std()
    assert (img < 128).mean() > 0.005  # some dark ink (axes, text, markers)

    dom = subprocess.run(_chromium_args(tmp_path / "profile2") + ["--dump-dom", url],
                         capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    assert 'id="chimerism-timeline"' in rendered and 'id="immune-timeline"' in rendered
    assert rendered.count('class="pt ') >= 10 and 'id="immune-table"' in rendered
    # The browser keeps the embedded pictures (data URIs) and both methods' LOD labels.
    assert len(re.findall(r'<img class="gating"[^>]*src="data:image/png;base64,', rendered)) == 10
    assert re.search(r'class="lodlabel" data-method="str"[^>]*>STR LOD \d', rendered)
    assert re.search(r'class="lodlabel" data-method="qpcr"[^>]*>qPCR LOD \d', rendered)


# ----------------------------------------------------------------------------- docs


def _doc_blocks(lang: str) -> list[str]:
    text = (REPO / "docs" / "analysts.md").read_text(encoding="utf-8")
    return [textwrap_dedent(b) for b in re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)]


def textwrap_dedent(block: str) -> str:
    import textwrap

    return textwrap.dedent(block)


def test_docs_sql_snippets_run(store):
    from storage.store import Store
    from storage.views import connect

    blocks = _doc_blocks("sql")
    assert len(blocks) >= 6
    con = connect(Store(store))
    results = [con.execute(b).fetchall() for b in blocks]
    assert all(results[:3]), "the ratio, chimerism and last-detected queries return rows"
    # The worked example: CD4:CD8 at day 30 vs pre-transplant, checked against the view.
    (pid, ratio_pre, day, ratio_d30, fold), = results[0]
    pre = query(store, "SELECT cd4_cd8_ratio FROM immune_timeline WHERE sample_id = 'HP01-PRE'")[0][0]
    d30 = query(store, "SELECT cd4_cd8_ratio FROM immune_timeline WHERE sample_id = 'HP01-D030'")[0][0]
    assert (pid, day) == (PATIENT, 30)
    assert ratio_pre == round(pre, 2) and ratio_d30 == round(d30, 2) and fold == round(d30 / pre, 2)


def test_docs_python_snippets_run(store, tmp_path):
    blocks = _doc_blocks("python")
    assert len(blocks) >= 4
    for b in blocks:
        assert b.startswith('STORE = "data/store"'), b[:60]
        code = b.replace('STORE = "data/store"', f"STORE = {str(store)!r}", 1)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert r.returncode == 0, f"{b}\n---\n{r.stderr[-3000:]}"
        if "fold_change" in b:
            assert "HP01" in r.stdout


def test_docs_cli_snippets_run(store, tmp_path):
    exe = Path(sys.executable).with_name("graftwatch")
    blocks = _doc_blocks("sh")
    lines = [ln for b in blocks for ln in b.splitlines() if ln.startswith("graftwatch ")]
    assert len(lines) >= 3
    import shlex

    for ln in lines:
        args = shlex.split(ln.replace("data/store", str(store)))
        r = subprocess.run([str(exe)] + args[1:], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert r.returncode == 0, f"{ln}\n{r.stderr[-2000:]}"


def test_docs_list_real_columns(store):
    """Every column the docs name for a view exists, and every view column is documented."""
    text = (REPO / "docs" / "analysts.md").read_text(encoding="utf-8")
    for view in ("immune_timeline", "chimerism_timeline"):
        section = text[text.index(f"### `{view}`"):]
        section = section[:section.index("\n### ", 5)]
        documented = set(re.findall(r"^\| `([a-z0-9_]+)`", section, flags=re.M))
        documented |= {c for grp in re.findall(r"^\| (`[a-z0-9_]+`(?:, `[a-z0-9_]+`)+)", section, flags=re.M)
                       for c in re.findall(r"`([a-z0-9_]+)`", grp)}
        actual = {r[0] for r in query(store, f"DESCRIBE {view}")}
        assert documented == actual, (view, documented ^ actual)
