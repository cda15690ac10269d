"""Gating pictures: one sample's gate hierarchy as a grid of density plots, gates drawn.

A lab lead signs a sample off by looking at where each gate sits on the events it was
placed on. :func:`render_gating_png` draws one panel per *parent population x pair of
dimensions*: the parent's events as a 2-D density (or a histogram for a 1-D range gate),
with every gate on those axes drawn over it (polygons, rectangles, ellipses, quadrant
dividers) and labelled with its name and % of parent. Boolean gates have no shape; they
are listed in a text panel with their counts.

Coordinates are the gate's own: each dimension is compensated and transformed as the
gate says (``compensation_ref``, ``transformation_ref`` of the flowkit strategy). The
caller supplies them (``columns``: the gating evaluator's own columns,
``gating.sample_gating.sample_columns``), so a gate line sits exactly where gating tested
it; memberships (the masks) come from the caller too, so the % shown are the stored ones.

Data in, PNG bytes out. Pictures live beside the store (:func:`picture_path`), one PNG per
sample and analysis; ``flows.gating_plots`` writes them and ``graftwatch report`` links
them. One panel that cannot be drawn becomes a text panel saying why.

matplotlib is used with the Agg backend (no display needed).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

__all__ = ["render_gating_png", "picture_path", "picture_rows", "GateColumns", "PICTURES_DIR"]

#: Folder, beside the store root, holding ``<sample_id>/<analysis_id>.png``.
PICTURES_DIR = "gating_plots"

# Events drawn per picture: densities look the same from 200k events as from 2M, and
# logicle transforms cost ~100 ms per million values per channel.
MAX_EVENTS = 200_000
N_COLS = 4
PANEL_INCHES = 3.0
DPI = 100  # 300 px panels: labels legible, ~150-350 kB per sample
BINS = 120
GATE_COLOR = "#d62728"
# Labels sit on dense events: a light box keeps them readable.
_LABEL_BOX = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7}

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def _safe_name(text: str) -> str:
    """A file-name-safe form of an id: characters outside [A-Za-z0-9._-] become %XX.

    Reversible and collision-free (``%`` itself is escaped), so two sample ids never share
    a folder; a leading dot is escaped too, so no id becomes ``..`` or a hidden file.
    """
    out = _SAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode("utf-8")), text)
    if out.startswith("."):
        out = "%2E" + out[1:]
    return out or "%00"


def picture_path(store_root: str, sample_id: str, analysis_id: str) -> Path:
    """Where the gating picture of one sample analysis lives: ``<store>/../gating_plots/<sample>/<analysis>.png``.

    Beside the store rather than in it: the store holds Parquet only (readers glob it).
    Ids are made file-name safe (see :func:`_safe_name`). ``store_root`` may be a folder
    or a ``file://`` URI; pictures need a local store (raises ``ValueError`` otherwise).
    """
    from storage.store import Store

    local = Store(store_root).local_root
    if local is None:
        raise ValueError("gating pictures are written beside a local store; this store is remote")
    return local.parent / PICTURES_DIR / _safe_name(sample_id) / f"{_safe_name(analysis_id)}.png"


class GateColumns(Protocol):
    """What a picture needs of the sample's events (``gating.sample_gating.sample_columns``)."""

    def gate_columns(self, gate) -> list[np.ndarray]:
        """One column per dimension of ``gate``, in the gate's own coordinates."""

    def channel_index(self, dim_id: str, comp_ref: Any) -> int:
        """Channel of a dimension id (LookupError when the sample has none)."""


def picture_rows(n_events: int) -> np.ndarray:
    """The events drawn: all, or ``MAX_EVENTS`` of them (seeded: same picture every time)."""
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(n_events, MAX_EVENTS, replace=False)) if n_events > MAX_EVENTS else np.arange(n_events)


def _axis_label(sample, cols: GateColumns, dim_id: str) -> str:
    """Axis label: the marker ($PnS) and the detector ($PnN) when they differ."""
    try:
        i = cols.channel_index(dim_id, None)
    except (LookupError, ValueError):
        return dim_id
    pnn, pns = sample.channels[i].pnn, sample.channels[i].pns or ""
    return f"{pns} ({pnn})" if pns and pns != pnn else pnn


def _dim_name(dim) -> str:
    import flowkit as fk

    if isinstance(dim, fk.RatioDimension):
        return dim.ratio_ref
    if isinstance(dim, fk.QuadrantDivider):
        return dim.dimension_ref
    return dim.id


