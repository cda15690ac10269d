"""Which channel to gate when a tube carries one marker on several channels (CD8a and CD8b,
or CD8 on PE and on APC): the best separated one inside the parent the marker is first
gated in, recorded in ``flow_qc``."""

from __future__ import annotations

import math

import numpy as np

from gating.adaptive.state import MIN_PLACEMENT_EVENTS, Walk
from gating.adaptive.thresholds import MIXTURE_HOW, VALLEY_HOW, marker_threshold
from gating.qc import channel_choice, separation_index


def choose(marker: str, parent: str, walk: Walk) -> None:
    """Gate ``marker`` on its best-separated channel from here on (once per walk).

    Each candidate channel (``walk.prep.alternatives``) is cut inside ``parent`` as the
    marker would be (:func:`~gating.adaptive.thresholds.marker_threshold`, on the
    compensated logicle values the gates use) and scored by the separation index of the
    two sides (:func:`gating.qc.separation_index`). A channel whose cut is a density valley
    or a resolved two-component mixture beats one that shows a single population; among
    equals the higher separation wins, the first in file order on a tie. The choice
    replaces the marker's channel and values in ``walk.prep`` and adds a passing
    ``channel_<marker>@<parent>`` row naming every channel with its separation.

    Separation is measured on the parent (CD3+ for CD8), not on all events: outside T cells
    both CD8 channels see NK cells and debris, and raw (uncompensated, untransformed)
    values rank channels by their brightness, not their resolution.

    Failure mode: a parent with fewer than ``MIN_PLACEMENT_EVENTS`` events is scored on all
    events (as the cut is placed then); two channels both showing one population are ranked
    by a separation that means little (the marker's own QC rows flag it).
    """
    prep = walk.prep
    candidates = prep.alternatives.pop(marker, None)
    if not candidates:
        return
    pmask = walk.masks[parent]
    sel = pmask if pmask.sum() >= MIN_PLACEMENT_EVENTS else np.ones_like(pmask)
    majority = walk.panel.markers[marker].majority
    scored = []
    for i, (ch, values) in enumerate(candidates):
        vals = values[sel]
        t, how = marker_threshold(vals, majority)
        sep = separation_index(vals[vals < t], vals[vals >= t])
        resolved = how in (VALLEY_HOW, MIXTURE_HOW)
        rank = (resolved, sep if math.isfinite(sep) else -math.inf, -i)
        scored.append((rank, ch, values, sep, resolved))
    scored.sort(key=lambda s: s[0], reverse=True)
    _rank, ch, values, _sep, _res = scored[0]
    prep.channels[marker] = ch
    prep.fluor[marker] = values
    walk.qc.append(channel_choice(marker, walk.ids[parent], parent,
                                  [(_label(c), sep, res) for _r, c, _v, sep, res in scored]))


def _label(ch) -> str:
    return f"{ch.pns} on {ch.pnn}" if ch.pns else ch.pnn
