"""A small SVG plotting kit for the reports: scales, axes, markers, legends.

Text in, text out: every function returns SVG markup (strings) for one chart of fixed
width ``W``; the page that embeds it owns the CSS classes used here (``grid``, ``tick``,
``frame``, ``axis``, ``mst``, ``legend`` ...). No plotting library: the report must be one
self-contained HTML file a browser shows with nothing fetched.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

# Colour-blind-safe palette (Okabe & Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")

W, LEFT, RIGHT, TOP, BOTTOM = 1000, 70, 210, 28, 44  # chart geometry (px)


def esc(v) -> str:
    """``v`` as text safe inside an element or a quoted attribute."""
    return html.escape(str(v), quote=True)


def nice_step(span: float, n: int = 6) -> float:
    """A round tick step (1, 2, 2.5 or 5 x 10^k) giving about ``n`` ticks over ``span``."""
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


@dataclass
class Scale:
    """Data value -> pixel along one axis (``log``: ``lo``/``hi`` are decades)."""

    lo: float
    hi: float
    p0: float  # pixel of lo
    p1: float  # pixel of hi
    log: bool = False

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(max(v, 10 ** self.lo)) if v > 0 else self.lo
            a, b = self.lo, self.hi
        else:
            a, b = self.lo, self.hi
        return self.p0 + (v - a) * (self.p1 - self.p0) / ((b - a) or 1.0)

    def ticks(self) -> list[tuple[float, str]]:
        if self.log:
            out = []
            for k in range(int(self.lo), int(self.hi) + 1):
                v = 10.0 ** k
                out.append((v, f"{v:g}"))
            return out
        step = nice_step(self.hi - self.lo)
        start = math.ceil(self.lo / step) * step
        out, v = [], start
        while v <= self.hi + 1e-9 * step:
            out.append((v, f"{round(v, 10):g}"))
            v += step
        return out


def marker(shape: str, x: float, y: float, color: str, filled: bool, attrs: str, r: float = 4.5) -> str:
    """A self-closed marker element (circle, square, diamond, triangle) centred at (x, y)."""
    fill = color if filled else "white"
    style = f'fill="{fill}" stroke="{color}" stroke-width="1.6"'
    if shape == "square":
        return f'<rect {attrs} x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" {style}/>'
    if shape == "diamond":
        q = r * 1.3
        pts = f"{x:.1f},{y - q:.1f} {x + q:.1f},{y:.1f} {x:.1f},{y + q:.1f} {x - q:.1f},{y:.1f}"
        return f'<polygon {attrs} points="{pts}" {style}/>'
    if shape == "triangle":
        q = r * 1.2
        pts = f"{x:.1f},{y - q:.1f} {x + q:.1f},{y + q * 0.8:.1f} {x - q:.1f},{y + q * 0.8:.1f}"
        return f'<polygon {attrs} points="{pts}" {style}/>'
    return f'<circle {attrs} cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" {style}/>'


def frame(x: Scale, y: Scale, top: float, bottom: float, title: str, y_label: str, x_label: str,
          cycles: list[dict]) -> list[str]:
    """Axes, grid, tick labels, title and the MST cycle lines of one panel."""
    out = [f'<text class="title" x="{LEFT}" y="{top - 10:.0f}">{esc(title)}</text>']
    for v, label in y.ticks():
        py = y(v)
        if top - 0.5 <= py <= bottom + 0.5:
            out.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}"/>')
            out.append(f'<text class="tick" x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{esc(label)}</text>')
    for v, label in x.ticks():
        px = x(v)
        out.append(f'<line class="tickmark" x1="{px:.1f}" x2="{px:.1f}" y1="{bottom}" y2="{bottom + 5}"/>')
        out.append(f'<text class="tick" x="{px:.1f}" y="{bottom + 18}" text-anchor="middle">{esc(label)}</text>')
    out.append(f'<rect class="frame" x="{LEFT}" y="{top}" width="{W - RIGHT - LEFT}" height="{bottom - top}"/>')
    out.append(f'<text class="axis" x="{(LEFT + W - RIGHT) / 2:.0f}" y="{bottom + 36}" text-anchor="middle">'
               f'{esc(x_label)}</text>')
    out.append(f'<text class="axis" transform="translate(16 {(top + bottom) / 2:.0f}) rotate(-90)" '
               f'text-anchor="middle">{esc(y_label)}</text>')
    for c in cycles:
        if c["day"] is None:
            continue
        px = x(c["day"])
        out.append(f'<line class="mst" data-cycle="{esc(c["cycle"])}" x1="{px:.1f}" x2="{px:.1f}" '
                   f'y1="{top}" y2="{bottom}"><title>MST cycle {esc(c["cycle"])}: {esc(c["mst_date"])}'
                   f'</title></line>')
        out.append(f'<text class="mstlabel" x="{px + 3:.1f}" y="{top + 12}">MST {esc(c["cycle"])}</text>')
    return out


def legend(items: list[tuple[str, str, str, bool]], top: float) -> list[str]:
    """Legend on the right: (label, colour, shape, filled); shape 'dash' draws a dashed line."""
    out, y0 = [], top + 8
    lx = W - RIGHT + 16
    for i, (label, color, shape, filled) in enumerate(items):
        yy = y0 + 18 * i
        if shape == "dash":
            out.append(f'<line x1="{lx - 6}" x2="{lx + 10}" y1="{yy}" y2="{yy}" stroke="{color}" '
                       'stroke-width="1.5" stroke-dasharray="5 3"/>')
        elif shape == "line":
            out.append(f'<line x1="{lx - 6}" x2="{lx + 10}" y1="{yy}" y2="{yy}" stroke="{color}" stroke-width="2"/>')
        else:
            out.append(marker(shape, lx + 2, yy, color, filled, 'class="legend-marker"', r=4))
        out.append(f'<text class="legend" x="{lx + 16}" y="{yy + 4}">{esc(label)}</text>')
    return out


def close_tag(shape: str) -> str:
    """The closing tag of the element :func:`marker` opens for ``shape``."""
    return {"square": "</rect>", "diamond": "</polygon>", "triangle": "</polygon>"}.get(shape, "</circle>")
