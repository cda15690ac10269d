"""The cohort end to end (issue 17): a seeded cohort with a built-in effect, the views, the page.

The store is built once per module by the in-process pipeline from simulators/cohort.py:
six patients, flow before MST and at days 14 and 30 with CD3+ % of lymphocytes raised after
MST by a known amount per patient (the truth), and STR / qPCR / ddPCR chimerism with donor
DNA in every post sample. One tube (P06 day 30) has too few events, so QC flags it for review:
the cohort leaves it out and counts it. Expected statistics are recomputed here with scipy from
``immune_timeline`` (the per-sample view), independently of the cohort views' SQL.
"""

from __future__ import annotations

import html.parser
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import false_discovery_control, wilcoxon

from conftest import query, run_pipeline
from test_report import _chromium_args

N_PATIENTS = 6
FLAGGED = "P06-D030"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from simulators.cohort import write_cohort_inbox

    root = tmp_path_factory.mktemp("cohort")
    truth = write_cohort_inbox(root / "inbox", n_patients=N_PATIENTS, seed=4242, n_events=10_000, control_for=None,
                               events_for={FLAGGED: 8000})
    summary = run_pipeline(root / "inbox", root / "store")
    assert not summary.quarantined
    return root, truth


def _dicts(store: Path, sql: str) -> list[dict]:
    from storage.store import Store
    from storage.views import connect

    cur = connect(Store(store)).execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def test_views_show_the_built_in_cd3_rise(cohort):
    root, truth = cohort
    store = root / "store"
    flagged = [r[0] for r in query(store, "SELECT sample_id FROM immune_timeline WHERE review")]
    assert flagged == [FLAGGED]
    cd3 = dict(query(store, "SELECT sample_id, cd3_pct_lymph FROM immune_timeline"))
    pre = {truth.patient[s]: cd3[s] for s, d in truth.day.items() if d < 0}
    d30 = {truth.patient[s]: cd3[s] for s, d in truth.day.items() if d == 30 and s != FLAGGED}
    diffs = [d30[p] - pre[p] for p in sorted(d30)]
    (row,) = _dicts(store, "SELECT * FROM cohort_immune WHERE parameter = 'cd3_pct_lymph' AND \"window\" = 'D30'")
    assert row["n_patients"] == row["n_paired"] == N_PATIENTS - 1 and row["n_excluded_review"] == 1
    assert row["median"] == pytest.approx(np.median(list(d30.values())))
    # The baseline of the same patients (P06, whose day-30 tube is excluded, is not among them).
    assert row["baseline_median"] == pytest.approx(np.median([pre[p] for p in d30]))
    assert row["paired_diff_median"] == pytest.approx(np.median(diffs))
    assert row["wilcoxon_p"] == pytest.approx(wilcoxon(diffs).pvalue)
    # The truth: every patient's CD3 rose by ~15 points, far above gating noise, so all five
    # paired differences are positive: the exact two-sided p is 2 / 2^5.
    true_diffs = [truth.tubes[s].cd3_pct_lymph - truth.tubes[f"{truth.patient[s]}-PRE"].cd3_pct_lymph
                  for s, d in truth.day.items() if d == 30 and s != FLAGGED]
    assert row["paired_diff_median"] == pytest.approx(np.median(true_diffs), abs=2.0)
    assert row["wilcoxon_p"] == pytest.approx(2 / 2 ** (N_PATIENTS - 1))
    # A parameter the simulation left unchanged: the Th1 share of CD4 is not "significant".
    (th1,) = _dicts(store, "SELECT * FROM cohort_immune WHERE parameter = 'th1_pct_cd4' AND \"window\" = 'D30'")
    assert th1["wilcoxon_p"] > 0.05
    every = _dicts(store, "SELECT wilcoxon_p, p_bh FROM cohort_immune WHERE wilcoxon_p IS NOT NULL")
    assert [r["p_bh"] for r in every] == pytest.approx(list(false_discovery_control([r["wilcoxon_p"] for r in every])))


def test_chimerism_view_detects_donor_dna_in_every_post_sample(cohort):
    root, _ = cohort
    rows = _dicts(root / "store", "SELECT * FROM cohort_chimerism")
    got = {(r["window"], r["method"]): (r["n_samples"], r["n_detected"], r["detection_rate"]) for r in rows}
    # Patients in turn: STR, qPCR + ddPCR, ddPCR (x2); posts at day 30 (D30) and 60 (M3).
    expected = {"str": 2, "qpcr": 2, "ddpcr": 4}
    assert got == {(w, m): (n, n, 1.0) for w in ("D30", "M3") for m, n in expected.items()}
    assert all(r["median_lod_pct"] > 0 and r["median_donor_pct"] > 0 for r in rows)


