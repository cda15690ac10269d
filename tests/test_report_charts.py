"""The patient report's chart and table elements for a lab lead (issue 18), checked on the
DOM the page builder emits (reports/patient.py; data in, text out, no store needed).

Rows are shaped like ``chimerism_timeline`` rows: STR (LOD 1 %), qPCR (LOD 0.1 %, LOQ 0.5 %
from a dilution series) and ddPCR (limits of blank varying by plate: LOD 0.02 and 0.05 %),
one donor, whole blood, days 30 and 60.
"""

from __future__ import annotations

import datetime as dt
import html.parser

from reports.patient import CHIMERISM_COLUMNS, _Data, _table, _x_scale, chimerism_svg
from reports.svg import RIGHT, W


def _row(sid, day, method, pct, lod, loq=None, status="ok", detected=True):
    return {"sample_id": sid, "collection_date": dt.date(2025, 1, 1) + dt.timedelta(days=day), "days_post_mst": day,
            "cycle": 1, "cell_fraction": "whole", "method": method, "donor_id": "D1", "donor_pct": pct,
            "ci_low": pct * 0.8, "ci_high": pct * 1.2, "lod_pct": lod, "loq_pct": loq, "detected": detected,
            "status": status, "message": None, "review": False, "review_reasons": None}


ROWS = [
    _row("S30", 30, "str", 12.0, 1.0), _row("S60", 60, "str", 6.0, 1.0),
    _row("S30", 30, "qpcr", 11.0, 0.1, 0.5), _row("S60", 60, "qpcr", 0.3, 0.1, 0.5, "detected_not_quantifiable"),
    _row("S30", 30, "ddpcr", 10.5, 0.02), _row("S60", 60, "ddpcr", 0.04, 0.05, None, "below_lod", False),
]


class _Dom(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict, list[str]]] = []
        self._open: list[list[str]] = []

    def handle_starttag(self, tag, attrs):
        text: list[str] = []
        self.elements.append((tag, dict(attrs), text))
        self._open.append(text)

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), []))

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        if self._open:
            self._open[-1].append(data)


def _dom(text: str) -> _Dom:
    d = _Dom()
    d.feed(text)
    return d


def _chart() -> _Dom:
    data = _Data("P1", [], ROWS, [{"cycle": 1, "mst_date": dt.date(2025, 1, 1), "donor_id": "D1", "day": 0}],
                 [], [], {}, "days since first MST", {"S30": 30, "S60": 60})
    return _dom(chimerism_svg(data, _x_scale(data)))


def test_methods_have_distinct_colours():
    dom = _chart()
    strokes, current = {}, None
    for tag, a, _ in dom.elements:
        if tag == "g" and a.get("class") == "series":
            current = a["data-method"]
        elif tag == "polyline" and a.get("class") == "trend":
            strokes[current] = a["stroke"]
    assert set(strokes) == {"str", "qpcr", "ddpcr"}
    assert len(set(strokes.values())) == 3, strokes


def test_lod_and_loq_lines_labelled_with_values_inside_the_plot():
    dom = _chart()
    labels = {(a["class"], a["data-method"]): "".join(t) for tag, a, t in dom.elements
              if tag == "text" and a.get("class") in ("lodlabel", "loqlabel")}
    assert labels == {
        ("lodlabel", "str"): "STR LOD 1 %",
        ("lodlabel", "qpcr"): "qPCR LOD 0.1 %",
        ("loqlabel", "qpcr"): "qPCR LOQ 0.5 %",
        ("lodlabel", "ddpcr"): "ddPCR LOD 0.02–0.05 %",
    }
    lines = {(a["class"], a["data-method"]) for tag, a, _ in dom.elements
             if tag in ("line", "polyline") and a.get("class") in ("lod", "loq")}
    assert lines == {(cls.removesuffix("label"), method) for cls, method in labels}
    for tag, a, _ in dom.elements:  # right-aligned at the plot's inner edge: never clipped
        if tag == "text" and a.get("class") in ("lodlabel", "loqlabel"):
            assert a["text-anchor"] == "end" and float(a["x"]) <= W - RIGHT
    ys = [float(a["y"]) for tag, a, _ in dom.elements if tag == "text" and a.get("class") in ("lodlabel", "loqlabel")]
    assert len(set(ys)) == len(ys)  # stacked, not on top of each other


def test_status_and_method_codes_shown_in_words():
    dom = _dom(_table("chimerism-table", ROWS, CHIMERISM_COLUMNS + ("status",)))
    cells = [(a["data-col"], a.get("data-value"), "".join(t)) for tag, a, t in dom.elements
             if tag == "td" and a.get("data-col") in ("method", "status")]
    shown = {(col, value): text for col, value, text in cells}
    assert shown[("method", "qpcr")] == "qPCR" and shown[("method", "ddpcr")] == "ddPCR"
    assert shown[("method", "str")] == "STR"
    assert shown[("status", "detected_not_quantifiable")] == "detected, not quantifiable"
    assert shown[("status", "below_lod")] == "below the limit of detection"
    assert not any("_" in text for _col, _value, text in cells)
