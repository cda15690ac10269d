"""The cohort page: each immune parameter by window after MST against the pre-MST baseline.

One self-contained HTML file (inline SVG and CSS, no script, nothing fetched) for the
study's analyst and the paper's methods section:

* per parameter and cycle, a chart: every patient's value in each window (points), the
  window's median (bar) and IQR (box), and each patient's paired line from the baseline
  through the later windows;
* the statistics table: the view ``cohort_immune`` row for row (each cell's exact value in
  ``data-value``), raw Wilcoxon p beside the Benjamini-Hochberg adjusted p;
* the microchimerism detection table: the view ``cohort_chimerism``;
* the methods text: windows, sample choice, tests, multiple-testing correction, exclusions
  (with their counts), written from the settings in force.

Data in, text out: the caller passes a DuckDB connection with the cohort views
(:func:`storage.views.connect`, then :func:`storage.cohort.create_cohort_views` with the
configured windows); writing the file is ``flows.cohort``'s job.
"""

from __future__ import annotations

import datetime as dt
import math

from reports.patient import method_name
from reports.svg import BOTTOM, LEFT, PALETTE, RIGHT, TOP, W, Scale, esc, frame, legend
from storage.cohort import CohortParams

PARAMETER_LABELS = {
    "cd3_pct_lymph": "CD3+ (% of lymphocytes)", "cd4_pct_lymph": "CD4+CD8- (% of lymphocytes)",
    "cd8_pct_lymph": "CD4-CD8+ (% of lymphocytes)", "cd4_cd8_ratio": "CD4:CD8 ratio",
    "th1_pct_cd4": "Th1 (% of CD4+CD8-)", "th2_pct_cd4": "Th2 (% of CD4+CD8-)", "th0_pct_cd4": "Th0 (% of CD4+CD8-)",
    "th17_pct_cd4": "Th17 (% of CD4+CD8-)", "treg_pct_cd4": "Treg (% of CD4+CD8-)",
}
# For a terminal table.
PARAMETER_SHORT = {"cd3_pct_lymph": "CD3", "cd4_pct_lymph": "CD4", "cd8_pct_lymph": "CD8", "cd4_cd8_ratio": "CD4:CD8",
                   "th1_pct_cd4": "Th1", "th2_pct_cd4": "Th2", "th0_pct_cd4": "Th0", "th17_pct_cd4": "Th17",
                   "treg_pct_cd4": "Treg"}
IMMUNE_COLUMNS = ("parameter", "window", "cycle", "n_patients", "median", "q1", "q3", "n_paired", "baseline_median",
                  "paired_diff_median", "wilcoxon_p", "p_bh", "note", "n_excluded_review", "n_extra_samples")
CHIMERISM_COLUMNS = ("window", "cycle", "method", "cell_fraction", "n_samples", "n_detected", "detection_rate",
                     "median_donor_pct", "median_lod_pct", "n_excluded_review")
_HEADERS = {
    "n_patients": "n", "median": "median", "q1": "Q1", "q3": "Q3", "n_paired": "n paired",
    "baseline_median": "baseline median", "paired_diff_median": "median paired difference",
    "wilcoxon_p": "Wilcoxon p", "p_bh": "BH-adjusted p", "n_excluded_review": "excluded (review)",
    "n_extra_samples": "further samples not used", "cell_fraction": "fraction", "n_samples": "samples",
    "n_detected": "detected", "detection_rate": "detection rate", "median_donor_pct": "median donor %",
    "median_lod_pct": "median LOD %",
}


def _rows(con, sql: str) -> list[dict]:
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


class _WindowScale(Scale):
    """Window index -> pixel, ticks labelled with the window names (for :func:`frame`)."""

    def __init__(self, names: list[str]):
        super().__init__(-0.5, len(names) - 0.5, LEFT, W - RIGHT)
        self.names = names

    def ticks(self) -> list[tuple[float, str]]:
        return [(float(i), n) for i, n in enumerate(self.names)]


