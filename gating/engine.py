"""Apply a gating strategy (Gating-ML 2.0, FlowJo workspace or the adaptive panel)
to one sample and return every gate's event membership.

This is the single entry point the pipeline uses. The evaluator behind it is
:mod:`gating.fast_engine`, which gives flowkit's results event by event while
transforming each channel once per sample (tests/test_fast_engine.py compares the two).
"""

from __future__ import annotations

import dataclasses

from assays.records import FcsSample
from gating.fast_engine import GateMembership, evaluate_sample

__all__ = ["GateMembership", "apply_strategy"]


def _flowjo_view(sample: FcsSample) -> FcsSample:
    """FlowJo names detectors with '/' replaced by '_' (``BL 530/30-A`` -> ``BL 530_30-A``)."""
    from assays.records import Channel

    chans = [Channel(c.index, c.pnn.replace("/", "_"), c.pns) for c in sample.channels]
    spill = sample.spillover
    if spill is not None:
        spill = dataclasses.replace(spill, detectors=[d.replace("/", "_") for d in spill.detectors])
    return dataclasses.replace(sample, channels=chans, spillover=spill)


def apply_strategy(strategy, sample: FcsSample, flowjo_labels: bool = False,
                   compensated: dict | None = None, seconds: dict | None = None) -> list[GateMembership]:
    """Evaluate every gate of ``strategy`` on ``sample``; parents come before children.

    ``flowjo_labels``: the strategy comes from a FlowJo workspace (FlowJo's detector names).
    ``compensated``: filled with the compensated channels the gates used
    (``gating.fast_engine.evaluate_strategy``), for statistics on the same values.
    ``seconds``: compensate / transform seconds are added to it.
    """
    if flowjo_labels:
        sample = _flowjo_view(sample)
    return evaluate_sample(strategy, sample, sample_id=sample.sample_id, compensated=compensated, seconds=seconds)