# ----------------------------------------------------------------------------- panels


@dataclass
class _Panel:
    """One plot: the parent population and the gates drawn on the same axes."""

    parent_path: tuple[str, ...]
    dims: tuple
    gates: list = field(default_factory=list)  # (display name, gate object, membership or None)
    quadrant_gate: Any = None
    quadrants: list = field(default_factory=list)  # (display name, quadrant id, membership)


def _panels(strategy, memberships, names) -> tuple[list[_Panel], list]:
    """Group memberships into panels; boolean gates (no shape) are returned apart."""
    import flowkit as fk

    panels: dict[tuple, _Panel] = {}
    booleans = []
    for m in memberships:
        shown = names.get(m.gate_id, m.gate_id)
        if m.gate_type == "Quadrant":
            qid = m.path[-2]
            gate = strategy.get_gate(qid, gate_path=("root",) + tuple(m.path[:-2]))
            key = ("quad", m.path[:-1])
            if key not in panels:
                panels[key] = _Panel(m.parent_path, tuple(gate.dimensions), quadrant_gate=gate)
            panels[key].quadrants.append((shown, m.gate_id, m))
            continue
        gate = strategy.get_gate(m.gate_id, gate_path=("root",) + tuple(m.path[:-1]))
        if isinstance(gate, fk.gates.BooleanGate):
            booleans.append((shown, m))
            continue
        sig = tuple((_dim_name(d), d.compensation_ref, d.transformation_ref) for d in gate.dimensions[:2])
        key = ("gate", m.parent_path, sig)
        if key not in panels:
            panels[key] = _Panel(m.parent_path, tuple(gate.dimensions))
        panels[key].gates.append((shown, gate, m))
    return list(panels.values()), booleans


def _limits(values: np.ndarray, extra: list[float]) -> tuple[float, float]:
    """Axis range: the central 99.8 % of the events, widened to show the gate's own edges."""
    finite = values[np.isfinite(values)]
    if finite.size:
        lo, hi = np.percentile(finite, [0.1, 99.9])
    else:
        lo, hi = 0.0, 1.0
    span = hi - lo if hi > lo else 1.0
    pts = [v for v in extra if v is not None and np.isfinite(v)]
    if pts:
        # Widen to the gate, but not without bound: a band gate drawn to the scale's end
        # would shrink the events to a corner.
        lo = max(min(lo, min(pts)), lo - 0.5 * span)
        hi = min(max(hi, max(pts)), hi + 0.5 * span)
    pad = 0.04 * (hi - lo) if hi > lo else 0.5
    return float(lo - pad), float(hi + pad)


def _pct(m, parent_count: int) -> str:
    return f"{100.0 * m.count / parent_count:.1f} %" if parent_count else "-"


def axis_ticks(transform, lo: float, hi: float) -> tuple[list[float], list[str]] | None:
    """Ticks in the instrument's units for an axis drawn in ``transform``'s scale.

    Linear scales (scatter): round raw values (``50K``, ``100K``); logicle, hyperlog, log and
    other compressing scales: 0 and the decades ``10^k`` (and ``-10^k``) that fall inside
    ``[lo, hi]``, where an analyst expects them. Positions are the transform of the raw
    values, so they sit where the events are. None when there is no transform or fewer than
    two ticks fall in the range (matplotlib's own ticks are kept).
    """
    import flowkit as fk

    from reports.svg import nice_step

    if transform is None:
        return None
    if isinstance(transform, fk.transforms.LinearTransform):
        raw_lo, raw_hi = (float(v) for v in np.asarray(transform.inverse(np.array([[lo], [hi]]))).reshape(-1))
        step = nice_step(raw_hi - raw_lo, 5)
        raw = np.arange(math.ceil(raw_lo / step) * step, raw_hi + 1e-9 * step, step)
        labels = [f"{v / 1000:g}K" if abs(v) >= 1000 else f"{v:g}" for v in raw]
    else:
        raw = np.array([-(10.0 ** k) for k in range(7, 0, -1)] + [0.0] + [10.0 ** k for k in range(1, 8)])
        labels = [("0" if v == 0 else f"$-10^{{{round(math.log10(-v))}}}$" if v < 0
                   else f"$10^{{{round(math.log10(v))}}}$") for v in raw]
    with np.errstate(all="ignore"):
        pos = np.asarray(transform.apply(raw.reshape(-1, 1)), dtype=float).reshape(-1)
    keep = [(float(p), label) for p, label in zip(pos, labels) if np.isfinite(p) and lo <= p <= hi]
    if not isinstance(transform, fk.transforms.LinearTransform):
        # Near 0 logicle packs 0 and +-10^1 together: keep ticks at least 4 % of the axis apart.
        spaced: list[tuple[float, str]] = []
        for p, label in sorted(keep, key=lambda t: abs(float(t[1] == "0") - 1)):
            if all(abs(p - q) >= 0.04 * (hi - lo) for q, _ in spaced):
                spaced.append((p, label))
        keep = sorted(spaced)
    if len(keep) < 2:
        return None
    return [p for p, _ in keep], [label for _, label in keep]