class _Page(html.parser.HTMLParser):
    """Tables (cells' data-value) and chart elements of the cohort page."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[dict]] = {}
        self.charts: list[dict] = []
        self._table = None
        self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = {}
        elif tag == "td" and self._row is not None and "data-col" in a:
            self._row[a["data-col"]] = None if a.get("data-null") else a.get("data-value")
        elif tag == "svg" and "cohort-chart" in (a.get("class") or ""):
            self.charts.append({"parameter": a["data-parameter"], "points": 0, "pairs": 0, "medians": 0})
        elif self.charts and tag in ("circle", "polyline", "line"):
            kind = {"circle": "pt", "polyline": "pair", "line": "median"}[tag]
            if (a.get("class") or "") == kind:
                self.charts[-1][{"pt": "points", "pair": "pairs", "median": "medians"}[kind]] += 1

    def handle_endtag(self, tag):
        if tag == "tr" and self._row:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def _same(cell, value) -> bool:
    if value is None:
        return cell is None
    if isinstance(value, float):
        return cell is not None and float(cell) == pytest.approx(value, rel=1e-12)
    return cell == str(value)


@pytest.fixture(scope="module")
def page(cohort):
    from flows.cli import main

    root, _ = cohort
    out = root / "cohort.html"
    assert main(["cohort", "--store", str(root / "store"), "--out", str(out)]) == 0
    parsed = _Page()
    parsed.feed(out.read_text(encoding="utf-8"))
    return out, parsed


def test_page_tables_equal_the_views_and_charts_hold_every_patient(cohort, page):
    root, _ = cohort
    out, parsed = page
    for table, view in (("cohort-immune-table", "cohort_immune"), ("cohort-chimerism-table", "cohort_chimerism")):
        rows = _dicts(root / "store", f"SELECT * FROM {view}")
        cells = parsed.tables[table]
        assert len(cells) == len(rows) > 0
        for cell, row in zip(cells, rows):
            assert all(_same(cell[c], row[c]) for c in cell), (cell, row)
    # One chart per parameter with values; every patient in each of pre, D14, D30 (but the
    # flagged tube), each patient's paired line.
    assert len(parsed.charts) == 9
    for chart in parsed.charts:
        assert chart["points"] == 3 * N_PATIENTS - 1 and chart["pairs"] == N_PATIENTS and chart["medians"] == 3, chart
    text = out.read_text(encoding="utf-8")
    for needle in ("Wilcoxon signed-rank", "Benjamini-Hochberg", "days 7 to 21", "flagged for review"):
        assert needle in text


def test_configured_windows_and_bad_config(cohort, tmp_path, capsys):
    from flows.cli import main

    root, _ = cohort
    cfg = tmp_path / "c.toml"
    cfg.write_text('[cohort]\nwindows = ["base:-30..-1", "early:10..40@30"]\nmin_pairs = 7\n', encoding="utf-8")
    out = tmp_path / "c.html"
    assert main(["cohort", "--store", str(root / "store"), "--out", str(out), "--config", str(cfg)]) == 0
    parsed = _Page()
    parsed.feed(out.read_text(encoding="utf-8"))
    rows = parsed.tables["cohort-immune-table"]
    assert {r["window"] for r in rows} == {"base", "early"}
    # "early" holds the day-14 and day-30 samples: the day-30 one (the target) is used, the
    # other counted as not used; 6 pairs < min_pairs 7, so no test.
    early = [r for r in rows if r["window"] == "early"]
    assert all(r["n_extra_samples"] == str(N_PATIENTS - 1) and r["n_paired"] == str(N_PATIENTS) for r in early)
    assert all(r["wilcoxon_p"] is None for r in rows)
    capsys.readouterr()
    cfg.write_text('[cohort]\nwindows = ["D14:7..21"]\n', encoding="utf-8")
    assert main(["cohort", "--store", str(root / "store"), "--out", str(out), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "baseline" in err[0]


_MEASURE = """<script>
window.addEventListener('load', () => {
  const out = [...document.querySelectorAll('svg.cohort-chart')].map(svg => {
    const box = svg.getBoundingClientRect();
    const inside = [...svg.querySelectorAll('circle.pt, line.median, polyline.pair')].filter(e => {
      const b = e.getBoundingClientRect();
      return (b.width > 0 || b.height > 0) && b.left >= box.left && b.right <= box.right
             && b.top >= box.top && b.bottom <= box.bottom;
    }).length;
    return svg.id + ':' + Math.round(box.width) + 'x' + Math.round(box.height) + ':' + inside;
  });
  document.body.setAttribute('data-measured', out.join(' '));
});
</script>"""


def test_page_draws_every_chart_in_headless_chromium(page, tmp_path):
    from PIL import Image

    out, parsed = page
    shot = tmp_path / "shot.png"
    r = subprocess.run(_chromium_args(tmp_path / "p1") + [f"--screenshot={shot}", out.resolve().as_uri()],
                       capture_output=True, text=True, timeout=180)
    assert shot.is_file(), r.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.std() > 20 and (img < 128).mean() > 0.005  # charts and text, not a blank page
    # A copy of the page with a script measuring each chart as the browser laid it out:
    # every chart has a size, and every point, median and paired line is drawn inside it.
    measured = tmp_path / "measured.html"
    measured.write_text(out.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    dom = subprocess.run(_chromium_args(tmp_path / "p2") + ["--virtual-time-budget=5000", "--dump-dom",
                                                           measured.resolve().as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    marker = 'data-measured="'
    assert marker in dom.stdout, dom.stdout[:500]
    charts = dom.stdout.split(marker, 1)[1].split('"', 1)[0].split()
    assert len(charts) == len(parsed.charts) == 9
    for chart, counts in zip(charts, parsed.charts):
        _, size, inside = chart.split(":")
        width, height = map(int, size.split("x"))
        assert width >= 900 and height >= 300, chart
        assert int(inside) == counts["points"] + counts["medians"] + counts["pairs"], chart
