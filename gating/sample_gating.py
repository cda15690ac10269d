"""Gating a sample: the evaluator applied to an ``assays.records.FcsSample`` or a
``flowkit.Sample``; ``apply_strategy`` is the pipeline's single gating entry point.

These adapters only turn a sample into what ``gating.evaluator.evaluate_strategy``
takes (raw events, ``$PnN``/``$PnS`` labels, and the file's own spillover as the
``'FCS'`` compensation reference); ``sample_columns`` hands the same prepared columns
to the gating pictures.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flowkit as fk
import numpy as np

from gating.compiled_strategy import CompiledStrategy, GateMembership, compile_strategy
from gating.evaluator import ReusableColumns, SampleState, evaluate_strategy

__all__ = [
    "apply_strategy",
    "evaluate_sample",
    "evaluate_flowkit_sample",
    "flowkit_fcs_spillover",
    "sample_columns",
]

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
    reuse: ReusableColumns | None = None,
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
        reuse=reuse,
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
                   reuse: ReusableColumns | None = None) -> list[GateMembership]:
    """Evaluate every gate of ``strategy`` on an ``assays.records.FcsSample``; parents come before children.

    ``flowjo_labels``: the strategy comes from a FlowJo workspace (FlowJo's detector names).
    ``reuse``: filled with the compensated and raw columns the gates made and the engine's
    seconds (``gating.evaluator.ReusableColumns``), for statistics on the same values.
    """
    if flowjo_labels:
        sample = _flowjo_view(sample)
    return evaluate_sample(strategy, sample, sample_id=sample.sample_id, reuse=reuse)


def sample_columns(
    strategy: fk.GatingStrategy | CompiledStrategy,
    sample: Any,
    rows: np.ndarray | None = None,
    matrices: Mapping[str, Any] | None = None,
) -> SampleState:
    """The gate coordinates of ``sample``'s events ``rows`` (all when None), as gating sees them.

    Same channel lookup, compensation and transforms as :func:`evaluate_sample`, so a
    picture drawn from ``.gate_columns(gate)`` puts each event where the evaluator tested
    it; ``.channel_index(dim_id, comp_ref)`` finds a dimension's channel. Compensation and
    transforms run on the selected rows only.
    """
    plan = strategy if isinstance(strategy, CompiledStrategy) else compile_strategy(strategy, sample.sample_id)
    pnn, pns, supplied = _fcs_sample_inputs(sample, matrices)
    events = sample.events if rows is None else sample.events[rows]
    return SampleState(plan, np.ascontiguousarray(events, dtype=np.float64), pnn, pns, supplied)


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

