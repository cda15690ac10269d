"""The patient report: one patient's timelines, values and QC flags as one HTML page.

One self-contained HTML file (inline SVG, inline CSS, no script, nothing fetched at view
time) for the physician and the lab lead:

* chimerism timeline: donor % on a log axis against days since the first MST, one series
  (own colour and method shape) per cell fraction x donor x method, CI whiskers, each
  method's LOD (and LOQ where it is higher) as a dashed line labelled with its value,
  not-detected results as open markers drawn at their LOD, MST cycles as vertical lines;
* immune timeline: CD3/CD4/CD8 % of lymphocytes, the CD4:CD8 ratio, and Th1/Th2/Th0/Th17/
  Treg % of CD4, on the same day axis;
* the value tables (with ``review`` and its reasons), QC flags in words (failed ``flow_qc``
  checks with their message, analyses marked for review, chimerism results with a status
  other than ok) and each flow sample's gating picture embedded as a ``data:`` URI, so the
  file works mailed or moved, offline (the PNG bytes come from the caller:
  :func:`build_report`'s ``picture_png``).

Every number comes from the views ``immune_timeline`` and ``chimerism_timeline`` (the
latest analysis of each sample); each table cell carries the exact value in
``data-value`` (``repr`` of the float, ISO dates) so a test or a script can check the
report against the views. Patient identifiers appear in the report (that is its purpose)
but never in logs.

Data in, text out: the caller passes an open DuckDB connection on the store's views
(:func:`storage.views.connect`); writing the file is ``flows.report``'s job.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
import base64
from typing import Callable

from reports.svg import BOTTOM, LEFT, PALETTE, RIGHT, TOP, W, Scale, close_tag, esc, frame, legend, marker

IMMUNE_COLUMNS = (
    "sample_id", "collection_date", "days_post_mst", "cycle", "cd3_pct_lymph", "cd4_pct_lymph",
    "cd8_pct_lymph", "cd4_cd8_ratio", "th1_pct_cd4", "th2_pct_cd4", "th0_pct_cd4", "th17_pct_cd4",
    "treg_pct_cd4", "review", "review_reasons",
)
CHIMERISM_COLUMNS = (
    "sample_id", "collection_date", "days_post_mst", "cycle", "cell_fraction", "method", "donor_id",
    "donor_pct", "ci_low", "ci_high", "lod_pct", "detected", "review", "review_reasons",
)
_HEADERS = {
    "sample_id": "sample", "collection_date": "collected", "days_post_mst": "day", "cycle": "cycle",
    "cd3_pct_lymph": "CD3+ % lymph", "cd4_pct_lymph": "CD4+CD8- % lymph", "cd8_pct_lymph": "CD4-CD8+ % lymph",
    "cd4_cd8_ratio": "CD4:CD8", "th1_pct_cd4": "Th1 % CD4", "th2_pct_cd4": "Th2 % CD4", "th0_pct_cd4": "Th0 % CD4",
    "th17_pct_cd4": "Th17 % CD4", "treg_pct_cd4": "Treg % CD4", "cell_fraction": "fraction", "method": "method",
    "donor_id": "donor", "donor_pct": "donor %", "ci_low": "CI low", "ci_high": "CI high", "lod_pct": "LOD %",
    "detected": "detected", "status": "status", "review": "review", "review_reasons": "why review",
}
# What the codes stored in the views mean, for the page (the cells keep the code in data-value).
METHOD_NAMES = {"str": "STR", "qpcr": "qPCR", "ddpcr": "ddPCR"}
STATUS_WORDS = {
    "ok": "ok", "below_lod": "below the limit of detection", "not_detected": "not detected",
    "detected_not_quantifiable": "detected, not quantifiable", "no_pre_sample": "no pre-transplant sample",
    "no_donor_sample": "no donor sample", "no_donor_listed": "no donor listed",
    "no_informative_marker": "no informative marker", "reference_failed": "reference gene failed",
}
_WORDS = {"method": METHOD_NAMES, "status": STATUS_WORDS}


def method_name(code: str | None) -> str:
    """``qpcr`` -> ``qPCR``; an unknown code is shown as it is."""
    return METHOD_NAMES.get(code or "", code or "")

METHOD_SHAPES = {"str": "circle", "qpcr": "square", "ddpcr": "diamond"}


def _rows(con, sql: str, params: list) -> list[dict]:
    cur = con.execute(sql, params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def known_patients(con) -> list[str]:
    """Patient ids named by the sample sheet or the registry."""
    rows = con.execute(
        "SELECT patient_id FROM sheet_latest WHERE patient_id IS NOT NULL "
        "UNION SELECT patient_id FROM patients_latest WHERE patient_id IS NOT NULL ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


# ----------------------------------------------------------------------------- data


@dataclass
class _Data:
    patient_id: str
    immune: list[dict]
    chimerism: list[dict]
    cycles: list[dict]  # cycle, mst_date, donor_id, day
    qc_failed: list[dict]
    review: list[dict]
    pictures: dict[str, bytes | None]  # flow sample_id -> PNG of its gating picture, or None
    x_label: str
    x_of: dict[str, float | None]  # sample_id -> x position (days)


#: ``(sample_id, analysis_id) -> PNG bytes`` of a flow analysis's gating picture, or None.
PicturePng = Callable[[str, str], "bytes | None"]


def load(con, patient_id: str, picture_png: PicturePng | None = None) -> _Data:
    """Everything the report shows, read from the views (latest analysis of each sample)."""
    order = " ORDER BY days_post_mst NULLS LAST, collection_date NULLS LAST, sample_id"
    immune = _rows(con, "SELECT * FROM immune_timeline WHERE patient_id = ?" + order, [patient_id])
    chim = _rows(con, "SELECT * FROM chimerism_timeline WHERE patient_id = ?" + order + ", method, donor_id",
                 [patient_id])
    cycles = _rows(con, "SELECT cycle, mst_date, donor_id FROM patients_latest WHERE patient_id = ? ORDER BY cycle",
                   [patient_id])
    qc_failed = _rows(con, """
        SELECT q.sample_id, q."check", q.reason FROM flow_review_reasons q
        JOIN sheet_latest s ON s.sample_id = q.sample_id
        WHERE s.patient_id = ? ORDER BY q.sample_id, q."check" """, [patient_id])
    review = _rows(con, """
        SELECT a.sample_id, a.kind, a.analysis_id FROM latest_analyses a
        JOIN sheet_latest s ON s.sample_id = a.sample_id
        WHERE s.patient_id = ? AND a.review ORDER BY a.sample_id, a.kind""", [patient_id])

    first_mst = min((c["mst_date"] for c in cycles if c["mst_date"] is not None), default=None)
    for c in cycles:
        c["day"] = (c["mst_date"] - first_mst).days if first_mst and c["mst_date"] else None
    x_label = "days since first MST"
    x_of: dict[str, float | None] = {}
    if first_mst is None:
        # No registry row yet: days_post_mst is NULL everywhere; plot against the first
        # collection date instead, and say so on the axis.
        dates = [r["collection_date"] for r in immune + chim if r.get("collection_date")]
        start = min(dates, default=None)
        x_label = "days since first sample (no MST date registered)"
        for r in immune + chim:
            d = r.get("collection_date")
            x_of[r["sample_id"]] = (d - start).days if d and start else None
    else:
        for r in immune + chim:
            x_of[r["sample_id"]] = r.get("days_post_mst")

    pictures: dict[str, bytes | None] = {}
    for r in immune:
        sid, aid = r["sample_id"], r.get("analysis_id")
        pictures[sid] = picture_png(sid, aid) if aid and picture_png is not None else None
    return _Data(patient_id, immune, chim, cycles, qc_failed, review, pictures, x_label, x_of)


# ----------------------------------------------------------------------------- SVG


def _x_scale(data: _Data) -> Scale:
    xs = [x for x in data.x_of.values() if x is not None] + [c["day"] for c in data.cycles if c["day"] is not None]
    lo, hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    pad = max(5.0, 0.04 * (hi - lo))
    return Scale(lo - pad, hi + pad, LEFT, W - RIGHT)


def _fmt_pct(v: float | None) -> str:
    """Donor % for display: 3 significant digits, never rounding a small value to 0."""
    if v is None:
        return "–"
    return f"{v:.3g}" if v != 0 else "0"


def _limit_lines(rows: list[dict], x_of: dict, x: Scale, y: Scale) -> list[str]:
    """Each method's LOD, and its LOQ where higher, as a dashed line labelled with its value.

    A constant limit is one line across; limits that vary by sample (ddPCR limits of blank
    vary by plate) are a line through the per-sample values, labelled with their range.
    Labels sit inside the plot, right-aligned, stacked so two methods never overlap.
    """
    out, n_label = [], 0
    for method in sorted({r["method"] for r in rows}):
        for kind, col in (("lod", "lod_pct"), ("loq", "loq_pct")):
            pts = sorted({(x_of[r["sample_id"]], r[col]) for r in rows if r["method"] == method
                          and r.get(col) is not None and r[col] > 0
                          and (kind == "lod" or r[col] > (r.get("lod_pct") or 0))})
            if not pts:
                continue
            values = sorted({p[1] for p in pts})
            shown = (f"{values[0]:.3g} %" if len(values) == 1
                     else f"{values[0]:.3g}–{values[-1]:.3g} %")
            label = f"{method_name(method)} {kind.upper()} {shown}"
            if len(values) == 1:
                py = y(values[0])
                out.append(f'<line class="{kind}" data-method="{esc(method)}" data-{kind}="{values[0]!r}" '
                           f'x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}"/>')
            else:
                path = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py in pts)
                out.append(f'<polyline class="{kind}" data-method="{esc(method)}" points="{path}"/>')
                py = y(pts[-1][1])
            out.append(f'<text class="{kind}label" data-method="{esc(method)}" x="{W - RIGHT - 4}" '
                       f'y="{py - 4 - 12 * n_label:.1f}" text-anchor="end">{esc(label)}</text>')
            n_label += 1
    return out


def chimerism_svg(data: _Data, x: Scale) -> str:
    """The chimerism timeline (``<svg id="chimerism-timeline">``)."""
    height = 430
    top, bottom = TOP + 6, height - BOTTOM
    rows = [r for r in data.chimerism if data.x_of.get(r["sample_id"]) is not None]
    positives = [v for r in rows for v in (r.get("donor_pct"), r.get("ci_low"), r.get("lod_pct"))
                 if v is not None and v > 0]
    lo = math.floor(math.log10(min(positives))) if positives else -2
    lo = min(lo, -1)  # at least three decades, so 1 % and 0.1 % read at a glance
    y = Scale(lo, 2.0, bottom, top, log=True)
    parts = [f'<svg id="chimerism-timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" '
             f'width="{W}" height="{height}" role="img" aria-label="Donor chimerism timeline">']
    parts += frame(x, y, top, bottom, "Donor chimerism (log scale)", "donor % (log)", data.x_label, data.cycles)
    if not rows:
        parts.append(f'<text class="empty" x="{(LEFT + W - RIGHT) / 2:.0f}" y="{(top + bottom) / 2:.0f}" '
                     'text-anchor="middle">No chimerism results for this patient.</text></svg>')
        return "\n".join(parts)

    parts += _limit_lines(rows, data.x_of, x, y)

    series: dict[tuple, list[dict]] = {}
    for r in rows:
        who = "recipient" if r.get("contributor") == "recipient" else "donor"  # recipient's share beside 2+ donors
        key = (r.get("cell_fraction") or "whole", r.get("donor_id") or who, r["method"])
        series.setdefault(key, []).append(r)
    # One colour per series: two methods on the same fraction must not look alike.
    colors = {key: PALETTE[i % len(PALETTE)] for i, key in enumerate(sorted(series))}
    keys = []
    for key in sorted(series):
        fraction, donor, method = key
        color, shape = colors[key], METHOD_SHAPES.get(method, "triangle")
        pts = sorted(series[key], key=lambda r: data.x_of[r["sample_id"]])
        parts.append(f'<g class="series" data-fraction="{esc(fraction)}" data-donor="{esc(donor)}" '
                     f'data-method="{esc(method)}">')
        coords = []
        for r in pts:
            detected = bool(r.get("detected"))
            v = r.get("donor_pct") if detected else (r.get("lod_pct") or 10 ** y.lo)
            px, py = x(data.x_of[r["sample_id"]]), y(v if v and v > 0 else 10 ** y.lo)
            coords.append(f"{px:.1f},{py:.1f}")
        parts.append(f'<polyline class="trend" stroke="{color}" points="{" ".join(coords)}"/>')
        for r in pts:
            detected = bool(r.get("detected"))
            px = x(data.x_of[r["sample_id"]])
            if detected and r.get("ci_low") is not None and r.get("ci_high") is not None:
                parts.append(f'<line class="ci" stroke="{color}" x1="{px:.1f}" x2="{px:.1f}" '
                             f'y1="{y(r["ci_low"]):.1f}" y2="{y(min(r["ci_high"], 100.0)):.1f}"/>')
            v = r.get("donor_pct") if detected else (r.get("lod_pct") or 10 ** y.lo)
            py = y(v if v and v > 0 else 10 ** y.lo)
            what = (f"{_fmt_pct(r.get('donor_pct'))} % donor (CI {_fmt_pct(r.get('ci_low'))}–"
                    f"{_fmt_pct(r.get('ci_high'))})" if detected else f"not detected (LOD {_fmt_pct(r.get('lod_pct'))} %)")
            attrs = (f'class="pt {"detected" if detected else "not-detected"}" data-sample="{esc(r["sample_id"])}" '
                     f'data-value="{r.get("donor_pct")!r}"')
            parts.append(marker(shape, px, py, color, detected, attrs)[:-2]
                         + f'><title>{esc(r["sample_id"])}, day {esc(r.get("days_post_mst"))}, '
                           f'{esc(method_name(method))}, {esc(donor)}, {esc(fraction)}: {esc(what)}</title>'
                         + close_tag(shape))
        parts.append("</g>")
        keys.append((f"{fraction} · {donor} · {method_name(method)}", color, shape, True))
    keys.append(("not detected (at LOD)", "#555555", "circle", False))
    keys.append(("limit of detection / quantification", "#777777", "dash", False))
    keys.append(("MST cycle", "#9a9a9a", "line", False))
    parts += legend(keys, top)
    parts.append("</svg>")
    return "\n".join(parts)


_IMMUNE_PANELS = (
    ("immune-lymphocytes", "T cells: % of lymphocytes", "% of lymphocytes",
     (("cd3_pct_lymph", "CD3+"), ("cd4_pct_lymph", "CD4+CD8-"), ("cd8_pct_lymph", "CD4-CD8+")), (0.0, 100.0)),
    ("immune-ratio", "CD4:CD8 ratio", "CD4:CD8", (("cd4_cd8_ratio", "CD4:CD8"),), None),
    ("immune-th", "T-helper subsets: % of CD4+CD8- T cells", "% of CD4",
     (("th1_pct_cd4", "Th1"), ("th2_pct_cd4", "Th2"), ("th0_pct_cd4", "Th0"), ("th17_pct_cd4", "Th17"),
      ("treg_pct_cd4", "Treg")), None),
)


def immune_svg(data: _Data, x: Scale) -> str:
    """The immune timeline (``<svg id="immune-timeline">``): three stacked panels."""
    panel_h = 250
    height = panel_h * len(_IMMUNE_PANELS)
    parts = [f'<svg id="immune-timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" '
             f'width="{W}" height="{height}" role="img" aria-label="Immune reconstitution timeline">']
    rows = [r for r in data.immune if data.x_of.get(r["sample_id"]) is not None]
    for k, (gid, title, y_label, cols, fixed) in enumerate(_IMMUNE_PANELS):
        top, bottom = panel_h * k + TOP + 6, panel_h * (k + 1) - BOTTOM
        vals = [r[c] for r in rows for c, _ in cols if r.get(c) is not None]
        if fixed:
            lo, hi = fixed
        else:
            lo, hi = 0.0, (max(vals) * 1.15 if vals else 1.0)
            if gid == "immune-ratio":
                hi = max(hi, 1.5)  # keep the 1:1 line in view
        y = Scale(lo, hi, bottom, top)
        parts.append(f'<g id="{gid}">')
        parts += frame(x, y, top, bottom, title, y_label, data.x_label, data.cycles)
        if gid == "immune-ratio":
            py = y(1.0)
            parts.append(f'<line class="ref" x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}"/>')
        keys = []
        for i, (col, label) in enumerate(cols):
            color = PALETTE[i % len(PALETTE)]
            pts = sorted((r for r in rows if r.get(col) is not None), key=lambda r: data.x_of[r["sample_id"]])
            parts.append(f'<g class="series" data-column="{col}">')
            if pts:
                coords = " ".join(f"{x(data.x_of[r['sample_id']]):.1f},{y(r[col]):.1f}" for r in pts)
                parts.append(f'<polyline class="trend" stroke="{color}" points="{coords}"/>')
            for r in pts:
                px, py = x(data.x_of[r["sample_id"]]), y(r[col])
                parts.append(f'<circle class="pt" data-sample="{esc(r["sample_id"])}" data-value="{r[col]!r}" '
                             f'cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{color}" stroke="{color}">'
                             f'<title>{esc(r["sample_id"])}, day {esc(r.get("days_post_mst"))}: {esc(label)} '
                             f'{r[col]:.3g}</title></circle>')
            parts.append("</g>")
            keys.append((label, color, "circle", True))
        if not rows:
            parts.append(f'<text class="empty" x="{(LEFT + W - RIGHT) / 2:.0f}" y="{(top + bottom) / 2:.0f}" '
                         'text-anchor="middle">No flow cytometry results for this patient.</text>')
        parts += legend(keys, top)
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- tables


def _cell(col: str, v) -> str:
    """A table cell: rounded for reading, the exact value in ``data-value``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f'<td data-col="{col}" data-null="1">–</td>'
    if isinstance(v, bool):
        return f'<td data-col="{col}" data-value="{str(v).lower()}">{"yes" if v else "no"}</td>'
    if isinstance(v, float):
        if col in ("donor_pct", "ci_low", "ci_high", "lod_pct"):
            shown = _fmt_pct(v)
        elif col == "cd4_cd8_ratio":
            shown = f"{v:.2f}"
        else:
            shown = f"{v:.1f}"
        return f'<td data-col="{col}" data-value="{v!r}" class="num">{shown}</td>'
    if isinstance(v, (dt.date, dt.datetime)):
        return f'<td data-col="{col}" data-value="{v.isoformat()}">{v.isoformat()}</td>'
    if isinstance(v, int):
        return f'<td data-col="{col}" data-value="{v}" class="num">{v}</td>'
    shown = _WORDS.get(col, {}).get(v, v)
    return f'<td data-col="{col}" data-value="{esc(v)}">{esc(shown)}</td>'