def _set_ticks(axis, transforms: dict, dim, lim: tuple[float, float]) -> None:
    ref = getattr(dim, "transformation_ref", None)
    ticks = axis_ticks(transforms.get(ref) if ref is not None else None, *lim)
    if ticks is not None:
        axis.set_ticks(ticks[0], ticks[1])


def _gate_label(ax, x: float, y: float, text: str, va: str, xlim, ylim) -> None:
    """A gate's name and % near (x, y), kept whole inside the panel (never clipped)."""
    fx = (x - xlim[0]) / ((xlim[1] - xlim[0]) or 1.0)
    fy = (y - ylim[0]) / ((ylim[1] - ylim[0]) or 1.0)
    fx = min(max(fx, 0.03), 0.97)
    ha = "left" if fx < 0.25 else "right" if fx > 0.75 else "center"
    # Two lines of text need about 15 % of the panel's height above (or below) the anchor.
    fy = min(max(fy, 0.03), 0.82) if va == "bottom" else min(max(fy, 0.18), 0.97)
    ax.text(fx, fy, text, ha=ha, va=va, fontsize=7, color=GATE_COLOR, transform=ax.transAxes, clip_on=False,
            bbox=_LABEL_BOX)


def _draw_panel(ax, panel: _Panel, sample, cols: GateColumns, n_drawn: int, sub_masks: dict, names: dict,
                counts: dict, n_events: int, transforms: dict) -> None:
    """Draw one panel; ``counts`` are full-sample counts by path (the % use all events)."""
    import flowkit as fk
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Ellipse, Polygon, Rectangle

    parent = sub_masks.get(panel.parent_path)
    parent_name = names.get(panel.parent_path[-1], panel.parent_path[-1]) if panel.parent_path else "all events"
    gate0 = panel.quadrant_gate if panel.quadrant_gate is not None else panel.gates[0][1]
    data = cols.gate_columns(gate0)
    sel = np.ones(n_drawn, bool) if parent is None else parent
    parent_count = counts.get(panel.parent_path, n_events) if panel.parent_path else n_events
    xs = data[0][sel]
    labels = [_axis_label(sample, cols, _dim_name(d)) for d in gate0.dimensions]
    ax.set_title(f"{parent_name} (n={parent_count:,})", fontsize=9)
    ax.tick_params(labelsize=7)

    if len(data) == 1:
        # 1-D range gate: histogram of the parent, the range shaded.
        gx = []
        for _name, gate, _m in panel.gates:
            gx += [getattr(gate.dimensions[0], "min", None), getattr(gate.dimensions[0], "max", None)]
        lo, hi = _limits(xs, gx)
        ax.hist(xs[np.isfinite(xs)], bins=BINS, range=(lo, hi), color="#4c72b0", histtype="stepfilled")
        ax.set_xlim(lo, hi)
        _set_ticks(ax.xaxis, transforms, gate0.dimensions[0], (lo, hi))
        ax.set_xlabel(labels[0], fontsize=8)
        ax.set_ylabel("events", fontsize=8)
        for name, gate, m in panel.gates:
            a = gate.dimensions[0].min if gate.dimensions[0].min is not None else lo
            b = gate.dimensions[0].max if gate.dimensions[0].max is not None else hi
            ax.axvspan(a, b, color=GATE_COLOR, alpha=0.12)
            for v in (gate.dimensions[0].min, gate.dimensions[0].max):
                if v is not None:
                    ax.axvline(v, color=GATE_COLOR, lw=1.2)
            _gate_label(ax, 0.5 * (max(a, lo) + min(b, hi)), 0.95, f"{name}\n{_pct(m, parent_count)}", "top",
                        (lo, hi), (0.0, 1.0))
        return

    ys = data[1][sel]
    gx, gy = [], []
    for _name, gate, _m in panel.gates:
        if isinstance(gate, fk.gates.PolygonGate):
            v = np.asarray(gate.vertices, dtype=float)
            gx += list(v[:, 0])
            gy += list(v[:, 1])
        elif isinstance(gate, fk.gates.RectangleGate):
            gx += [gate.dimensions[0].min, gate.dimensions[0].max]
            gy += [gate.dimensions[1].min, gate.dimensions[1].max]
        elif isinstance(gate, fk.gates.EllipsoidGate):
            c = np.asarray(gate.coordinates, dtype=float)
            r = np.sqrt(np.diag(np.asarray(gate.covariance_matrix, dtype=float))[:2] * gate.distance_square)
            gx += [c[0] - r[0], c[0] + r[0]]
            gy += [c[1] - r[1], c[1] + r[1]]
    if panel.quadrant_gate is not None:
        for d, target in zip(panel.quadrant_gate.dimensions[:2], (gx, gy)):
            target += list(d.values)
    xlim, ylim = _limits(xs, gx), _limits(ys, gy)
    ok = np.isfinite(xs) & np.isfinite(ys)
    if ok.any():
        h, xe, ye = np.histogram2d(xs[ok], ys[ok], bins=BINS, range=[xlim, ylim])
        h = np.ma.masked_equal(h, 0)
        if h.count():
            ax.pcolormesh(xe, ye, h.T, cmap="viridis", norm=LogNorm(vmin=1, vmax=max(h.max(), 2)), rasterized=True)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    _set_ticks(ax.xaxis, transforms, gate0.dimensions[0], xlim)
    _set_ticks(ax.yaxis, transforms, gate0.dimensions[1], ylim)
    ax.set_xlabel(labels[0], fontsize=8)
    ax.set_ylabel(labels[1], fontsize=8)
    ax.set_facecolor("white")

    for name, gate, m in panel.gates:
        text = f"{name}\n{_pct(m, parent_count)}"
        if isinstance(gate, fk.gates.PolygonGate):
            v = np.asarray(gate.vertices, dtype=float)
            ax.add_patch(Polygon(v, closed=True, fill=False, ec=GATE_COLOR, lw=1.3))
            cx = float(np.clip(v[:, 0].mean(), *xlim))
            cy = float(v[:, 1].max())
            if cy >= ylim[1]:  # gate drawn past the top: label inside the view instead
                _gate_label(ax, cx, ylim[1], text, "top", xlim, ylim)
                continue
        elif isinstance(gate, fk.gates.RectangleGate):
            d0, d1 = gate.dimensions[0], gate.dimensions[1]
            x0 = d0.min if d0.min is not None else xlim[0]
            x1 = d0.max if d0.max is not None else xlim[1]
            y0 = d1.min if d1.min is not None else ylim[0]
            y1 = d1.max if d1.max is not None else ylim[1]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=GATE_COLOR, lw=1.3))
            vy0, vy1 = max(y0, ylim[0]), min(y1, ylim[1])
            cx = 0.5 * (max(x0, xlim[0]) + min(x1, xlim[1]))
            # Inside the box, on the side away from the plot's edge it is open to
            # (quadrant-like rectangles share edges; a label outside would sit in a neighbour).
            inset = 0.03 * (ylim[1] - ylim[0])
            if y0 <= ylim[0] and y1 < ylim[1]:
                _gate_label(ax, cx, vy0 + inset, text, "bottom", xlim, ylim)
            else:
                _gate_label(ax, cx, vy1 - inset, text, "top", xlim, ylim)
            continue
        elif isinstance(gate, fk.gates.EllipsoidGate):
            cov = np.asarray(gate.covariance_matrix, dtype=float)[:2, :2]
            vals, vecs = np.linalg.eigh(cov)
            vals = np.clip(vals, 0, None)
            angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))
            w, hgt = 2 * np.sqrt(vals[::-1] * gate.distance_square)
            c = np.asarray(gate.coordinates, dtype=float)[:2]
            ax.add_patch(Ellipse(c, w, hgt, angle=angle, fill=False, ec=GATE_COLOR, lw=1.3))
            cx, cy = c[0], c[1] + 0.5 * max(w, hgt)
        else:
            continue
        _gate_label(ax, cx, cy, text, "bottom", xlim, ylim)

    if panel.quadrant_gate is not None:
        qg = panel.quadrant_gate
        for v in qg.dimensions[0].values:
            ax.axvline(v, color=GATE_COLOR, lw=1.2)
        for v in qg.dimensions[1].values:
            ax.axhline(v, color=GATE_COLOR, lw=1.2)
        div = [d.id for d in qg.dimensions[:2]]
        for name, qid, m in panel.quadrants:
            quadrant = qg.quadrants[qid]
            pos = []
            for d, lim in zip(div, (xlim, ylim)):
                lo, hi = quadrant.get_divider_range(d) if d in quadrant.divider_refs else (None, None)
                lo = lim[0] if lo is None else max(lo, lim[0])
                hi = lim[1] if hi is None else min(hi, lim[1])
                pos.append((lo, hi))
            # Label in the quadrant's outer corner, where few events sit.
            x = pos[0][0] + 0.03 * (xlim[1] - xlim[0]) if pos[0][0] <= xlim[0] + 1e-12 else pos[0][1] - 0.03 * (xlim[1] - xlim[0])
            ha = "left" if pos[0][0] <= xlim[0] + 1e-12 else "right"
            y = pos[1][0] + 0.03 * (ylim[1] - ylim[0]) if pos[1][0] <= ylim[0] + 1e-12 else pos[1][1] - 0.03 * (ylim[1] - ylim[0])
            va = "bottom" if pos[1][0] <= ylim[0] + 1e-12 else "top"
            ax.text(x, y, f"{name}\n{_pct(m, parent_count)}", ha=ha, va=va, fontsize=7, color=GATE_COLOR,
                    bbox=_LABEL_BOX)


