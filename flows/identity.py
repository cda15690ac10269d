"""Sample identity in a batch: the lab's renames applied, conflicts held back.

A file is stored under the sample_ids it carries (FCS ``SAMPLE ID``/``$SMNO``/file name,
an export's sample names). Before a chunk is committed, every stored outcome is checked
against the store and against the other files of the batch: a sample_id that is already
stored (or claimed in this batch) from other bytes is an identity conflict, never a silent
replacement. The file is quarantined with a note naming both files and saying how the lab
settles it (``graftwatch resolve``, :mod:`flows.resolve`). Placeholder IDs (empty,
``Default ...``, all ``x``) are treated the same way: a second file with one is a conflict.
Identity is per assay (:class:`IdentityBook`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from flows.process import FileOutcome
from storage.identity import IdentityDecision, StoredSample

# Sample names instruments write when nobody typed one; a second file carrying one is
# another sample, not a re-acquisition.
_PLACEHOLDER = re.compile(r"^\s*$|^x+$|^default\b.*|^sample\s*\d*$|^untitled\b.*|^specimen_?\d*$", re.IGNORECASE)


def is_placeholder_id(sample_id: str) -> bool:
    """True for IDs that name no sample (``""``, ``xxxx``, ``Default Sample``, ``Sample1``, ``untitled``)."""
    return bool(_PLACEHOLDER.match(sample_id or ""))


@dataclass
class Claimed:
    """Who holds a sample_id in this run: a stored file, or a file earlier in the batch."""

    sha256: str
    name: str
    received: dt.datetime | None
    patient_id: str | None = None
    collection_date: dt.date | None = None
    outcome: FileOutcome | None = None  # set while the holder is still uncommitted in this batch


ASSAY_OF_KIND = {"fcs": "flow", "str": "str", "qpcr": "qpcr", "ddpcr": "ddpcr"}


class IdentityBook:
    """(sample_id, assay) -> the file that holds it, for one run; decides conflicts chunk by chunk.

    Keyed by assay: one blood sample is measured by flow and by STR/qPCR/ddPCR, each in its
    own file. Reference samples of the sheet (``recipient_pre``, ``donor``) measured again on
    another plate of an export assay are not conflicts: labs run them on every plate and
    each plate's chimerism uses its own wells. A second FCS tube of any sample is one.
    """

    def __init__(self, stored: dict[tuple[str, str], StoredSample], decisions: dict[str, list[IdentityDecision]],
                 references: set[str] | None = None):
        self.held: dict[tuple[str, str], Claimed] = {
            key: Claimed(s.source_sha256, s.source_name, s.received, s.patient_id, s.collection_date)
            for key, s in stored.items()}
        self.decisions = decisions
        self.references = references or set()

    def _keys(self, out: FileOutcome) -> list[tuple[str, str]]:
        assay = ASSAY_OF_KIND.get(out.kind or "", out.kind or "")
        return [(sid, assay) for sid in out.identity_ids
                if assay == "flow" or sid not in self.references]

    def apply_renames(self, out: FileOutcome) -> None:
        """Rename the sample_ids of ``out`` as the lab decided for these bytes (all tables)."""
        mapping = {d.from_sample_id: d.to_sample_id for d in self.decisions.get(out.sha256, [])
                   if d.to_sample_id and d.to_sample_id != d.from_sample_id}
        if not mapping or out.status != "stored":
            return
        import pyarrow as pa

        for table, t in list(out.tables.items()):
            if "sample_id" in t.column_names:
                ids = [mapping.get(v, v) for v in t.column("sample_id").to_pylist()]
                out.tables[table] = t.set_column(t.schema.get_field_index("sample_id"), "sample_id",
                                                 pa.array(ids, pa.string()))
        for table, rows in out.rows.items():
            for r in rows:
                if r.get("sample_id") in mapping:
                    r["sample_id"] = mapping[r["sample_id"]]
        out.sample_ids = [mapping.get(s, s) for s in out.sample_ids]
        out.identity_ids = [mapping.get(s, s) for s in out.identity_ids]

    def _supersedes(self, out: FileOutcome, sid: str) -> bool:
        return any(d.supersede and d.to_sample_id == sid for d in self.decisions.get(out.sha256, []))

    def check(self, outcomes: list[FileOutcome], now: dt.datetime) -> None:
        """Quarantine every outcome that would store a sample_id held by other bytes.

        Two new files of one batch with the same sample_id are both held back: nothing
        says which one is right. A file the lab marked as superseding takes the sample.
        """
        for out in outcomes:
            self.apply_renames(out)
        for out in outcomes:
            if out.status != "stored":
                continue
            clashes = []
            for key in self._keys(out):
                holder = self.held.get(key)
                if holder is None or holder.sha256 == out.sha256 or self._supersedes(out, key[0]):
                    continue
                clashes.append((key[0], holder))
            if clashes:
                for sid, holder in clashes:
                    if holder.outcome is not None and holder.outcome.status == "stored":
                        _hold_back(holder.outcome, [(sid, Claimed(out.sha256, out.file.name, now, outcome=out))])
                _hold_back(out, clashes)
                continue
            for key in self._keys(out):
                self.held[key] = Claimed(out.sha256, out.file.name, now, outcome=out)

    def committed(self) -> None:
        """The chunk is committed: its files now hold their sample_ids like stored ones."""
        for key, holder in list(self.held.items()):
            if holder.outcome is not None:
                if holder.outcome.status == "stored":
                    holder.outcome = None
                else:
                    del self.held[key]


def _hold_back(out: FileOutcome, clashes: list[tuple[str, Claimed]]) -> None:
    out.status, out.rows, out.tables = "quarantined", {}, {}
    out.error = conflict_note(out, clashes)
    out.identity_conflict = True


def _when(t: dt.datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if t else "date unknown"


def conflict_note(out: FileOutcome, clashes: list[tuple[str, Claimed]]) -> str:
    """The quarantine note of an identity conflict, first in the lab's words, then the detail."""
    ids = ", ".join(sorted({sid for sid, _ in clashes}))
    placeholder = any(is_placeholder_id(sid) for sid, _ in clashes)
    lines = [
        f"This file says it holds sample {ids}, but that sample ID already belongs to another file"
        f"{' (and it is an instrument placeholder, not a real sample ID)' if placeholder else ''}. "
        "Nothing from this file was stored; the stored sample is unchanged.",
        "",
        f"This file: {out.file.name} (received now, sha256 {out.sha256[:12]})",
    ]
    for sid, h in clashes:
        where = "stored" if h.outcome is None else "in the same drop, also held back"
        who = ""
        if h.patient_id or h.collection_date:
            who = f"; patient {h.patient_id or '?'}, collected {h.collection_date or '?'}"
        lines.append(f"Sample {sid} {where}: {h.name} (received {_when(h.received)}, sha256 {h.sha256[:12]}{who})")
    lines += [
        "",
        "What to do (README, 'Identity conflicts'):",
        "- If this file is a different sample, say which: graftwatch resolve <this quarantined file> "
        "--inbox INBOX --store STORE --sample-id THE_RIGHT_ID --reason \"...\" "
        "(for an export holding several samples: --rename OLD=NEW, repeatable).",
        "- If this file replaces the stored one (re-acquisition, corrected export): graftwatch resolve "
        "<this quarantined file> --inbox INBOX --store STORE --supersede --reason \"...\"; the earlier "
        "analysis stays in the store's history.",
        "The file then goes back to the inbox and the next run stores it as decided.",
    ]
    return "\n".join(lines)
