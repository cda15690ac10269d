"""Which file each stored sample came from, and the lab's decisions on identity conflicts.

A sample_id names one biological sample. A file whose sample_id is already stored from
other bytes is an identity conflict (DESIGN.md, Folders: Identity), settled only by an
explicit decision (``identity_decisions``, written by ``graftwatch resolve``). This module
reads the committed state the batch needs to tell a conflict from a repeat.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from storage.store import Store


@dataclass(frozen=True)
class StoredSample:
    """The file a stored sample_id came from for one assay (its latest), and the sheet's words for it."""

    sample_id: str
    assay: str  # flow / str / qpcr / ddpcr: one sample is measured by several assays
    source_sha256: str
    source_name: str
    received: dt.datetime | None
    patient_id: str | None
    collection_date: dt.date | None


@dataclass(frozen=True)
class IdentityDecision:
    """``graftwatch resolve``: in the file ``source_sha256``, ``from_sample_id`` is
    ``to_sample_id``; with ``supersede`` it replaces what is stored for that sample."""

    source_sha256: str
    from_sample_id: str
    to_sample_id: str
    supersede: bool
    reason: str


def stored_samples(store: Store, con) -> dict[tuple[str, str], StoredSample]:
    """Every committed (sample_id, assay) -> the latest file it was stored from, with the
    sample sheet's patient and collection date when a sheet row exists (``con``:
    ``storage.views.connect(store)``, shared by the three readers of this module)."""
    if not store.files("samples"):
        return {}
    rows = con.execute("""
        SELECT s.sample_id, s.assay, arg_max(s.source_sha256, s.ingested_at), arg_max(s.source_name, s.ingested_at),
               max(s.ingested_at), any_value(h.patient_id), any_value(h.collection_date)
        FROM samples s LEFT JOIN sheet_latest h USING (sample_id)
        GROUP BY s.sample_id, s.assay""").fetchall()
    return {(r[0], r[1]): StoredSample(*r) for r in rows}


def reference_samples(store: Store, con) -> set[str]:
    """Sample_ids the sample sheet names as references (``recipient_pre``, ``donor``): their
    genotype does not change, and labs run them again on every plate."""
    if not store.files("sample_sheet"):
        return set()
    rows = con.execute(
        "SELECT sample_id FROM sheet_latest WHERE role IN ('recipient_pre', 'donor')").fetchall()
    return {r[0] for r in rows}


def identity_decisions(store: Store, con) -> dict[str, list[IdentityDecision]]:
    """source_sha256 -> the decisions on that file (the latest per sample renamed)."""
    if not store.files("identity_decisions"):
        return {}
    rows = con.execute("""
        SELECT source_sha256, from_sample_id, arg_max(to_sample_id, decided_at),
               arg_max(supersede, decided_at), arg_max(reason, decided_at)
        FROM identity_decisions GROUP BY source_sha256, from_sample_id""").fetchall()
    out: dict[str, list[IdentityDecision]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(IdentityDecision(*r))
    return out
