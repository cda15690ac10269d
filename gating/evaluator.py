"""The gate-tree evaluator: exact evaluation of a flowkit ``GatingStrategy`` (Gating-ML 2.0,
FlowJo workspace or the adaptive panel) on an events matrix; ``apply_strategy`` is the
pipeline's single gating entry point.

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
  decided without transforming: both functions are strictly increasing, so a raw
  value clearly below/above the raw image of a bound (a band of +-1e-7 scale units,
  edges checked with flowutils' own forward code) is on that side for flowutils
  too; only raw values inside a band, off-scale (beyond T, where the C solver may
  not converge) or non-finite are transformed (see ``_raw_band``);
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

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import dataclasses
import time

import flowkit as fk
import numpy as np
from flowkit import gates as fk_gates
from flowkit.exceptions import QuadrantReferenceError
from flowutils import compensate as fu_compensate
from flowutils import gating as fu_gating

from gating.compensation import solve_by_chunks

__all__ = [
    "GateMembership",
    "CompiledStrategy",
    "compile_strategy",
    "evaluate_strategy",
    "evaluate_sample",
    "apply_strategy",
    "sample_columns",
    "evaluate_flowkit_sample",
    "flowkit_fcs_spillover",
]

# Compensation references that mean "read the raw channel" (flowkit treats a
# missing reference the same as the Gating-ML keyword).
_UNCOMPENSATED = (None, "uncompensated")


@dataclass
class GateMembership:
    """Membership of every event in one population.

    ``gate_id``: the gate's (or quadrant's) id.
    ``path``: gate ids from the root (``'root'`` excluded) ending with ``gate_id``;
    for a quadrant this is ``(..., quadrant_gate_id, quadrant_id)``, the node path
    in flowkit's gate tree, so children of a quadrant have ``path`` prefixed by it.
    ``parent_path``: the ``path`` of the population this one was intersected with
    (``()`` for a root-level gate). Normally ``path[:-1]``; for a quadrant it is the
    QuadrantGate's parent (``path[:-2]``), since the QuadrantGate itself has no
    membership of its own.
    ``mask``: bool array, one entry per event in input order, parent already ANDed.
    ``gate_type``: flowkit's gate type name (``'Quadrant'`` for a quadrant).
    """

    gate_id: str
    path: tuple[str, ...]
    parent_path: tuple[str, ...]
    mask: np.ndarray
    gate_type: str = ""

    @property
    def count(self) -> int:
        """Number of events in the population."""
        return int(np.count_nonzero(self.mask))


@dataclass
class _Node:
    """One evaluable population in the compiled plan.

    ``kind`` is 'gate' (rectangle, polygon, ellipsoid, boolean) or 'quadrant';
    for a quadrant, ``gate`` is the owning QuadrantGate and ``quadrant_id`` names
    the quadrant. ``parent`` is the tree path (with 'root') of the population whose
    mask is ANDed in, or None for root-level gates.
    """

    tree_path: tuple[str, ...]
    kind: str
    gate: Any
    parent: tuple[str, ...] | None
    quadrant_id: str | None = None


@dataclass
class CompiledStrategy:
    """A gating strategy resolved once into an evaluation plan.

    Holds what does not depend on the sample: the gates (custom sample gates
    already chosen), their order, parents, the strategy's transforms and
    compensation matrices. Re-use one ``CompiledStrategy`` for many files.
    """

    nodes: list[_Node]
    transforms: dict[str, Any]
    comp_matrices: dict[str, Any]
    _by_path: dict[tuple[str, ...], _Node] = field(default_factory=dict, repr=False)
    # (transform ref, bound) -> raw band, see ``band``; sample-independent, so
    # computed once per plan however many files it gates.
    _bands: dict[tuple[str, float], tuple[float, float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_path = {n.tree_path: n for n in self.nodes}

    def band(self, xform_ref: str, bound: float) -> tuple[float, float]:
        """Raw-value band ``(a, b)`` around ``bound`` of transform ``xform_ref`` (cached).

        See ``_raw_band``; ``(-inf, inf)`` when raw comparisons cannot decide this bound.
        """
        key = (xform_ref, float(bound))
        hit = self._bands.get(key)
        if hit is None:
            hit = _raw_band(self.transforms[xform_ref], float(bound))
            self._bands[key] = hit
        return hit


def compile_strategy(strategy: fk.GatingStrategy, sample_id: str | None = None) -> CompiledStrategy:
    """Resolve ``strategy`` into a ``CompiledStrategy`` (gate tree walked once).

    ``sample_id`` selects flowkit custom sample gates where the strategy has them
    (``GatingStrategy.get_gate(..., sample_id=...)``); otherwise template gates are used.
    Nodes are listed in the gate tree's pre-order (parents before children), with a
    QuadrantGate replaced by its quadrants in the tree's order.
    """
    nodes: list[_Node] = []
    quad_gates: dict[tuple[str, ...], Any] = {}
    for gate_id, ancestors in strategy.get_gate_ids():
        tree_path = tuple(ancestors) + (gate_id,)
        parent_tree_path = tuple(ancestors)
        try:
            gate = strategy.get_gate(gate_id, gate_path=tuple(ancestors), sample_id=sample_id)
        except QuadrantReferenceError:
            # A quadrant node: its QuadrantGate is its tree parent, already visited
            # (pre-order); the population is intersected with the QuadrantGate's parent.
            qgate = quad_gates[parent_tree_path]
            grand = parent_tree_path[:-1]
            nodes.append(
                _Node(tree_path, "quadrant", qgate, grand if len(grand) > 1 else None, gate_id)
            )
            continue
        if isinstance(gate, fk_gates.QuadrantGate):
            quad_gates[tree_path] = gate
            continue
        nodes.append(
            _Node(tree_path, "gate", gate, parent_tree_path if len(parent_tree_path) > 1 else None)
        )
    return CompiledStrategy(nodes, dict(strategy.transformations), dict(strategy.comp_matrices))


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


_MISSING = object()

# Transforms computed by a scalar C loop, one value at a time (flowutils.logicle_c):
# evaluating them on a subset of events gives the same bits as on the whole column,
# so they are only evaluated where a gate's parent population needs them. These are
# also the expensive ones (~100 ms per million values). Other transforms are cheap
# or go through numpy's vectorised transcendental loops, and are computed on the
# whole column exactly as flowkit does.
_PER_VALUE_TRANSFORMS = (fk.transforms.LogicleTransform, fk.transforms.HyperlogTransform)

# Transforms whose per-value function is known to be strictly increasing, so that
# thresholds can be compared in raw space (``_raw_band``). Matched by exact type: a
# subclass may override ``apply`` with any function, and then takes the exact path.
_MONOTONE_TRANSFORMS = (fk.transforms.LogicleTransform, fk.transforms.HyperlogTransform)

# Threshold bands (rectangle bounds, quadrant dividers on logicle/hyperlog dims).
# Half-width of the band, in transformed units (scales span about 0..1).
_BAND_MARGIN = 1e-7
# A band that decides nothing: every event goes through the exact transform.
_NO_BAND = (-np.inf, np.inf)


def _apply_column(xform: Any, src: np.ndarray) -> np.ndarray:
    """``xform.apply`` on an ``(k, 1)`` float64 column, flattened (the engine's only call)."""
    return np.ascontiguousarray(np.asarray(xform.apply(src), dtype=np.float64).reshape(-1))


def _trusted_limit(xform: Any) -> float:
    """Largest ``|x|`` for which flowutils' C loop is trusted to have converged.

    ``logicle_scale`` / ``hyperlog_scale`` solve ``B(y) = x`` by Halley's method and
    return the sentinel ``-1`` when 40 (hyperlog: 10) steps do not converge, which
    makes the C output non-monotone there. Within ``|x| <= T`` (the top of scale)
    the solution lies in ``[2*x1 - 1, 1]``, where the absolute stopping tolerance
    ``3 * DBL_EPSILON`` is at least a few ulps, so the loop converges (hyperlog's
    tolerance does not grow with ``y``: sentinels were observed from about 2.5e9*T
    on; NaN and +-inf always give -1). Events beyond ``T`` are off-scale and rare,
    so they simply take the exact path.
    """
    t = float(getattr(xform, "param_t", 0.0))
    return t if np.isfinite(t) and t > 0 else 0.0


def _raw_band(xform: Any, bound: float) -> tuple[float, float]:
    """Raw values ``(a, b)`` such that ``x <= a`` surely gives ``C(x) < bound`` and
    ``x >= b`` surely gives ``C(x) >= bound``, for trusted ``x`` (``|x| <= T``), where
    C is flowutils' C logicle/hyperlog as the engine calls it.

    Why this is exact: the true logicle/hyperlog function T is strictly increasing,
    and the C implementation (within the trusted range) returns T(x) to a few ulps
    (Halley's method stopped at a step below ``3 * DBL_EPSILON``; round trips
    ``C(inverse(y))`` agree with ``y`` to 2e-16), so its error ``err`` < 1e-14 is
    orders of magnitude below ``_BAND_MARGIN / 4``.
    ``a`` and ``b`` come from the transform's own ``inverse`` at ``bound -/+ margin``,
    clamped into the trusted range, and are then checked with the very forward code
    the engine uses: ``C(a) <= bound - margin/2`` and ``C(b) >= bound + margin/2``.
    For trusted ``x <= a``: ``C(x) <= T(x) + err <= T(a) + err <= C(a) + 2*err < bound``;
    for trusted ``x >= b`` symmetrically ``C(x) > bound``. So a raw comparison gives the
    bit flowkit's ``C(x) >= bound`` / ``C(x) < bound`` gives; only ``a < x < b``,
    untrusted and non-finite values need the transform. Each edge stands on its own
    check: an edge whose inverse is NaN or whose check fails is dropped (``-inf`` /
    ``inf``), so e.g. a bound at the top of scale still decides everything below it.
    """
    limit = _trusted_limit(xform)
    if not np.isfinite(bound) or limit <= 0:
        return _NO_BAND
    margin = _BAND_MARGIN
    try:
        edges = np.asarray(
            xform.inverse(np.array([[bound - margin], [bound + margin]])), dtype=np.float64
        ).reshape(-1)
    except Exception:  # a transform without a usable inverse: exact path
        return _NO_BAND
    if edges.shape != (2,) or np.isnan(edges).any():
        return _NO_BAND
    a, b = np.clip(edges, -limit, limit)  # the C check below must run on trusted values
    c_a, c_b = _apply_column(xform, np.array([[a], [b]]))
    return (
        float(a) if c_a <= bound - margin / 2 else -np.inf,
        float(b) if c_b >= bound + margin / 2 else np.inf,
    )


def _in_range(values: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    """flowkit's range test ``lo <= v < hi`` (a missing bound is open)."""
    res = np.ones(values.shape, dtype=bool)
    if lo is not None:
        res &= values >= lo
    if hi is not None:
        res &= values < hi
    return res


class _SampleState:
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
        self.spillover_by_id = spillover_by_id
        self.n = events.shape[0]
        # comp ref -> (compensated block, channel index -> block column)
        self._comp: dict[Any, tuple[np.ndarray, dict[int, int]]] = {}
        self._identity = {i: i for i in range(events.shape[1])}
        # (effective comp ref, transform ref, channel index) ->
        # (contiguous 1-D column, bool "computed" mask or None once complete)
        self._columns: dict[tuple, tuple[np.ndarray, np.ndarray | None]] = {}
        # (ratio transform ref, transform ref) -> 1-D column (raw channels, as flowkit)
        self._ratio_columns: dict[tuple, np.ndarray] = {}
        # tree path (with 'root') -> final mask; quadrant gates cache their dict too
        self.masks: dict[tuple[str, ...], np.ndarray] = {}
        self._quad_results: dict[int, dict[str, np.ndarray]] = {}
        # seconds spent compensating and transforming (the rest of an evaluation is gating)
        self.seconds = {"compensate": 0.0, "transform": 0.0}
        self._in_progress: set[tuple[str, ...]] = set()

    # ----- compensation -------------------------------------------------------------

    def _lookup_matrix(self, comp_ref: str) -> Any:
        """The matrix for ``comp_ref``: caller-supplied first, then the strategy's."""
        found: Any = _MISSING
        src = self.spillover_by_id
        if src is not None:
            if callable(src) and not isinstance(src, Mapping):
                try:
                    found = src(comp_ref)
                except KeyError:
                    found = _MISSING
            else:
                found = src.get(comp_ref, _MISSING)
        if found is not _MISSING and found is not None:
            return found
        if comp_ref in self.plan.comp_matrices:
            return self.plan.comp_matrices[comp_ref]
        if comp_ref == "FCS":
            # Gating-ML 2.0: 'FCS' with no spillover in the file = uncompensated.
            return None
        raise KeyError(
            f"compensation reference {comp_ref!r} is neither in the gating strategy "
            f"({sorted(self.plan.comp_matrices)}) nor supplied in spillover_by_id"
        )

    def compensated(self, comp_ref: Any) -> tuple[np.ndarray, dict[int, int]]:
        """Compensated values for ``comp_ref`` as ``(block, where)``.

        ``block`` is an (n_events, k) array and ``where`` maps a channel index to its
        column in ``block``; channels not in ``where`` are unaffected by this
        compensation and read from the raw events. No compensation: ``(events,
        identity)``.
        """
        if comp_ref in _UNCOMPENSATED:
            return self.events, self._identity
        hit = self._comp.get(comp_ref)
        if hit is not None:
            return hit
        matrix = self._lookup_matrix(comp_ref)
        if matrix is None:
            out = (self.events, self._identity)
        else:
            t0 = time.perf_counter()
            out = self._apply_matrix(matrix, comp_ref)
            self.seconds["compensate"] += time.perf_counter() - t0
        self._comp[comp_ref] = out
        return out

    def compensated_channels(self) -> dict[Any, dict[int, np.ndarray]]:
        """``{comp ref: {channel index: values}}`` for every matrix applied so far."""
        return {
            ref: {ch: block[:, j] for ch, j in where.items()}
            for ref, (block, where) in self._comp.items()
            if block is not self.events
        }

    def source(self, comp_ref: Any, idx: int) -> tuple[np.ndarray, int]:
        """(2-D array, column) holding channel ``idx`` compensated with ``comp_ref``."""
        block, where = self.compensated(comp_ref)
        j = where.get(idx)
        return (self.events, idx) if j is None else (block, j)

    def _apply_matrix(self, matrix: Any, comp_ref: str) -> tuple[np.ndarray, dict[int, int]]:
        if isinstance(matrix, fk.SpectralMatrix):
            # Rare; flowutils' own function on the whole matrix.
            idx = [self._pnn_index(d, comp_ref) for d in matrix.detectors]
            full = fu_compensate.compensate_spectral_ols(self.events, matrix.matrix, idx)
            return full, self._identity
        if isinstance(matrix, fk.Matrix):
            # Same matrix and channel order as flowkit's Matrix.apply.
            idx = [self._pnn_index(d, comp_ref) for d in matrix.detectors]
            values = np.asarray(matrix.matrix)
        else:
            if isinstance(matrix, tuple) and len(matrix) == 2:
                detectors, values = matrix
            else:
                detectors, values = matrix.detectors, matrix.matrix
            values = np.asarray(values, dtype=np.float64)
            idx = [self._pnn_index(d, comp_ref) for d in detectors]
            # A spillover record ($SPILLOVER order) is put in file channel order
            # first: flowkit re-orders the file's spillover to its fluorescence
            # channel order before solving, and the solve's rounding depends on it.
            order = np.argsort(idx, kind="stable")
            values = values[np.ix_(order, order)]
            idx = [idx[i] for i in order]
        # The exact expression of flowutils.compensate.compensate
        # (``np.linalg.solve(spill.T, data[:, idx].T).T``) on the same operands, so
        # the same LAPACK call produces the same bits; it skips that function's copy
        # of the whole events matrix and the write-back, which only move data.
        # Detectors in consecutive columns (the usual layout) are passed as a strided
        # view: solve copies its operand into LAPACK's layout anyway, so the values it
        # sees are the same and a second copy of the detector block is saved.
        first = idx[0] if idx else 0
        detectors = (self.events[:, first:first + len(idx)] if idx == list(range(first, first + len(idx)))
                     else self.events[:, idx])
        block = solve_by_chunks(values.T, detectors.T).T
        return block, {c: j for j, c in enumerate(idx)}

    def _pnn_index(self, detector: str, comp_ref: str) -> int:
        try:
            return self.pnn.index(detector)
        except ValueError:
            raise LookupError(
                f"compensation {comp_ref!r} names detector {detector!r}, not a channel "
                f"of this sample ($PnN: {self.pnn})"
            ) from None

    # ----- columns ------------------------------------------------------------------

    def channel_index(self, dim_id: str, dim_comp_ref: Any) -> int:
        """Column index of ``dim_id`` (flowkit's lookup order, see module docstring)."""
        if dim_id in self.pnn:
            return self.pnn.index(dim_id)
        if self.pns is not None and dim_id in self.pns:
            return self.pns.index(dim_id)
        if dim_id in self.flowjo_pnn:
            return self.flowjo_pnn.index(dim_id)
        if dim_comp_ref not in _UNCOMPENSATED:
            matrix = self.plan.comp_matrices.get(dim_comp_ref)
            if matrix is None:
                matrix = self._lookup_matrix(dim_comp_ref)
            fluoros = list(getattr(matrix, "fluorochromes", None) or [])
            if dim_id in fluoros:
                return self._pnn_index(matrix.detectors[fluoros.index(dim_id)], dim_comp_ref)
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
        key = (comp_ref if comp_ref not in _UNCOMPENSATED else None, xform_ref, idx)
        hit = self._columns.get(key)
        if hit is not None and hit[1] is None:
            return hit[0]
        arr, j = self.source(comp_ref, idx)
        xform = self.plan.transforms[xform_ref] if xform_ref is not None else None
        if xform is None or not isinstance(xform, _PER_VALUE_TRANSFORMS):
            if xform is None:
                col = np.ascontiguousarray(arr[:, j])
            else:
                # flowkit applies transforms to events[:, [i]]: a contiguous (n, 1)
                # copy. Same shape and layout here, so the same code paths run
                # (numpy's vectorised transcendental loops included).
                col = self._apply(xform, np.ascontiguousarray(arr[:, [j]]))
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
        out = _apply_column(xform, src)
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
            d.compensation_ref for d in gate.dimensions if d.compensation_ref not in _UNCOMPENSATED
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
            return _in_range(self.dim_column(comp_ref, dim, within), lo, hi)
        xform = self.plan.transforms[dim.transformation_ref]
        idx = self.dim_index(dim)
        if type(xform) not in _MONOTONE_TRANSFORMS or self._complete(comp_ref, dim.transformation_ref, idx):
            return _in_range(self.column(comp_ref, dim.transformation_ref, idx, within), lo, hi)
        if lo is None and hi is None:
            return np.ones(self.n, dtype=bool)  # open on both sides: no value is needed
        return self._banded_range(comp_ref, dim.transformation_ref, idx, lo, hi, within)

    def _complete(self, comp_ref: Any, xform_ref: str, idx: int) -> bool:
        """True if ``column`` has this column cached for every event."""
        hit = self._columns.get((comp_ref if comp_ref not in _UNCOMPENSATED else None, xform_ref, idx))
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
        ``_raw_band`` for why deciding outside it is exact). A trusted raw value
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
        limit = _trusted_limit(xform)
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
            res[need] = _in_range(col[need_rows], lo, hi)
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
        node = self.plan._by_path.get(tree_path)
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
            # point, so only events inside the parent are tested.
            if parent is not None:
                sel = np.flatnonzero(parent)
                pts = np.column_stack([c[sel] for c in cols])
                res = np.zeros(self.n, dtype=bool)
                res[sel] = fu_gating.points_in_polygon(verts, pts)
                if gate.use_complement:
                    # outside-of-polygon, still restricted to the parent by the caller
                    res[sel] = ~res[sel]
                return res
            res = fu_gating.points_in_polygon(verts, np.column_stack(cols))
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
    compensated: dict[Any, dict[int, np.ndarray]] | None = None,
    seconds: dict[str, float] | None = None,
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
    ``compensated``: if given, filled with what the evaluation compensated:
    ``{compensation ref: {channel index: compensated values (1-D)}}``, one entry per
    matrix the gates actually used, so callers can reuse the solve.
    ``seconds``: if given, ``"compensate"`` and ``"transform"`` seconds are added to it.

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
    state = _SampleState(plan, events, pnn, pns, spillover_by_id)
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
    if compensated is not None:
        compensated.update(state.compensated_channels())
    if seconds is not None:
        for stage, sec in state.seconds.items():
            seconds[stage] = seconds.get(stage, 0.0) + sec
    return out


def _fcs_sample_inputs(sample: Any, matrices: Mapping[str, Any] | None) -> tuple[list[str], list[str], dict[str, Any]]:
    """``(pnn, pns, spillover_by_id)`` of an ``assays.records.FcsSample``: 'FCS' is its own spillover."""
    supplied: dict[str, Any] = dict(matrices or {})
    if "FCS" not in supplied and getattr(sample, "spillover", None) is not None:
        supplied["FCS"] = sample.spillover
    channels = sample.channels
    return [c.pnn for c in channels], [c.pns or "" for c in channels], supplied


def evaluate_sample(
    strategy: fk.GatingStrategy | CompiledStrategy,
    sample: Any,
    matrices: Mapping[str, Any] | None = None,
    *,
    sample_id: str | None = None,
    compensated: dict[Any, dict[int, np.ndarray]] | None = None,
    seconds: dict[str, float] | None = None,
) -> list[GateMembership]:
    """``evaluate_strategy`` for an ``assays.records.FcsSample``.

    ``'FCS'`` resolves to the sample's own spillover (``sample.spillover``); other
    references come from ``matrices`` (e.g. a matrix named in the config) and then
    from the strategy. ``$PnS`` labels come from the sample's channels.
    """
    pnn, pns, supplied = _fcs_sample_inputs(sample, matrices)
    return evaluate_strategy(
        strategy,
        sample.events,
        pnn,
        supplied,
        pns=pns,
        sample_id=sample_id,
        compensated=compensated,
        seconds=seconds,
    )


def _flowjo_view(sample: Any) -> Any:
    """FlowJo names detectors with '/' replaced by '_' (``BL 530/30-A`` -> ``BL 530_30-A``)."""
    from assays.records import Channel

    chans = [Channel(c.index, c.pnn.replace("/", "_"), c.pns) for c in sample.channels]
    spill = sample.spillover
    if spill is not None:
        spill = dataclasses.replace(spill, detectors=[d.replace("/", "_") for d in spill.detectors])
    return dataclasses.replace(sample, channels=chans, spillover=spill)


def apply_strategy(strategy: fk.GatingStrategy | CompiledStrategy, sample: Any, flowjo_labels: bool = False,
                   compensated: dict | None = None, seconds: dict | None = None) -> list[GateMembership]:
    """Evaluate every gate of ``strategy`` on an ``assays.records.FcsSample``; parents come before children.

    ``flowjo_labels``: the strategy comes from a FlowJo workspace (FlowJo's detector names).
    ``compensated``: filled with the compensated channels the gates used
    (:func:`evaluate_strategy`), for statistics on the same values.
    ``seconds``: compensate / transform seconds are added to it.
    """
    if flowjo_labels:
        sample = _flowjo_view(sample)
    return evaluate_sample(strategy, sample, sample_id=sample.sample_id, compensated=compensated, seconds=seconds)


def sample_columns(
    strategy: fk.GatingStrategy | CompiledStrategy,
    sample: Any,
    rows: np.ndarray | None = None,
    matrices: Mapping[str, Any] | None = None,
) -> _SampleState:
    """The gate coordinates of ``sample``'s events ``rows`` (all when None), as gating sees them.

    Same channel lookup, compensation and transforms as :func:`evaluate_sample`, so a
    picture drawn from ``.gate_columns(gate)`` puts each event where the evaluator tested
    it; ``.channel_index(dim_id, comp_ref)`` finds a dimension's channel. Compensation and
    transforms run on the selected rows only.
    """
    plan = strategy if isinstance(strategy, CompiledStrategy) else compile_strategy(strategy, sample.sample_id)
    pnn, pns, supplied = _fcs_sample_inputs(sample, matrices)
    events = sample.events if rows is None else sample.events[rows]
    return _SampleState(plan, np.ascontiguousarray(events, dtype=np.float64), pnn, pns, supplied)


def flowkit_fcs_spillover(sample: fk.Sample) -> fk.Matrix | None:
    """The file's own spillover as flowkit builds it for ``compensation_ref='FCS'``.

    ``$SPILLOVER`` preferred over ``$SPILL``; detectors are the fluorescence ``$PnN``
    in file order, null channels dropped. ``None`` when the file has no spillover.
    """
    meta = sample.get_metadata()
    spill = meta.get("spillover", meta.get("spill"))
    if spill is None:
        return None
    detectors = [sample.pnn_labels[i] for i in sample.fluoro_indices]
    fluorochromes = [sample.pns_labels[i] for i in sample.fluoro_indices]
    return fk.Matrix(spill, detectors, fluorochromes, null_channels=sample.null_channels)


def evaluate_flowkit_sample(
    strategy: fk.GatingStrategy | CompiledStrategy,
    sample: fk.Sample,
    matrices: Mapping[str, Any] | None = None,
) -> list[GateMembership]:
    """``evaluate_strategy`` on a ``flowkit.Sample`` (raw events, its $SPILLOVER as 'FCS').

    Custom sample gates are selected by ``sample.id``, like ``gate_sample`` does.
    """
    supplied: dict[str, Any] = dict(matrices or {})
    if "FCS" not in supplied:
        fcs = flowkit_fcs_spillover(sample)
        if fcs is not None:
            supplied["FCS"] = fcs
    return evaluate_strategy(
        strategy,
        sample.get_events(source="raw"),
        list(sample.pnn_labels),
        supplied,
        pns=list(sample.pns_labels),
        sample_id=sample.id,
    )


def memberships_by_path(memberships: Iterable[GateMembership]) -> dict[tuple[str, ...], GateMembership]:
    """Index a result list by ``path`` (paths are unique within one evaluation)."""
    return {m.path: m for m in memberships}