def _fmt(col: str, v) -> str:
    if col in ("wilcoxon_p", "p_bh"):
        return f"{v:.2g}" if v < 0.001 else f"{v:.3f}"
    if col == "detection_rate":
        return f"{100 * v:.0f} %"
    return f"{v:.3g}"


def _cell(col: str, v) -> str:
    """A table cell: rounded for reading, the exact value in ``data-value``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f'<td data-col="{col}" data-null="1">–</td>'
    if isinstance(v, float):
        return f'<td data-col="{col}" data-value="{v!r}" class="num">{_fmt(col, v)}</td>'
    if isinstance(v, int) and not isinstance(v, bool):
        return f'<td data-col="{col}" data-value="{v}" class="num">{v}</td>'
    shown = {"parameter": PARAMETER_LABELS.get(v, v), "method": method_name(v)}.get(col, v)
    return f'<td data-col="{col}" data-value="{esc(v)}">{esc(shown)}</td>'


def _table(table_id: str, rows: list[dict], columns: tuple[str, ...]) -> str:
    head = "".join(f'<th data-col="{c}">{esc(_HEADERS.get(c, c))}</th>' for c in columns)
    body = ["<tr>" + "".join(_cell(c, r.get(c)) for c in columns) + "</tr>" for r in rows]
    if not rows:
        body.append(f'<tr><td colspan="{len(columns)}">none</td></tr>')
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>' + "\n".join(body) + "</tbody></table>"


def parameter_svg(parameter: str, cycle: int, windows: list[str], samples: list[dict], stats: list[dict]) -> str:
    """One parameter of one cycle (``<svg class="cohort-chart">``): points, median/IQR, paired lines.

    ``samples``: rows of ``cohort_immune_samples`` (patient_id, window, value); ``stats``:
    rows of ``cohort_immune`` (window, median, q1, q3, wilcoxon_p, p_bh).
    """
    height = 330
    top, bottom = TOP + 6, height - BOTTOM
    x = _WindowScale(windows)
    values = [r["value"] for r in samples] + [v for s in stats for v in (s["q1"], s["q3"]) if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = 0.08 * (hi - lo or abs(hi) or 1.0)
    # Headroom above the points for the p-value labels.
    y = Scale(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + 2.5 * pad, bottom, top)
    sid = f"cohort-{parameter}-c{cycle}"
    parts = [f'<svg id="{esc(sid)}" class="cohort-chart" data-parameter="{esc(parameter)}" data-cycle="{cycle}" '
             f'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="{W}" height="{height}" '
             f'role="img" aria-label="{esc(PARAMETER_LABELS.get(parameter, parameter))} by window">']
    parts += frame(x, y, top, bottom, f"{PARAMETER_LABELS.get(parameter, parameter)}, cycle {cycle}",
                   PARAMETER_LABELS.get(parameter, parameter), "window (days after MST)", [])
    index = {w: i for i, w in enumerate(windows)}
    patients = sorted({r["patient_id"] for r in samples})
    # Patients are spread a little sideways so equal values stay visible; a patient keeps
    # the same offset in every window, so its paired line runs straight between them.
    offset = {p: (k - (len(patients) - 1) / 2) * min(0.3 / max(len(patients), 1), 0.05) for k, p in enumerate(patients)}
    for p in patients:
        mine = sorted((r for r in samples if r["patient_id"] == p and r["window"] in index), key=lambda r: index[r["window"]])
        if len(mine) > 1:
            pts = " ".join(f"{x(index[r['window']] + offset[p]):.1f},{y(r['value']):.1f}" for r in mine)
            parts.append(f'<polyline class="pair" data-patient="{esc(p)}" points="{pts}"/>')
    for s in stats:
        if s["median"] is None or s["window"] not in index:
            continue
        cx = x(index[s["window"]])
        half = 0.28 * (x(1) - x(0))
        parts.append(f'<rect class="iqr" data-window="{esc(s["window"])}" x="{cx - half:.1f}" y="{y(s["q3"]):.1f}" '
                     f'width="{2 * half:.1f}" height="{max(y(s["q1"]) - y(s["q3"]), 1):.1f}">'
                     f'<title>{esc(s["window"])}: IQR {s["q1"]:.3g}–{s["q3"]:.3g}</title></rect>')
        parts.append(f'<line class="median" data-window="{esc(s["window"])}" data-value="{s["median"]!r}" '
                     f'x1="{cx - half:.1f}" x2="{cx + half:.1f}" y1="{y(s["median"]):.1f}" y2="{y(s["median"]):.1f}">'
                     f'<title>{esc(s["window"])}: median {s["median"]:.3g} (n = {s["n_patients"]})</title></line>')
        if s.get("wilcoxon_p") is not None:
            parts.append(f'<text class="pval" x="{cx:.1f}" y="{top + 14}" text-anchor="middle">'
                         f'p = {_fmt("wilcoxon_p", s["wilcoxon_p"])} (BH {_fmt("p_bh", s["p_bh"])})</text>')
    for r in samples:
        if r["window"] not in index:
            continue
        px, py = x(index[r["window"]] + offset[r["patient_id"]]), y(r["value"])
        parts.append(f'<circle class="pt" data-patient="{esc(r["patient_id"])}" data-window="{esc(r["window"])}" '
                     f'data-value="{r["value"]!r}" cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{PALETTE[0]}">'
                     f'<title>{esc(r["patient_id"])} {esc(r["sample_id"])} (day {esc(r["day_in_cycle"])}): '
                     f'{r["value"]:.3g}</title></circle>')
    parts += legend([("patient (one per window)", PALETTE[0], "circle", True),
                     ("same patient, paired", "#9a9a9a", "line", False),
                     ("median", "#000000", "line", False),
                     ("IQR (box)", "#bdbdbd", "square", False)], top)
    parts.append("</svg>")
    return "\n".join(parts)


def methods_text(params: CohortParams, excluded_immune: int, excluded_chimerism: int) -> str:
    """The methods paragraph (HTML), written from the settings in force."""
    import scipy

    base = params.baseline
    posts = [w for w in params.windows if not w.baseline]
    windows = "; ".join(f"{esc(w.name)}: days {w.first_day} to {w.last_day} (nearest to day {w.target_day})"
                        for w in posts)
    specimens = ", ".join(esc(s) for s in params.specimens) or "none"
    return f"""<div id="methods">
