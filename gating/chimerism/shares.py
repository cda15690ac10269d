"""The recipient's share beside several donors' shares of one post sample and method.

With k donors (MST often uses a different donor per cycle) the contributors are the
recipient and the k donors, and their shares of the post sample's DNA sum to 100 %:

    recipient % = 100 - sum_k donor_k %.

Each donor's % is estimated on its own informative markers (STR: loci where that donor
has an allele no other contributor carries, DESIGN.md), so the estimates carry
independent errors. When the method also estimates the recipient on its own unique
alleles (STR), all shares are scaled by 100 / their sum (closure of a composition;
Aitchison, The Statistical Analysis of Compositional Data, 1986, 2.8). Otherwise the
recipient's share is 100 minus the donors'; when the donors' sum exceeds 100 by noise
they are scaled to 100 and the recipient reads 0. The recipient's CI half-width combines the donors' by independence,
sqrt(sum_k h_k²), h_k = (ci_high_k - ci_low_k) / 2.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from gating.chimerism.limits import classify
from gating.chimerism.records import BELOW_LOD, OK, RECIPIENT, ChimerismResult, empty_result

INCOMPLETE = "donor_share_missing"


def with_recipient_share(results: Sequence[ChimerismResult]) -> list[ChimerismResult]:
    """``results`` (one post sample, one method, one row per donor) plus the recipient's row.

    Parameters
    ----------
    results : sequence of ChimerismResult
        The donors' results; with fewer than two donors they are returned unchanged.

    Returns
    -------
    list of ChimerismResult
        Donor rows (scaled when their sum exceeds 100, with a message saying so) and one
        row with ``contributor = "recipient"`` and ``donor_id`` None: its % = 100 - sum of
        the donors' %, CI half-width sqrt(sum h_k²), detected when >= the largest donor
        LOD. When a donor has no number the recipient row has none either (status
        ``donor_share_missing``).
    """
    donors = [r for r in results if r.contributor != RECIPIENT]
    if len(donors) < 2:
        return list(results)
    measured = [r for r in results if r.contributor == RECIPIENT and r.donor_pct is not None]
    if measured and all(r.donor_pct is not None for r in donors):
        return _closed(donors + measured[:1])
    sid, method = donors[0].sample_id, donors[0].method
    if any(r.donor_pct is None for r in donors):
        missing = ", ".join(str(r.donor_id) for r in donors if r.donor_pct is None)
        row = empty_result(sid, method, None, INCOMPLETE,
                           f"The recipient's share needs every donor's %; none for {missing} (see that row).")
        return donors + [dataclasses.replace(row, contributor=RECIPIENT)]
    total = sum(r.donor_pct for r in donors)
    if total > 100.0:
        scale = 100.0 / total
        note = f"Donor shares summed to {total:.1f} % and were scaled to 100 %."
        donors = [dataclasses.replace(
            r, donor_pct=r.donor_pct * scale,
            ci_low=None if r.ci_low is None else r.ci_low * scale,
            ci_high=None if r.ci_high is None else r.ci_high * scale,
            message=note if r.message is None else f"{r.message} {note}") for r in donors]
    pct = max(100.0 - sum(r.donor_pct for r in donors), 0.0)
    halves = [(r.ci_high - r.ci_low) / 2 for r in donors if r.ci_low is not None and r.ci_high is not None]
    half = math.sqrt(sum(h * h for h in halves)) if len(halves) == len(donors) else None
    lod = max((r.lod_pct for r in donors if r.lod_pct is not None), default=None)
    detected, status = classify(pct, lod) if lod is not None else (pct > 0, "ok")
    lo, hi = (None, None) if half is None else (max(pct - half, 0.0), min(pct + half, 100.0))
    row = ChimerismResult(sid, method, None, pct, lo, hi, lod, detected, min(r.n_markers for r in donors),
                          status, "Recipient's share: 100 % minus the donors' shares.", contributor=RECIPIENT)
    return donors + [row]


def _closed(rows: Sequence[ChimerismResult]) -> list[ChimerismResult]:
    """Every contributor estimated on its own unique alleles, scaled to sum to 100 %.

    s_k' = 100 s_k / sum_j s_j (closure, Aitchison 1986); the CI bounds scale alike.
    Independent errors partly cancel: a share s with relative error e contributes
    (1 - s/100) e to its own closed value, so the largest share gains most.
    """
    total = sum(r.donor_pct for r in rows)
    if total <= 0:
        return list(rows)
    scale = 100.0 / total

    def scaled(r: ChimerismResult) -> ChimerismResult:
        pct = r.donor_pct * scale
        if r.lod_pct is None or r.status not in (OK, BELOW_LOD):
            detected, status = r.detected, r.status
        else:
            detected, status = classify(pct, r.lod_pct)
        return dataclasses.replace(
            r, donor_pct=pct, ci_low=None if r.ci_low is None else min(r.ci_low * scale, 100.0),
            ci_high=None if r.ci_high is None else min(r.ci_high * scale, 100.0),
            detected=detected, status=status, message=r.message if status == r.status else None)

    return [scaled(r) for r in rows]