def render_gating_png(sample, strategy, memberships, names: dict[str, str] | None,
                      columns: Callable[[np.ndarray], GateColumns]) -> bytes:
    """The gating picture of one sample as PNG bytes.

    ``sample``: the ``assays.records.FcsSample`` that was gated (raw events).
    ``strategy``: the flowkit ``GatingStrategy`` applied to it (template or adaptive).
    ``memberships``: ``gating.sample_gating.apply_strategy(strategy, sample)``'s result; its masks
    give the parent events of each panel and the % printed beside each gate.
    ``names``: Gating-ML gate id -> population name (adaptive panel: ``CD3_pos`` -> ``CD3+``);
    ids not in it are shown as they are.
    ``columns(rows)``: the gate coordinates of the events ``rows`` (``GateColumns``).

    One panel per (parent population, gate dimensions), in hierarchy order, ``N_COLS``
    panels a row; boolean gates (no shape) are listed in a final text panel. At most
    ``MAX_EVENTS`` events (seeded random choice) are drawn; counts and % use all events.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    names = names or {}
    n = sample.events.shape[0]
    rows = picture_rows(n)
    cols = columns(rows)
    sub_masks = {m.path: np.asarray(m.mask)[rows] for m in memberships}
    counts = {m.path: int(np.count_nonzero(m.mask)) for m in memberships}
    panels, booleans = _panels(strategy, memberships, names)

    n_panels = len(panels) + (1 if booleans else 0)
    n_cols = max(1, min(N_COLS, n_panels))
    n_rows = max(1, math.ceil(n_panels / n_cols))
    fig = Figure(figsize=(PANEL_INCHES * n_cols, PANEL_INCHES * n_rows + 0.4), dpi=DPI)
    fig.suptitle(f"{sample.source_name}: {n:,} events", fontsize=10)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(n_rows, n_cols, i + 1)
        try:
            _draw_panel(ax, panel, sample, cols, len(rows), sub_masks, names, counts, n,
                        dict(strategy.transformations))
        except Exception as exc:  # one odd gate must not cost the whole picture
            ax.clear()
            ax.set_axis_off()
            what = ", ".join(g[0] for g in panel.gates) or "quadrants"
            ax.text(0.5, 0.5, f"{what}:\nnot drawable\n({type(exc).__name__})", ha="center", va="center", fontsize=8)
    if booleans:
        ax = fig.add_subplot(n_rows, n_cols, len(panels) + 1)
        ax.set_axis_off()
        lines = ["Boolean gates (no shape):"]
        for name, m in booleans:
            pc = counts.get(m.parent_path, n)
            lines.append(f"{name}: {m.count:,} ({_pct(m, pc)} of parent)")
        ax.text(0.02, 0.98, "\n".join(lines), ha="left", va="top", fontsize=8, transform=ax.transAxes)
    # Fixed spacing: tight_layout measures every tick label and cost a third of the render.
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15 / n_rows, top=1 - 0.17 / n_rows,
                        wspace=0.38, hspace=0.5)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()