<p>Samples were assigned to windows by their collection date relative to the MST date of the cycle they
follow (the latest MST on or before the collection date). Baseline ({esc(base.name)}): the last sample
collected {-base.last_day} to {-base.first_day} days before the cycle's MST (and not before the previous
cycle's MST). Windows after MST: {windows}; within a window, one sample per patient, the one nearest the
window's target day (ties: the earlier). Windows do not overlap, so a sample belongs to at most one window;
a sample inside a window after one cycle's MST is not the next cycle's baseline. Samples in days 0 to
{posts[0].first_day - 1 if posts else 0} after MST are in no window.</p>
<p>Immune parameters are the latest analysis of each flow sample (view <code>immune_timeline</code>):
CD3+, CD4+CD8- and CD4-CD8+ T cells as % of lymphocytes, the CD4:CD8 ratio, and Th1, Th2, Th0, Th17 and
Treg as % of CD4+CD8- T cells. Per window: median and interquartile range (quartiles by linear
interpolation). Each window after MST was compared with the same patients' baseline by the two-sided
Wilcoxon signed-rank test on the paired differences (window minus baseline; zero differences dropped;
exact null distribution for small samples without ties, normal approximation otherwise; SciPy
{esc(scipy.__version__)}, <code>scipy.stats.wilcoxon</code>), when at least {params.min_pairs} patients had both
values. P values were adjusted for multiple testing by the Benjamini-Hochberg procedure over all tests in
the table (<code>scipy.stats.false_discovery_control</code>); both raw and adjusted p are shown.</p>
<p>Donor chimerism: per sample, method and cell fraction the donors' summed share and whether any donor
was detected above the method's limit of detection (view <code>chimerism_timeline</code>); per window the
number of samples, the number with donor DNA detected, the detection rate, and the median donor % and LOD.</p>
<p>Exclusions: samples flagged for review (failed flow QC checks, or chimerism results whose data need a
look) were left out: {excluded_immune} flow and {excluded_chimerism} chimerism sample(s) in windows (counted
per window in the tables). Donor reference samples, unstimulated control tubes and specimens other than
{specimens} (a blank specimen counts as blood) are not compared; a value the panel or the data cannot
support (NULL) is missing for that parameter only.</p>
</div>"""


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:24px;color:#222;max-width:1060px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px} svg{display:block;margin:6px 0} svg text{font-family:inherit}
.title{font-size:14px;font-weight:600} .tick{font-size:11px;fill:#444} .axis{font-size:12px;fill:#333}
.legend{font-size:12px;fill:#222} .frame{fill:none;stroke:#888} .grid{stroke:#e6e6e6} .tickmark{stroke:#888}
.pair{fill:none;stroke:#9a9a9a;stroke-width:1;opacity:.8} .iqr{fill:#bdbdbd;fill-opacity:.35;stroke:#888}
.median{stroke:#000;stroke-width:2.5} .pval{font-size:11px;fill:#333} .pt{stroke:#fff;stroke-width:.8}
table{border-collapse:collapse;font-size:12px;margin:6px 0} th,td{border:1px solid #ddd;padding:3px 6px}
th{background:#f4f4f4;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
#methods p{font-size:13px;line-height:1.5;max-width:900px} code{background:#f4f4f4;padding:0 3px}
"""


