"""The gate-tree evaluator: exact evaluation of a flowkit ``GatingStrategy`` (Gating-ML 2.0,
FlowJo workspace or the adaptive panel) on an events matrix. The plan it evaluates is
``gating.compiled_strategy``, compensation is ``gating.sample_compensation``; the pipeline
gates a sample through ``gating.sample_gating.apply_strategy``.

Why this exists
---------------
flowkit's ``GatingStrategy.gate_sample`` (what ``Session.analyze_samples`` runs)
pre-processes the events once *per gate*: it copies the compensated matrix, applies
the transform of every dimension of that gate, wraps the result in a DataFrame and
only then tests membership. With ``cache_events=False`` (the default) a logicle
channel used by five gates is transformed five times; on a 1M-event file that is
about two thirds of the run. This module computes every
(compensation, channel, transform) column **once per sample**, caches it across
gates, and tests membership with vectorised numpy on those cached columns.

Exactness
---------
Results are meant to be identical to flowkit 1.3.2 event by event, so the per-value
math is not re-implemented:

* compensation evaluates ``flowutils.compensate.compensate``'s own expression,
  ``np.linalg.solve(spill.T, events[:, idx].T).T``, on the same full events matrix
  (in chunks of events: ``gating.compensation.solve_by_chunks``, same bits),
  matrix and channel order that flowkit's ``Matrix.apply`` uses (spectral matrices
  call ``compensate_spectral_ols`` itself), once per compensation reference;
* logicle and hyperlog (flowutils' scalar C loop, ~100 ms per million values) are
  evaluated only for the events inside the parent populations of the gates that
  use them, filled in lazily as gates need more; each value is computed on its
  own, so the bits are those of a whole-column call;
* rectangle bounds and quadrant dividers on logicle/hyperlog dimensions are mostly
  decided without transforming, only raw values near a bound are transformed
  (``gating.raw_bands``);
* every transform is applied through the flowkit transform object's own ``apply``
  (which calls flowutils' C logicle/hyperlog, numpy asinh/log, scipy's interpolator
  for FlowJo biex), on a contiguous ``(n, 1)`` column, the shape flowkit passes;
* ratio dimensions call ``RatioTransform.apply`` on a minimal sample stand-in, so
  ``A * ((x - B) / (y - C))`` is evaluated by flowkit's own expression;
* polygons use ``flowutils.gating.points_in_polygon`` (winding number, flowutils'
  edge rules) and ellipsoids ``flowutils.gating.points_in_ellipsoid`` (``<=``);
* rectangles, range gates and quadrants use flowkit's convention ``value >= min``
  and ``value < max``; an omitted bound is open.

flowkit semantics mirrored on purpose (they decide the numbers):

* **One compensation per gate.** flowkit collects the compensation references of a
  gate's dimensions other than ``None``/``'uncompensated'``; if there is exactly
  one, *all* dimensions of that gate are read from that compensated matrix, even a
  dimension labelled ``'uncompensated'``. More than one distinct reference in a gate
  raises ``NotImplementedError`` (as flowkit does).
* **Ratio dimensions use raw events.** ``RatioTransform`` reads the uncompensated
  channels (looked up by ``$PnN`` only) whatever the dimension's compensation
  reference says; the reference still counts for the gate's other dimensions.
* **Channel lookup** tries ``$PnN``, then ``$PnS``, then ``$PnN`` with ``/``
  replaced by ``_`` (FlowJo's spelling), then, for a compensated dimension, the
  fluorochrome names of the referenced matrix (Gating-ML ``spectrumMatrix``).
* **'FCS'** means the file's own spillover; when none is supplied the dimension is
  treated as uncompensated (Gating-ML 2.0 rule, also flowkit's behaviour).
* **Quadrants** are not gates: a ``QuadrantGate`` yields one membership per quadrant
  id, each ANDed with the QuadrantGate's parent; a gate whose parent is a quadrant
  uses that quadrant's mask as its parent; Boolean gates may reference quadrants.
* **Boolean gates** combine the *final* masks (already ANDed with their own parents)
  of the referenced gates, apply each reference's ``complement`` first, then
  and/or/not ("not" negates the first reference only), then AND their own parent.
* ``use_complement`` on rectangle/polygon gates inverts the shape test before the
  parent AND (an outside-of-shape gate still stays inside its parent).

Inputs are the *raw* events, i.e. what ``flowkit.Sample.get_events(source='raw')``
returns (after $PnG gain / $PnE log scaling, before compensation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import flowkit as fk
import numpy as np
from flowkit import gates as fk_gates
from flowutils import gating as fu_gating

from gating.compiled_strategy import CompiledStrategy, GateMembership, compile_strategy
from gating.raw_bands import apply_column, decided_on_raw, in_range, trusted_limit
from gating.sample_compensation import UNCOMPENSATED, SampleCompensation

__all__ = ["ReusableColumns", "SampleState", "evaluate_strategy"]


@dataclass
class ReusableColumns:
    """What an evaluation computed that later stages reuse instead of computing again.

    ``compensated``: ``{compensation ref: {channel index: compensated values (1-D)}}``, one
    entry per matrix the gates used (statistics report on the same solve,
    ``gating.compensation.gates_compensation``); ``raw``: ``{channel index: raw values
    (contiguous 1-D)}`` for the uncompensated channels the gates copied out whole;
    ``seconds``: seconds spent per engine stage (``"compensate"``, ``"transform"``).
    """

    compensated: dict[Any, dict[int, np.ndarray]] = field(default_factory=dict)
    raw: dict[int, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

class _RawSampleView:
    """The two attributes ``flowkit.transforms.RatioTransform.apply`` reads from a Sample.

    Lets flowkit's own ratio expression run on our events matrix, so ratio values
    are bit-identical to flowkit's.
    """

    def __init__(self, events: np.ndarray, pnn: list[str]):
        self._events = events
        self.pnn_labels = pnn

    def get_events(self, source: str = "raw") -> np.ndarray:
        return self._events



# Transforms computed by a scalar C loop, one value at a time (flowutils.logicle_c):
# evaluating them on a subset of events gives the same bits as on the whole column,
# so they are only evaluated where a gate's parent population needs them. These are
# also the expensive ones (~100 ms per million values). Other transforms are cheap
# or go through numpy's vectorised transcendental loops, and are computed on the
# whole column exactly as flowkit does.
_PER_VALUE_TRANSFORMS = (fk.transforms.LogicleTransform, fk.transforms.HyperlogTransform)


class SampleState:
    """Per-sample caches: compensated matrices, prepared columns and masks."""

    def __init__(
        self,
        plan: CompiledStrategy,
        events: np.ndarray,
        pnn: list[str],
        pns: list[str] | None,
        spillover_by_id: Callable[[str], Any] | Mapping[str, Any] | None,
    ):
        self.plan = plan
        self.events = events
        self.pnn = list(pnn)
        self.pns = list(pns) if pns is not None else None
        self.flowjo_pnn = [p.replace("/", "_") for p in self.pnn]
        self.n = events.shape[0]
        # (effective comp ref, transform ref, channel index) ->
        # (contiguous 1-D column, bool "computed" mask or None once complete)
        self._columns: dict[tuple, tuple[np.ndarray, np.ndarray | None]] = {}
        # (ratio transform ref, transform ref) -> 1-D column (raw channels, as flowkit)
        self._ratio_columns: dict[tuple, np.ndarray] = {}
        # channel index -> its raw values as one contiguous array, where a gate needed
        # that copy anyway (statistics reuse it instead of copying the column again)
        self.raw_columns: dict[int, np.ndarray] = {}
        # tree path (with 'root') -> final mask; quadrant gates cache their dict too
        self.masks: dict[tuple[str, ...], np.ndarray] = {}
        self._quad_results: dict[int, dict[str, np.ndarray]] = {}
        # seconds spent compensating and transforming (the rest of an evaluation is gating)
        self.seconds = {"compensate": 0.0, "transform": 0.0}
        self.comp = SampleCompensation(events, self.pnn, plan.comp_matrices, spillover_by_id, self.seconds)
        self._in_progress: set[tuple[str, ...]] = set()

    # ----- compensation (gating.sample_compensation) --------------------------------

    def compensated(self, comp_ref: Any) -> tuple[np.ndarray, dict[int, int]]:
        """See :meth:`gating.sample_compensation.SampleCompensation.compensated`."""
        return self.comp.compensated(comp_ref)

    def compensated_channels(self) -> dict[Any, dict[int, np.ndarray]]:
        """``{comp ref: {channel index: values}}`` for every matrix applied so far."""
        return self.comp.compensated_channels()

    def source(self, comp_ref: Any, idx: int) -> tuple[np.ndarray, int]:
        """(2-D array, column) holding channel ``idx`` compensated with ``comp_ref``."""
        return self.comp.source(comp_ref, idx)

    # ----- columns ------------------------------------------------------------------

    def channel_index(self, dim_id: str, dim_comp_ref: Any) -> int:
        """Column index of ``dim_id`` (flowkit's lookup order, see module docstring)."""
        if dim_id in self.pnn:
            return self.pnn.index(dim_id)
        if self.pns is not None and dim_id in self.pns:
            return self.pns.index(dim_id)
        if dim_id in self.flowjo_pnn:
            return self.flowjo_pnn.index(dim_id)
        if dim_comp_ref not in UNCOMPENSATED:
            matrix = self.plan.comp_matrices.get(dim_comp_ref)
            if matrix is None:
                matrix = self.comp.lookup_matrix(dim_comp_ref)
            fluoros = list(getattr(matrix, "fluorochromes", None) or [])
            if dim_id in fluoros:
                return self.comp.pnn_index(matrix.detectors[fluoros.index(dim_id)], dim_comp_ref)
            raise ValueError(f"{dim_id} not found in list of matrix fluorochromes")
        raise LookupError(
            f"{dim_id!r} is not a channel of this sample ($PnN: {self.pnn}; $PnS: {self.pns})"
        )

    def column(
        self, comp_ref: Any, xform_ref: str | None, idx: int, within: np.ndarray | None = None
    ) -> np.ndarray:
        """Compensated, transformed channel ``idx`` as a contiguous 1-D array (cached).

        ``within``: the events the caller will look at (its parent population), or
        None for all. For the costly per-value transforms (logicle, hyperlog) only
        those events are transformed and the rest are filled in when a later gate
        needs them; entries never needed stay NaN. Callers must therefore AND their
        result with ``within`` (``mask()`` does).
        """
        key = (comp_ref if comp_ref not in UNCOMPENSATED else None, xform_ref, idx)
        hit = self._columns.get(key)
        if hit is not None and hit[1] is None:
            return hit[0]
        arr, j = self.source(comp_ref, idx)
        xform = self.plan.transforms[xform_ref] if xform_ref is not None else None
        if xform is None or not isinstance(xform, _PER_VALUE_TRANSFORMS):
            if xform is None:
                col = raw = np.ascontiguousarray(arr[:, j])
            else:
                # flowkit applies transforms to events[:, [i]]: a contiguous (n, 1)
                # copy. Same shape and layout here, so the same code paths run
                # (numpy's vectorised transcendental loops included).
                raw = np.ascontiguousarray(arr[:, [j]])
                col = self._apply(xform, raw)
            if arr is self.events:
                self.raw_columns[j] = raw.reshape(-1)
            self._columns[key] = (col, None)
            return col
        if hit is None:
            hit = (np.full(self.n, np.nan), np.zeros(self.n, dtype=bool))
            self._columns[key] = hit
        buf, done = hit
        need = ~done if within is None else within & ~done
        rows = np.flatnonzero(need)
        if rows.size:
            # logicle_c / hyperlog_c transform each value on its own (scalar C loop),
            # so a value does not depend on which other values share the call.
            buf[rows] = self._apply(xform, arr[rows, j].reshape(-1, 1))
            done[rows] = True
        if rows.size == self.n or (within is None) or done.all():
            self._columns[key] = (buf, None)  # complete: no more bookkeeping
        return buf

    def _apply(self, xform: Any, src: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = apply_column(xform, src)
        self.seconds["transform"] += time.perf_counter() - t0
        return out

    def ratio_column(self, dim: Any) -> np.ndarray:
        """Values of a RatioDimension (raw channels, as flowkit), optionally transformed."""
        key = (dim.ratio_ref, dim.transformation_ref)
        col = self._ratio_columns.get(key)
        if col is not None:
            return col
        try:
            ratio = self.plan.transforms[dim.ratio_ref]
        except KeyError:
            raise KeyError("New dimensions must provide a transformation") from None
        col = ratio.apply(_RawSampleView(self.events, self.pnn))
        if dim.transformation_ref is not None:
            col = self.plan.transforms[dim.transformation_ref].apply(col)
        col = np.ascontiguousarray(np.asarray(col, dtype=np.float64).reshape(-1))
        self._ratio_columns[key] = col
        return col

    def gate_comp_ref(self, gate: Any) -> Any:
        """The one compensation reference all dimensions of ``gate`` are read with."""
        refs = {
            d.compensation_ref for d in gate.dimensions if d.compensation_ref not in UNCOMPENSATED
        }
        if len(refs) > 1:
            raise NotImplementedError(
                f"gate {gate.gate_name!r} mixes compensation references {sorted(refs)}; "
                "flowkit applies one compensation per gate and rejects this too"
            )
        return next(iter(refs)) if refs else None

    def dim_index(self, dim: Any) -> int:
        """Channel index of a (non-ratio) gate dimension or quadrant divider."""
        dim_id = dim.dimension_ref if isinstance(dim, fk.QuadrantDivider) else dim.id
        return self.channel_index(dim_id, dim.compensation_ref)

    def dim_column(self, comp_ref: Any, dim: Any, within: np.ndarray | None) -> np.ndarray:
        """Prepared values of one gate dimension (see ``column`` for ``within``)."""
        if isinstance(dim, fk.RatioDimension):
            return self.ratio_column(dim)
        return self.column(comp_ref, dim.transformation_ref, self.dim_index(dim), within)

    def gate_columns(self, gate: Any, within: np.ndarray | None = None) -> list[np.ndarray]:
        """One prepared column per dimension of ``gate``, in dimension order.

        Values are valid at least for the events in ``within`` (see ``column``).
        """
        comp_ref = self.gate_comp_ref(gate)
        return [self.dim_column(comp_ref, dim, within) for dim in gate.dimensions]

    def range_mask(
        self, comp_ref: Any, dim: Any, lo: float | None, hi: float | None, within: np.ndarray | None
    ) -> np.ndarray:
        """flowkit's ``lo <= value < hi`` for one dimension; valid inside ``within``.

        On logicle/hyperlog dimensions the test is decided in raw space wherever the
        raw value is clearly away from the bounds (``_banded_range``), so only events
        near a bound are transformed; a column already complete in the cache is
        simply compared. Everything else compares the prepared column, as before.
        """
        if isinstance(dim, fk.RatioDimension) or dim.transformation_ref is None:
            return in_range(self.dim_column(comp_ref, dim, within), lo, hi)
        xform = self.plan.transforms[dim.transformation_ref]
        idx = self.dim_index(dim)
        if not decided_on_raw(xform) or self._complete(comp_ref, dim.transformation_ref, idx):
            return in_range(self.column(comp_ref, dim.transformation_ref, idx, within), lo, hi)
        if lo is None and hi is None:
            return np.ones(self.n, dtype=bool)  # open on both sides: no value is needed
        return self._banded_range(comp_ref, dim.transformation_ref, idx, lo, hi, within)

    def _complete(self, comp_ref: Any, xform_ref: str, idx: int) -> bool:
        """True if ``column`` has this column cached for every event."""
        hit = self._columns.get((comp_ref if comp_ref not in UNCOMPENSATED else None, xform_ref, idx))
        return hit is not None and hit[1] is None

    def _banded_range(
        self,
        comp_ref: Any,
        xform_ref: str,
        idx: int,
        lo: float | None,
        hi: float | None,
        within: np.ndarray | None,
    ) -> np.ndarray:
        """``range_mask`` for a strictly increasing per-value transform, mostly untransformed.

        Each bound has a raw band ``(a, b)`` (``CompiledStrategy.band``; see
        ``gating.raw_bands.raw_band`` for why deciding outside it is exact). A trusted raw value
        (``|x| <= T``, so not NaN/inf) ``<= a`` is below the bound and one ``>= b``
        is at/above it. An event passes for sure if it is above every ``lo`` and
        below every ``hi`` band, and fails for sure if it is below a ``lo`` or above a
        ``hi`` band; the rest (inside a band, untrusted, non-finite) get the exact
        transform through ``column`` (restricted to them, cached for later gates).
        """
        xform = self.plan.transforms[xform_ref]
        arr, j = self.source(comp_ref, idx)
        rows = None if within is None else np.flatnonzero(within)
        x = arr[:, j] if rows is None else arr[rows, j]
        limit = trusted_limit(xform)
        trusted = (x >= -limit) & (x <= limit)  # False for NaN and +-inf
        sure_pass = trusted.copy()
        sure_fail = np.zeros_like(trusted)
        if lo is not None:
            a, b = self.plan.band(xform_ref, lo)
            sure_pass &= x >= b
            sure_fail |= x <= a
        if hi is not None:
            a, b = self.plan.band(xform_ref, hi)
            sure_pass &= x <= a
            sure_fail |= x >= b
        sure_fail &= trusted
        need = ~(sure_pass | sure_fail)
        res = sure_pass
        if need.any():
            need_rows = np.flatnonzero(need) if rows is None else rows[need]
            exact = np.zeros(self.n, dtype=bool)
            exact[need_rows] = True
            col = self.column(comp_ref, xform_ref, idx, exact)
            res[need] = in_range(col[need_rows], lo, hi)
        if rows is None:
            return res
        out = np.zeros(self.n, dtype=bool)
        out[rows] = res
        return out

    # ----- gates --------------------------------------------------------------------

    def mask(self, tree_path: tuple[str, ...]) -> np.ndarray:
        """Final mask of the population at ``tree_path`` (evaluated on demand)."""
        m = self.masks.get(tree_path)
        if m is not None:
            return m
        node = self.plan.node(tree_path)
        if node is None:
            raise KeyError(f"no population at gate path {'/'.join(tree_path)}")
        if tree_path in self._in_progress:
            raise ValueError(f"gate references form a cycle at {'/'.join(tree_path)}")
        self._in_progress.add(tree_path)
        try:
            parent = self.mask(node.parent) if node.parent is not None else None
            if node.kind == "quadrant":
                own = self._quadrants(node.gate, parent)[node.quadrant_id]
            else:
                own = self._gate(node.gate, parent)
            m = own if parent is None else np.logical_and(parent, own)
        finally:
            self._in_progress.discard(tree_path)
        self.masks[tree_path] = m
        return m

    def _quadrants(self, qgate: Any, parent: np.ndarray | None) -> dict[str, np.ndarray]:
        # All quadrants of one QuadrantGate share its parent, so one evaluation serves all.
        hit = self._quad_results.get(id(qgate))
        if hit is not None:
            return hit
        comp_ref = self.gate_comp_ref(qgate)
        for div in qgate.dimensions:
            if not isinstance(div, fk.RatioDimension):
                self.dim_index(div)  # every divider must resolve, as in flowkit
        dividers = {div.id: div for div in qgate.dimensions}
        # a divider range shared by several quadrants (e.g. "CD4 >= v") is tested once
        tests: dict[tuple[str, float | None, float | None], np.ndarray] = {}
        out: dict[str, np.ndarray] = {}
        for q_id, quadrant in qgate.quadrants.items():
            q = np.ones(self.n, dtype=bool)
            for div_ref in quadrant.divider_refs:
                lo, hi = quadrant.get_divider_range(div_ref)
                key = (div_ref, lo, hi)
                m = tests.get(key)
                if m is None:
                    m = self.range_mask(comp_ref, dividers[div_ref], lo, hi, parent)
                    tests[key] = m
                q &= m
            out[q_id] = q
        self._quad_results[id(qgate)] = out
        return out

    def _rectangle(self, gate: Any, parent: np.ndarray | None) -> np.ndarray:
        """AND of the dimensions' ranges (then ``use_complement``), valid inside ``parent``.

        An event that already failed one dimension cannot pass, so later dimensions
        only look at the events still in: fewer values to compare and transform.
        """
        comp_ref = self.gate_comp_ref(gate)
        res = np.ones(self.n, dtype=bool)
        for k, dim in enumerate(gate.dimensions):
            within = parent if k == 0 else (res if parent is None else parent & res)
            res &= self.range_mask(comp_ref, dim, getattr(dim, "min", None), getattr(dim, "max", None), within)
        return ~res if gate.use_complement else res

    def _gate(self, gate: Any, parent: np.ndarray | None) -> np.ndarray:
        """The gate's own shape test (before the parent AND)."""
        if isinstance(gate, fk_gates.BooleanGate):
            refs = []
            for ref in gate.gate_refs:
                m = self.mask(tuple(ref["path"]) + (ref["ref"],))
                refs.append(~m if ref["complement"] else m)
            if gate.type == "and":
                return np.logical_and.reduce(refs)
            if gate.type == "or":
                return np.logical_or.reduce(refs)
            if gate.type == "not":
                return np.logical_not(refs[0])
            raise ValueError(f"unknown boolean type {gate.type!r} in gate {gate.gate_name!r}")

        if isinstance(gate, fk_gates.RectangleGate):
            return self._rectangle(gate, parent)

        cols = self.gate_columns(gate, parent)
        if isinstance(gate, fk_gates.PolygonGate):
            verts = np.array(gate.vertices, dtype=np.float64)
            # The winding test costs O(events x vertices) and is independent per
            # point, so only events that can be inside are tested: those in the parent
            # and in the vertices' closed bounding box. flowutils gives every point
            # outside that box a winding count of 0 itself (its C points_in_polygon
            # checks the same box first), so the result is the same.
            sel = None if parent is None else np.flatnonzero(parent)
            if len(cols) == 2 and verts.ndim == 2 and verts.shape[1] == 2 and np.isfinite(verts).all():
                lo, hi = verts.min(axis=0), verts.max(axis=0)
                box = (cols[0] >= lo[0]) & (cols[0] <= hi[0]) & (cols[1] >= lo[1]) & (cols[1] <= hi[1])
                if parent is not None:
                    box &= parent
                sel = np.flatnonzero(box)
            if sel is None:
                res = fu_gating.points_in_polygon(verts, np.column_stack(cols))
            else:
                res = np.zeros(self.n, dtype=bool)
                if sel.size:
                    res[sel] = fu_gating.points_in_polygon(verts, np.column_stack([c[sel] for c in cols]))
            # outside-of-polygon; a child gate is still restricted to its parent by the caller
            return ~res if gate.use_complement else res

        if isinstance(gate, fk_gates.EllipsoidGate):
            # Whole column, same (n, k) C-ordered layout as flowkit: the BLAS product
            # inside points_in_ellipsoid then rounds exactly as it does there.
            return fu_gating.points_in_ellipsoid(
                gate.covariance_matrix, gate.coordinates, gate.distance_square, np.column_stack(cols)
            )

        raise NotImplementedError(f"gate type {type(gate).__name__} ({gate.gate_name!r}) is not supported")


def evaluate_strategy(
    strategy: fk.GatingStrategy | CompiledStrategy,
    events: np.ndarray,
    pnn: list[str],
    spillover_by_id: Callable[[str], Any] | Mapping[str, Any] | None = None,
    *,
    pns: list[str] | None = None,
    sample_id: str | None = None,
    reuse: ReusableColumns | None = None,
) -> list[GateMembership]:
    """Evaluate every gate of ``strategy`` on ``events``; one entry per population.

    ``strategy``: a flowkit ``GatingStrategy`` (from ``flowkit.parse_gating_xml``,
    ``Workspace.get_gating_strategy`` or built in code) or a ``CompiledStrategy``.
    ``events``: raw events, shape (n_events, n_channels), columns in ``pnn`` order
    (``flowkit.Sample.get_events(source='raw')`` / ``FcsSample.events``); converted
    to C-ordered float64 if it is not already.
    ``pnn``: ``$PnN`` per column. ``pns`` (optional): ``$PnS`` per column, used when a
    gate dimension names a stain instead of a detector, as flowkit allows.
    ``spillover_by_id``: where compensation references are resolved, as a mapping or
    a callable ``ref -> matrix`` (``KeyError``/``None`` = not supplied). A matrix is a
    ``flowkit.Matrix`` / ``SpectralMatrix`` (applied in its own detector order, as
    flowkit does), or anything with ``.detectors`` and ``.matrix`` (such as
    ``assays.records.Spillover``) or a ``(detectors, matrix)`` tuple: a spillover in
    ``$SPILLOVER`` form, re-ordered to channel order as flowkit does for the file's
    own matrix. Supplied matrices take precedence over the strategy's own
    (``spectrumMatrix`` / FlowJo matrices); ``'FCS'`` (the file's $SPILLOVER) must be
    supplied here, and means uncompensated when it is not.
    ``sample_id``: pick flowkit custom sample gates for this sample id.
    ``reuse``: if given, filled with the compensated and raw columns the gates made and the
    compensate / transform seconds (:class:`ReusableColumns`), so callers can reuse them.

    Returns ``GateMembership`` items in hierarchy order (parents before children,
    siblings in the strategy's order). QuadrantGates contribute one item per quadrant
    and none for themselves. Each mask already includes its parent's.
    """
    plan = strategy if isinstance(strategy, CompiledStrategy) else compile_strategy(strategy, sample_id)
    events = np.ascontiguousarray(events, dtype=np.float64)
    if events.ndim != 2 or events.shape[1] != len(pnn):
        raise ValueError(
            f"events must be (n_events, {len(pnn)}) to match pnn; got shape {events.shape}"
        )
    if pns is not None and len(pns) != len(pnn):
        raise ValueError(f"pns has {len(pns)} labels for {len(pnn)} channels")
    state = SampleState(plan, events, pnn, pns, spillover_by_id)
    out = []
    for node in plan.nodes:
        mask = state.mask(node.tree_path)
        if node.kind == "quadrant":
            gate_type = "Quadrant"
        else:
            gate_type = node.gate.gate_type or type(node.gate).__name__
        out.append(
            GateMembership(
                gate_id=node.tree_path[-1],
                path=node.tree_path[1:],
                parent_path=node.parent[1:] if node.parent is not None else (),
                mask=mask,
                gate_type=gate_type,
            )
        )
    if reuse is not None:
        reuse.compensated.update(state.compensated_channels())
        reuse.raw.update(state.raw_columns)
        for stage, sec in state.seconds.items():
            reuse.seconds[stage] = reuse.seconds.get(stage, 0.0) + sec
    return out

