"""Apply a gating strategy (Gating-ML 2.0, FlowJo workspace or the adaptive panel)
to one sample and return every gate's event membership.

This is the single entry point the pipeline uses; the evaluator behind it is
flowkit's own ``GatingStrategy.gate_sample`` (the reference implementation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assays.records import FcsSample


@dataclass
class GateMembership:
    """Events inside one gate (and all its ancestors) of one sample."""

    gate_id: str
    path: tuple[str, ...]  # gate ids from the root (excluded) down to gate_id
    parent_path: tuple[str, ...]  # () for a gate directly under the root
    mask: np.ndarray  # bool, one per event


def gate_paths(strategy) -> list[tuple[str, tuple[str, ...]]]:
    """(population id, full path including 'root') for every population, parents first.

    A Gating-ML QuadrantGate is not a population itself: each of its quadrants is
    one, sitting directly under the quadrant gate's parent.
    """
    from flowkit import gates as fk_gates
    from flowkit.exceptions import QuadrantReferenceError

    items = []
    for gid, parent in strategy.get_gate_ids():
        full = tuple(parent) + (gid,)
        try:
            gate = strategy.get_gate(gid, gate_path=tuple(parent))
        except QuadrantReferenceError:
            items.append((gid, full))  # a quadrant: listed by flowkit under the gate's parent
            continue
        if not isinstance(gate, fk_gates.QuadrantGate):
            items.append((gid, full))
    return sorted(items, key=lambda it: len(it[1]))


def _flowkit_sample(sample: FcsSample, flowjo_labels: bool = False):
    import flowkit as fk

    if sample.path is None:
        raise ValueError("the flowkit evaluator needs the sample's file path")
    # use_flowjo_labels: FlowJo writes '/' in detector names as '_'; Gating-ML files keep '/'.
    return fk.Sample(sample.path, sample_id=sample.sample_id, subsample=0, use_flowjo_labels=flowjo_labels)


def apply_strategy(strategy, sample: FcsSample, flowjo_labels: bool = False) -> list[GateMembership]:
    """Evaluate every gate of ``strategy`` on ``sample``; parents come before children.

    ``flowjo_labels``: the strategy comes from a FlowJo workspace, which names
    detectors with '/' replaced by '_'.
    """
    fk_sample = _flowkit_sample(sample, flowjo_labels)
    results = strategy.gate_sample(fk_sample)
    out = []
    for gate_id, full in gate_paths(strategy):
        parent = full[:-1]
        mask = np.asarray(results.get_gate_membership(gate_id, gate_path=parent), dtype=bool)
        out.append(GateMembership(gate_id=gate_id, path=full[1:], parent_path=parent[1:], mask=mask))
    return out
