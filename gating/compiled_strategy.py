"""A flowkit gating strategy compiled once into an evaluation plan, and the result record.

``compile_strategy`` walks a ``GatingStrategy``'s gate tree once (custom sample gates
chosen, QuadrantGates replaced by their quadrants) into a ``CompiledStrategy`` that
``gating.evaluator`` evaluates on any number of files; ``GateMembership`` is what the
evaluation yields per population.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import flowkit as fk
import numpy as np
from flowkit import gates as fk_gates
from flowkit.exceptions import QuadrantReferenceError

from gating.raw_bands import raw_band

__all__ = ["GateMembership", "CompiledStrategy", "compile_strategy"]

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

    def node(self, tree_path: tuple[str, ...]) -> _Node | None:
        """The node at ``tree_path`` (with 'root'), or None."""
        return self._by_path.get(tree_path)

    def band(self, xform_ref: str, bound: float) -> tuple[float, float]:
        """Raw-value band ``(a, b)`` around ``bound`` of transform ``xform_ref`` (cached).

        See ``gating.raw_bands.raw_band``; ``(-inf, inf)`` when raw comparisons cannot decide this bound.
        """
        key = (xform_ref, float(bound))
        hit = self._bands.get(key)
        if hit is None:
            hit = raw_band(self.transforms[xform_ref], float(bound))
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

