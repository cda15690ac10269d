"""Per-sample quality checks of a flow-cytometry acquisition and of its adaptive gates.

Each check is one :class:`QcCheck` row of ``flow_qc``: its value, the threshold it is held
to, whether it passed, and one sentence a lab person can read (``message``). A failed check
marks the sample for review and its message is the review reason the views show; it never
removes events or rows. All functions are pure: arrays and counts in, rows out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Defaults chosen for peripheral-blood T-cell tubes; every function takes them as arguments.
MIN_EVENTS = 10_000
MIN_LYMPHOCYTES = 2_000
MIN_CD3 = 1_000
MIN_STABLE_FLOW = 0.90
MAX_MARGIN_SHARE = 0.05
MIN_SEPARATION = 1.5


@dataclass(frozen=True)
class QcCheck:
    """One row of ``flow_qc``: check name, measured value, whether it passed.

    ``threshold``: the value the check is held to (None when it has none); ``message``: what
    the check found, in one sentence; ``unresolved_in``: the gate id inside which the data
    could not place the cuts (every population below it is unresolved: see
    ``gating.statistics.population_stats``), else None; ``unresolved_gates``: gate ids
    that are themselves unresolved (with everything below them), their siblings not.
    """

    check: str
    value: float
    passed: bool
    threshold: float | None = None
    message: str = ""
    unresolved_in: str | None = None
    unresolved_gates: tuple[str, ...] = ()

    def row(self) -> dict:
        """The ``flow_qc`` columns of this check."""
        return {"check": self.check, "value": float(self.value), "passed": bool(self.passed),
                "threshold": self.threshold, "message": self.message}


def _n(v: float) -> str:
    return f"{v:,.0f}"


def _pct(v: float) -> str:
    return f"{100.0 * v:.3g} %"


def _num(v: float) -> str:
    return f"{v:.2g}" if abs(v) < 10 else f"{v:.3g}"


def events_acquired(n_events: int, minimum: int = MIN_EVENTS) -> QcCheck:
    """Total events in the data set; fails below ``minimum``."""
    ok = n_events >= minimum
    what = f"{_n(n_events)} events acquired" if ok else f"only {_n(n_events)} events acquired"
    return QcCheck("events_acquired", float(n_events), ok, float(minimum),
                   f"{what.capitalize()} (needs >= {_n(minimum)}).")


def population_count(check: str, count: int, minimum: int, what: str | None = None) -> QcCheck:
    """Events in a population (e.g. ``lymphocytes``, ``cd3_events``); fails below ``minimum``.

    Percentages from a few hundred events carry wide binomial intervals, hence the floor.
    ``what``: the population in words for the message (default: ``check``).
    """
    ok = count >= minimum
    text = f"{_n(count)} {what or check} events" + ("" if ok else ": too few for reliable percentages")
    return QcCheck(check, float(count), ok, float(minimum), f"{text[0].upper() + text[1:]} (needs >= {_n(minimum)}).")


def stable_flow(time: np.ndarray | None, n_windows: int = 100, tolerance: float = 0.5,
                minimum: float = MIN_STABLE_FLOW) -> QcCheck:
    """Share of events acquired in time windows with a normal event rate.

    Method: the acquisition time is cut into ``n_windows`` equal windows; a window whose
    event count departs from the median window count by more than ``tolerance`` (relative)
    plus 4 Poisson SDs is unstable (clog, bubble, sample running out); the value is the share
    of events in the stable windows. Failure mode: a run that is uniformly slow or fast is not
    caught (it has a stable rate), and without a Time channel the check passes with value 1.
    """
    if time is None or time.size < 2 * n_windows:
        return QcCheck("stable_flow", 1.0, True, minimum, "Flow rate not checked (no usable Time channel).")
    t = np.ascontiguousarray(time, dtype=float)  # a column of the events: one strided read, not four
    lo, hi = float(np.min(t)), float(np.max(t))
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return QcCheck("stable_flow", 1.0, True, minimum, "Flow rate not checked (no usable Time channel).")
    # Equal windows over [lo, hi], the last one closed (np.histogram's rule), counted by
    # bincount: 4x faster than np.histogram on 1M events.
    window = np.minimum(((t - lo) * (n_windows / (hi - lo))).astype(np.intp), n_windows - 1)
    counts = np.bincount(window, minlength=n_windows)
    med = float(np.median(counts))
    band = tolerance * med + 4.0 * math.sqrt(max(med, 1.0))
    kept = float(counts[np.abs(counts - med) <= band].sum() / counts.sum())
    ok = kept >= minimum
    text = (f"{_pct(kept)} of events acquired at a steady flow rate"
            + ("" if ok else ": clog, bubble or sample running out") + f" (needs >= {_pct(minimum)}).")
    return QcCheck("stable_flow", kept, ok, minimum, text)


def channel_ranges(sample, columns) -> np.ndarray:
    """$PnR of every channel of ``sample`` (one entry per column); inf for channels not in
    ``columns`` and for a missing or non-numeric $PnR, so they never count as margin."""
    wanted = set(columns)
    out = np.full(len(sample.channels), np.inf)
    for c in sample.channels:
        if c.index not in wanted:
            continue
        v = sample.keywords.get(f"$P{c.index + 1}R") or sample.keywords.get(f"$p{c.index + 1}r")
        try:
            out[c.index] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def margin_events(events: np.ndarray, ranges: np.ndarray, maximum: float = MAX_MARGIN_SHARE) -> QcCheck:
    """Share of events sitting on the upper edge of any given channel (saturated detector).

    ``ranges`` holds each column's $PnR (:func:`channel_ranges`; inf = not checked); an event
    at or above ``PnR - 1`` is on the margin. The whole matrix is compared at once: a
    column selection would copy it first.
    Failure mode: files whose $PnR does not match the data range (some exports) report 0.
    """
    if events.size == 0:
        return QcCheck("margin_events", 0.0, True, maximum, "No events to check for saturated detectors.")
    share = _edge_rows(events, np.asarray(ranges, dtype=float) - 1.0) / events.shape[0]
    ok = share <= maximum
    text = (f"{_pct(share)} of events sit on a detector's upper limit"
            + ("" if ok else ": a detector is saturated") + f" (at most {_pct(maximum)}).")
    return QcCheck("margin_events", share, ok, maximum, text)


# Rows per block in :func:`_edge_rows`: the block's thresholds, repeated, stay in cache.
_EDGE_ROWS = 16_384


def _edge_rows(events: np.ndarray, edges: np.ndarray) -> int:
    """Rows of ``events`` with a value ``>= edges[column]`` in any column (``(events >= edges).any(axis=1)``,
    counted).

    Compared block by block as flat arrays against the thresholds repeated for the block's
    rows: one contiguous comparison instead of a broadcast over 13-value rows and a
    reduction along them (1M x 13 events: 43 -> ~10 ms); the rows holding a hit are then
    found from the hits' flat positions, so the cost does not grow with the number of hits.
    """
    n, k = events.shape
    if not events.flags.c_contiguous:
        return int(np.count_nonzero((events >= edges).any(axis=1)))
    flat = events.reshape(-1)
    tiled = np.tile(edges, min(n, _EDGE_ROWS))
    hit = np.empty(tiled.size, dtype=bool)
    rows = 0
    for start in range(0, n, _EDGE_ROWS):
        m = min(_EDGE_ROWS, n - start)
        block = hit[:m * k]
        np.greater_equal(flat[start * k:(start + m) * k], tiled[:m * k], out=block)
        if block.any():
            at = np.flatnonzero(block) // k  # row of each hit, ascending
            rows += 1 + int(np.count_nonzero(at[1:] != at[:-1]))
    return rows


def separation_check(gate_id: str, value: float, minimum: float, what: str) -> QcCheck:
    """The ``separation_<gate_id>`` row for a separation ``value`` (NaN: nothing to resolve).

    ``what``: the gate in words ("CD3+ gate in Live", "Lymphocyte gate").
    """
    name = f"separation_{gate_id}"
    if not math.isfinite(value) and value != float("inf"):
        return QcCheck(name, value, True, minimum, f"{what}: too few events on one side to judge separation.")
    ok = value >= minimum
    return QcCheck(name, value, ok, minimum,
                   f"{what} {'well' if ok else 'poorly'} separated (separation {_num(value)}, needs >= {minimum:g}).")


def separation_index(negative: np.ndarray, positive: np.ndarray, min_events: int = 20) -> float:
    """Separation of two populations split by a threshold, on the gating (logicle) scale.

    .. math:: SI = (median_{pos} - median_{neg}) / (rSD_{neg} + rSD_{pos})

    with rSD the robust SD, 1.4826 x the median absolute deviation. It is the stain index
    of Maecker et al. (Cytometry A 2004, 62:169: ``(MFI_pos - MFI_neg) / (2 rSD_neg)``) with
    the spread of both populations in the denominator, so a broad positive population
    counts against the split as a broad negative one does. Above ~1.5 the two populations
    are clearly resolved. NaN when a side holds fewer than ``min_events`` events; inf when
    both sides are points.

    Parameters
    ----------
    negative, positive : numpy.ndarray
        Gating-scale values of the events below and at or above the threshold.
    min_events : int
        Fewest events per side for a value.
    """
    if negative.size < min_events or positive.size < min_events:
        return float("nan")

    def rsd(v):
        return 1.4826 * float(np.median(np.abs(v - np.median(v))))

    spread = rsd(negative) + rsd(positive)
    return (float(np.median(positive)) - float(np.median(negative))) / spread if spread > 0 else float("inf")


def separation(gate_id: str, negative: np.ndarray, positive: np.ndarray,
               minimum: float = MIN_SEPARATION, what: str | None = None) -> QcCheck:
    """The ``separation_<gate_id>`` row of the two populations an adaptive threshold splits:
    :func:`separation_index`; with fewer than 20 events on a side the value is NaN and the
    check passes (nothing to resolve). ``what``: the gate in words for the message
    (default: ``gate_id``).
    """
    return separation_check(gate_id, separation_index(negative, positive), minimum, what or gate_id)


def channel_choice(marker: str, parent_id: str, parent_name: str,
                   scored: list[tuple[str, float, bool]]) -> QcCheck:
    """``channel_<marker>@<parent_id>``: which of a marker's channels was gated (passes).

    ``scored``: one ``(channel label, separation index, resolved)`` per channel, the
    chosen one first; ``resolved`` is False when the channel shows one population in the
    parent. The value is the chosen channel's separation; the message names every channel
    with its separation, so an analyst sees what was used and why.
    """
    def said(label, sep, resolved):
        value = _num(sep) if math.isfinite(sep) else "not measurable, too few events on one side"
        return f"{label} (separation {value}{'' if resolved else ', one population'})"

    (label, sep, resolved), others = scored[0], scored[1:]
    return QcCheck(f"channel_{marker}@{parent_id}", sep, True, None,
                   f"{marker} has {len(scored)} channels; gated on {said(label, sep, resolved)}, the best "
                   f"separated in {parent_name}; not used: {'; '.join(said(*o) for o in others)}.")


QUADRANT_METHODS = ("valley_1d", "mixture_2d", "unresolved")


def quadrant_check(x: str, y: str, parent_id: str, parent_name: str, method: str, value: float,
                   passed: bool, threshold: float | None = None) -> QcCheck:
    """Which method placed a quadrant's two cuts (markers ``x``/``y`` inside ``parent_id``).

    The row is named ``quadrant_<x>_<y>@<parent gate id>:<method>``, method one of
    :data:`QUADRANT_METHODS`; the value depends on it:

    * ``valley_1d`` - both cuts are 1-D density valleys (or resolved 1-D mixtures); value:
      the smallest share of the parent on one side of either cut; passes.
    * ``mixture_2d`` - at least one cut comes from the 2-D Gaussian mixture of both markers;
      value: the mixture's ``recovery``, the modelled share of events that the quadrant
      puts with the majority of their mixture component; passes at ``>= 0.9``. Below that,
      axis-parallel cuts go through populations (e.g. clouds elongated along the diagonal)
      and the percentages can be off by about 1 - value: the populations inside
      ``parent_id`` are then unresolved (``unresolved_in``), their values left empty.
    * ``unresolved`` - neither method separates the populations: the 1-D cuts are kept (at
      least one leaves almost nothing on one side, or falls on a single peak); value as for
      ``valley_1d``; fails, so the sample goes to review, and the populations inside
      ``parent_id`` are unresolved (``unresolved_in``): their values are left empty.
    """
    if method not in QUADRANT_METHODS:
        raise ValueError(f"quadrant method must be one of {', '.join(QUADRANT_METHODS)}, not {method!r}")
    pair = f"{x}/{y}"
    if method == "valley_1d":
        text = f"{pair} cuts in {parent_name} at density valleys ({_pct(value)} of events on the smaller side)."
    elif method == "mixture_2d":
        text = (f"{pair} cuts in {parent_name} from a 2-D mixture: {_pct(value)} of events fall with their "
                f"population" + (f" (needs >= {_pct(threshold)})" if threshold is not None else "")
                + ("." if passed else f", so the {pair} values are left empty."))
    else:
        text = (f"{pair} split not resolved in {parent_name}: no density valley or mixture separates the "
                f"populations, so the {pair} values are left empty.")
    return QcCheck(f"quadrant_{x}_{y}@{parent_id}:{method}", float(value), bool(passed), threshold, text,
                   None if passed else parent_id)


def unresolved_marker(marker: str, parent_id: str, parent_name: str) -> QcCheck:
    """``resolved_<marker>@<parent>``: a required marker shows one population, no split (fails)."""
    return QcCheck(f"resolved_{marker}@{parent_id}", 0.0, False, None,
                   f"{marker} shows a single population in {parent_name}: the {marker}+ cut is not "
                   f"supported by the data.")


def too_few_to_place(parent_id: str, parent_name: str, count: int, minimum: int) -> QcCheck:
    """``placement_events@<parent>``: the parent holds fewer events than a gate cut needs (fails).

    Every population below ``parent_id`` is unresolved (``unresolved_in``): a cut placed on a
    handful of events is noise, so its percentages are left empty rather than reported.
    """
    return QcCheck(f"placement_events@{parent_id}", float(count), False, float(minimum),
                   f"Only {_n(count)} events in {parent_name}: too few to place the gates inside it "
                   f"(needs >= {_n(minimum)}), so their values are left empty.", parent_id)


def producers_not_separated(marker: str, parent_id: str, parent_name: str, hidden_pct: float,
                            allowed_pct: float, gate_ids: tuple[str, ...], names: list[str],
                            detail: str = "", remedy: str = "") -> QcCheck:
    """``resolved_<marker>@<parent>``: cytokine producers are not separated from the negatives (fails).

    ``hidden_pct``: the estimate that decided, % of the parent (producers the cut misses,
    or the negatives' unexplained upper flank; :class:`gating.adaptive.producers.CytokineCut`);
    ``allowed_pct``: what a value may absorb; ``detail``: what the data show, in words
    (default: producers in the overlap); ``remedy``: what resolves it (default: a control
    tube or a brighter stain). The populations ``gate_ids`` (named ``names``) are
    unresolved: a share read from such a cut would miss producers or count negatives, so it
    is left empty.
    """
    which = ", ".join(names) or "its populations"
    detail = detail or f"about {hidden_pct:.2g} % of {parent_name} sit in the overlap"
    remedy = remedy or f"an unstimulated control tube (sample sheet control_of) or a brighter {marker} stain resolves it"
    return QcCheck(f"resolved_{marker}@{parent_id}", float(hidden_pct), False, float(allowed_pct),
                   f"{marker} producers in {parent_name} are not separated from the negative cells: {detail} "
                   f"(at most {allowed_pct:.2g} % allowed), so {which} {'is' if len(names) == 1 else 'are'} "
                   f"left empty; {remedy}.",
                   unresolved_gates=tuple(gate_ids))


def singlet_share(share: float, minimum: float) -> QcCheck:
    """Share of the singlet gate's parent kept as singlets; fails below ``minimum``."""
    ok = share >= minimum
    return QcCheck("singlet_share", share, ok, minimum,
                   f"{_pct(share)} of events are singlets" + ("" if ok else ": many doublets or clumps")
                   + f" (needs >= {_pct(minimum)}).")


def singlets_not_gated(check: str, code: float) -> QcCheck:
    """Information row (passes): no area/height scatter pair, so no singlet gate.

    ``code``: 1 the area parameter is missing, 2 the height one, 3 both.
    """
    missing = {1.0: "area", 2.0: "height"}.get(code, "area or height")
    return QcCheck(check, code, True, None, f"Singlets not gated: the file has no {missing} scatter parameter.")


def extra_data_sets(n_ignored: int) -> QcCheck:
    """Information row (passes): the FCS file holds more data sets than the one read."""
    return QcCheck("extra_data_sets_ignored", float(n_ignored), True, None,
                   f"The file holds {n_ignored} more data set(s); only the first was analysed.")


def count_checks(counts: dict[str, int], min_lymphocytes: int = MIN_LYMPHOCYTES,
                 min_cd3: int = MIN_CD3) -> list[QcCheck]:
    """``lymphocytes`` and ``cd3_events`` rows from final population counts
    (keys ``Lymphocytes`` and ``CD3+``, as flowkit counted them)."""
    rows = []
    if "Lymphocytes" in counts:
        rows.append(population_count("lymphocytes", int(counts["Lymphocytes"]), min_lymphocytes, "lymphocyte"))
    if "CD3+" in counts:
        rows.append(population_count("cd3_events", int(counts["CD3+"]), min_cd3, "CD3+ T-cell"))
    return rows


def review_reasons(checks: list[QcCheck]) -> list[str]:
    """The messages of the failed checks: why a sample goes to review (empty: it does not)."""
    return [c.message or f"{c.check} failed (value {c.value:g})" for c in checks if not c.passed]