def build_cohort_page(con, params: CohortParams) -> str:
    """The page's HTML text (see the module docstring); ``con`` has the cohort views for ``params``."""
    stats = _rows(con, "SELECT * FROM cohort_immune")
    samples = _rows(con, "SELECT patient_id, cycle, \"window\", window_order, sample_id, day_in_cycle, parameter, value "
                         "FROM cohort_immune_samples ORDER BY cycle, window_order, patient_id")
    chim = _rows(con, "SELECT * FROM cohort_chimerism")
    excluded_immune = con.execute("SELECT count(*) FROM cohort_immune_candidates WHERE review").fetchone()[0]
    excluded_chim = con.execute("SELECT count(DISTINCT sample_id) FROM cohort_chimerism_samples WHERE review"
                                ).fetchone()[0]
    charts = []
    for cycle in sorted({s["cycle"] for s in stats}):
        mine = [s for s in stats if s["cycle"] == cycle]
        windows = [w.name for w in params.windows if any(s["window"] == w.name for s in mine)]
        for parameter in PARAMETER_LABELS:
            pstats = [s for s in mine if s["parameter"] == parameter]
            psamples = [r for r in samples if r["cycle"] == cycle and r["parameter"] == parameter]
            if psamples:
                charts.append(parameter_svg(parameter, cycle, windows, psamples, pstats))
    n_patients = len({r["patient_id"] for r in samples})
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>graftwatch cohort: immune reconstitution after MST</title>
<style>{_CSS}</style></head>
<body>
<h1>Cohort: immune reconstitution and donor chimerism after MST</h1>
<p class="meta">{n_patients} patient(s) with flow results in a window; {len(chim)} chimerism row(s).
Latest analysis of each sample. Generated {generated} by graftwatch.</p>
<h2>Immune parameters by window</h2>
{"".join(charts) or '<p class="meta">No flow result falls in a window.</p>'}
<h2>Statistics (view cohort_immune)</h2>
{_table("cohort-immune-table", stats, IMMUNE_COLUMNS)}
<h2>Donor chimerism detection (view cohort_chimerism)</h2>
{_table("cohort-chimerism-table", chim, CHIMERISM_COLUMNS)}
<h2>Methods</h2>
{methods_text(params, excluded_immune, excluded_chim)}
</body></html>
"""
