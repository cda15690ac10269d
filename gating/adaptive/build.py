"""The adaptive panel's entry point: prepare the tube (and its control), walk the panel,
build the flowkit strategy, add the whole-tube QC rows."""

from __future__ import annotations

from assays.markers import marker_alternatives, match_markers
from assays.records import FcsSample
from gating.adaptive.prepare import find_channel, prepare, spill_covers
from gating.adaptive.quadrant import QUADRANT_MODES
from gating.adaptive.records import AdaptiveGating
from gating.adaptive.strategy import build_strategy
from gating.adaptive.walk import walk as walk_panel
from gating.panel import Panel, load_panel
from gating.qc import channel_ranges, events_acquired, margin_events, stable_flow


def build_adaptive_gating(sample: FcsSample, panel: Panel | None = None,
                          control: FcsSample | None = None, max_events: int = 100_000,
                          seed: int = 0, quadrant: str = "auto") -> AdaptiveGating:
    """Place the panel's gates on ``sample`` and return them as a flowkit GatingStrategy.

    ``control`` is the unstimulated tube of the same specimen (sample-sheet ``control_of``):
    it is gated with the same method down to each cytokine's parent, and its 99.9th
    percentile sets the cytokine thresholds. Raises ``InputError`` naming a missing required
    marker and listing the channels found; a missing optional marker leaves its populations
    out (listed in ``missing_optional``). Scatter: the first forward and side scatter
    parameter of each axis the file has (area, else height, else unsuffixed; see the module
    docstring); ``InputError`` only when a file has no forward or no side scatter at all.
    Without a forward area/height pair ``Singlets`` is left out (in ``missing_optional``)
    and ``qc`` holds ``singlets_not_gated`` (:data:`SINGLETS_NOT_GATED`, passing; value 1 =
    no forward area, 2 = no forward height, 3 = neither) instead of ``singlet_share``.

    ``quadrant`` chooses how quadrant cuts (CD4/CD8) are placed, one of
    :data:`QUADRANT_MODES`: ``"auto"`` (default) uses the 1-D valley of each axis and the
    2-D mixture (:func:`gating.adaptive.quadrant.quadrant_mixture`) only for an axis whose 1-D cut is missing or
    implausible; ``"mixture_2d"`` uses the 2-D mixture for both axes whenever it resolves
    the pair (for panels known to smear in 1-D, and to validate the method);
    ``"valley_1d"`` never uses it.
    """
    if quadrant not in QUADRANT_MODES:
        raise ValueError(f"quadrant must be one of {', '.join(QUADRANT_MODES)}, not {quadrant!r}")
    panel = panel or load_panel()
    matched = match_markers(sample.channels, panel.aliases, panel.required)
    prep = prepare(sample, panel, matched, max_events, seed,
                   alternatives=marker_alternatives(sample.channels, panel.aliases))
    prep.has_comp = sample.spillover is not None and spill_covers(sample, matched)
    ctrl_walk = None
    if control is not None:
        c_matched = match_markers(control.channels, panel.aliases, panel.required)
        ctrl_prep = prepare(control, panel, c_matched, max_events, seed, scales=prep.scales,
                            alternatives=marker_alternatives(control.channels, panel.aliases))
        ctrl_prep.has_comp = control.spillover is not None and spill_covers(control, c_matched)
        with _single_thread():
            ctrl_walk = walk_panel(ctrl_prep, panel, seed=seed, with_cytokines=False, quadrant=quadrant)
    with _single_thread():
        walk = walk_panel(prep, panel, ctrl_walk, seed=seed, quadrant=quadrant)
    strategy = build_strategy(sample, prep.scales, walk.gates)

    qc = [events_acquired(sample.events.shape[0])]
    t = find_channel(sample, "TIME")
    qc.append(stable_flow(sample.events[:, t] if t is not None else None))
    scat = [prep.scatter_index[p] for p in walk.scatter_used]
    used = scat + [c.index for c in prep.channels.values()]  # after any choice between channels
    qc.append(margin_events(sample.events[prep.rows], channel_ranges(sample, used)))
    qc.extend(walk.qc)
    missing = sorted(set(panel.markers) - set(matched))
    return AdaptiveGating(
        strategy=strategy,
        names={spec.gate_id: spec.name for spec, _g, _p in walk.gates},
        qc=qc,
        missing_optional=walk.missing + [f"marker {m}" for m in missing],
        channels=prep.channels,
        placements=walk.placements,
    )


def _single_thread():
    """Mixtures here fit <= 20k points: one thread is faster than OpenMP/BLAS pools, which
    oversubscribe the cores when several files are gated in parallel (3x slower measured)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)