def _table(table_id: str, rows: list[dict], columns: tuple[str, ...], extra=None) -> str:
    head = "".join(f'<th data-col="{c}">{esc(_HEADERS.get(c, c))}</th>' for c in columns)
    if extra:
        head += f"<th>{esc(extra[0])}</th>"
    body = []
    for r in rows:
        cells = "".join(_cell(c, r.get(c)) for c in columns)
        if extra:
            cells += f"<td>{extra[1](r)}</td>"
        body.append(f'<tr data-sample="{esc(r["sample_id"])}" data-analysis="{esc(r.get("analysis_id") or "")}">'
                    f"{cells}</tr>")
    if not rows:
        body.append(f'<tr><td colspan="{len(columns) + (1 if extra else 0)}">none</td></tr>')
    return (f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>' + "\n".join(body)
            + "</tbody></table>")


def _qc_section(data: _Data) -> str:
    items = []
    for r in data.review:
        items.append(f'<li class="flag review" data-sample="{esc(r["sample_id"])}"><b>{esc(r["sample_id"])}</b>: '
                     f'{esc(r["kind"])} analysis marked for review</li>')
    for r in data.qc_failed:
        items.append(f'<li class="flag qc" data-sample="{esc(r["sample_id"])}" data-check="{esc(r["check"])}">'
                     f'<b>{esc(r["sample_id"])}</b>: {esc(r["reason"])}</li>')
    for r in data.chimerism:
        status = r.get("status")
        if status and status != "ok":
            msg = r.get("message") or STATUS_WORDS.get(status, status)
            items.append(f'<li class="flag chimerism" data-sample="{esc(r["sample_id"])}" data-status="{esc(status)}">'
                         f'<b>{esc(r["sample_id"])}</b> {esc(method_name(r["method"]))} '
                         f'{esc(r.get("donor_id") or "")}: {esc(STATUS_WORDS.get(status, status))}: {esc(msg)}</li>')
    if not items:
        return '<p id="qc-flags" class="ok">No QC flags: every check passed and no analysis is marked for review.</p>'
    return '<ul id="qc-flags">' + "\n".join(items) + "</ul>"


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:24px;color:#222;
max-width:1060px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px} svg{display:block;margin:6px 0}
svg text{font-family:inherit} .title{font-size:14px;font-weight:600} .tick{font-size:11px;fill:#444}
.axis{font-size:12px;fill:#333} .legend{font-size:12px;fill:#222} .empty{font-size:14px;fill:#888}
.frame{fill:none;stroke:#888} .grid{stroke:#e6e6e6} .tickmark{stroke:#888}
.mst{stroke:#9a9a9a;stroke-width:1.5;stroke-dasharray:2 3} .mstlabel{font-size:11px;fill:#777}
.lod{stroke:#777;stroke-width:1.3;stroke-dasharray:6 4;fill:none} .lodlabel{font-size:11px;fill:#666}
.trend{fill:none;stroke-width:1.4;opacity:.7} .ci{stroke-width:1.4} .ref{stroke:#bbb;stroke-dasharray:4 3}
table{border-collapse:collapse;font-size:12px;margin:6px 0} th,td{border:1px solid #ddd;padding:3px 6px}
th{background:#f4f4f4;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.flag{margin:2px 0} .ok{color:#2a7a2a} code{background:#f4f4f4;padding:0 3px}
.loq{stroke:#999;stroke-width:1.2;stroke-dasharray:2 3;fill:none} .loqlabel{font-size:11px;fill:#666}
#gating-pictures{list-style:none;padding:0} #gating-pictures li{margin:10px 0}
img.gating{max-width:100%;border:1px solid #ddd}
"""


def _anchor(sample_id: str) -> str:
    """An element id for a sample's picture (ids may hold any character)."""
    return "gating-" + "".join(c if c.isalnum() or c in "-_" else f".{ord(c):x}." for c in sample_id)


def build_report(con, patient_id: str, picture_png: PicturePng | None = None) -> str:
    """The report's HTML text (see the module docstring).

    ``picture_png(sample_id, analysis_id)``: the PNG of that analysis's gating picture, or
    None when there is none (the row then says "no picture"); embedded as a data URI.
    """
    data = load(con, patient_id, picture_png)
    x = _x_scale(data)
    cycles = ", ".join(
        f"cycle {esc(c['cycle'])} on {esc(c['mst_date'])} (donor {esc(c['donor_id'] or '?')})" for c in data.cycles
    ) or "no MST cycle registered"
    dates = [r["collection_date"] for r in data.immune + data.chimerism if r.get("collection_date")]
    span = f"{min(dates)} to {max(dates)}" if dates else "no samples"
    unplotted = sorted({r["sample_id"] for r in data.immune + data.chimerism if data.x_of.get(r["sample_id"]) is None})
    note = (f'<p class="meta">Not plotted (no collection date): {esc(", ".join(unplotted))}</p>' if unplotted else "")

    def picture(r: dict) -> str:
        if not data.pictures.get(r["sample_id"]):
            return '<span class="nopic">no picture</span>'
        return f'<a class="gating" href="#{_anchor(r["sample_id"])}">gating</a>'

    pics = []
    for r in data.immune:
        png = data.pictures.get(r["sample_id"])
        sid = esc(r["sample_id"])
        pics.append(f'<li id="{_anchor(r["sample_id"])}"><b>{sid}</b><br><img class="gating" alt="gating of {sid}" '
                    f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></li>' if png
                    else f'<li>{sid}: no gating picture (original or gates not available)</li>')
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>graftwatch report: {esc(patient_id)}</title>
<style>{_CSS}</style></head>
<body>
<h1>Patient {esc(patient_id)}</h1>
<p class="meta">MST: {cycles}. Samples collected {esc(span)}: {len(data.immune)} flow, {len({r["sample_id"] for r in data.chimerism})} chimerism.
Latest analysis of each sample. Generated {generated} by graftwatch.</p>
{note}
<h2>Donor chimerism</h2>
{chimerism_svg(data, x)}
<h2>Immune reconstitution</h2>
{immune_svg(data, x)}
<h2>QC flags</h2>
{_qc_section(data)}
<h2>Values: immune timeline</h2>
{_table("immune-table", data.immune, IMMUNE_COLUMNS, ("gating picture", picture))}
<h2>Values: chimerism timeline</h2>
{_table("chimerism-table", data.chimerism, CHIMERISM_COLUMNS + (("status",) if any("status" in r for r in data.chimerism) else ()))}
<h2>Gating pictures</h2>
<ul id="gating-pictures">{"".join(pics) or "<li>no flow samples</li>"}</ul>
</body></html>
"""
