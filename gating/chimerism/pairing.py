"""Pairing of samples and targets to their roles in a chimerism analysis.

Each ``post`` sample of the sample sheet is paired with its patient's ``recipient_pre``
sample and the samples of the patient's donors (DESIGN.md, Chimerism: roles come from the
sample sheet, donors from the patient registry per MST cycle), measured by the same
assay. A qPCR/ddPCR target is the reference when its name is in the reference-gene list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from assays.names import name_key
from assays.records import PatientCycle, SampleSheetRow
from gating.chimerism.records import (
    NO_DONOR_LISTED,
    NO_DONOR_SAMPLE,
    NO_PRE_SAMPLE,
    REFERENCE_FAILED,
    ChimerismResult,
    empty_result,
)


def is_reference_target(target: str, reference_genes: Iterable[str]) -> bool:
    """True when ``target`` names a reference gene (case/punctuation-blind).

    ``RNase P``, ``rnasep`` and ``RPP30_HEX`` match; ``ACTBL2`` does not match ``ACTB``:
    the gene must be a whole leading run of the target's words.
    """
    words = [k for k in map(name_key, re.split(r"[\W_]+", target)) if k]
    prefixes = {"".join(words[: k + 1]) for k in range(len(words))}
    return any(name_key(g) in prefixes for g in reference_genes)

def reference_target(targets: Iterable[str], genes: Sequence[str]) -> str | None:
    """The reference-gene target among ``targets`` (first in ``genes`` order), None without one."""
    found = [t for t in targets if is_reference_target(t, genes)]
    if not found:
        return None
    order = {name_key(g): i for i, g in enumerate(genes)}
    # the configured order decides when a plate carries two reference genes
    return min(found, key=lambda t: min((i for g, i in order.items() if name_key(t).startswith(g)), default=99))


def split_targets(targets: Iterable[str], genes: Sequence[str]) -> tuple[str | None, list[str]]:
    """The reference-gene target of a sample (:func:`reference_target`) and its marker targets.

    Every target whose name is not in the reference-gene list is a chimerism marker
    (DESIGN.md, qPCR/ddPCR exports); markers are sorted by name.
    """
    targets = list(targets)
    return reference_target(targets, genes), sorted(t for t in targets if not is_reference_target(t, genes))


def no_reference_results(pairing, method: str, config) -> list:
    """One ``reference_failed`` result per donor when a post sample has no reference-gene target."""
    return [empty_result(pairing.post.sample_id, method, d, REFERENCE_FAILED,
                   f"No reference-gene target ({', '.join(config.reference_genes)}) on this sample's "
                   "wells: run a reference assay with the marker or add its name to the reference list.")
            for d in ([d for d, _ in pairing.donors] or [None])]



def latest_rows(sheet: Sequence[SampleSheetRow]) -> list[SampleSheetRow]:
    """One row per sample_id: the sheet's latest row for it (DESIGN.md, Sample sheet)."""
    rows: dict[str, SampleSheetRow] = {}
    for row in sheet:  # a later row for the same sample_id replaces the earlier one
        rows.pop(row.sample_id, None)
        rows[row.sample_id] = row
    return list(rows.values())


def role_of(row: SampleSheetRow) -> str:
    """The row's role, case-folded (``recipient_pre``, ``donor``, ``post`` or '')."""
    return (row.role or "").strip().casefold()


def patient_donors(
    post: SampleSheetRow, sheet: Sequence[SampleSheetRow], registry: Sequence[PatientCycle]
) -> list[str]:
    """Donors that may contribute to ``post``: registry donors of cycles up to its collection
    date, plus donor sample rows of the same patient whose donor the registry does not list."""
    cycles = [c for c in registry if c.patient_id == post.patient_id and c.donor_id]
    ids = [c.donor_id for c in sorted(cycles, key=lambda c: c.mst_date) if c.mst_date <= post.collection_date]
    registered = {c.donor_id for c in cycles}
    ids += [
        r.donor_id
        for r in sheet
        if role_of(r) == "donor" and r.patient_id == post.patient_id and r.donor_id
        and r.donor_id not in registered
    ]
    return list(dict.fromkeys(i for i in ids if i))


def _pick(rows: Iterable[SampleSheetRow], have: set[str], patient_id: str) -> str | None:
    candidates = [r for r in rows if r.sample_id in have]
    if not candidates:
        return None
    # the patient's own row first, then the most recent collection
    candidates.sort(key=lambda r: (r.patient_id == patient_id, r.collection_date), reverse=True)
    return candidates[0].sample_id


@dataclass
class Pairing:
    """A post sample with its recipient's pre-transplant sample and its donors' samples
    (sample ids measured by one assay; None where that assay has none)."""

    post: SampleSheetRow
    pre_id: str | None
    donors: list[tuple[str, str | None]]  # (donor_id, donor sample_id or None)


def pair_sample(post, sheet, registry, have: set[str]) -> Pairing:
    """Pair ``post`` with the patient's recipient_pre and donor samples among ``have``."""
    pre = [r for r in sheet if role_of(r) == "recipient_pre" and r.patient_id == post.patient_id]
    donors = []
    for donor_id in patient_donors(post, sheet, registry):
        rows = [r for r in sheet if role_of(r) == "donor" and r.donor_id == donor_id]
        donors.append((donor_id, _pick(rows, have, post.patient_id)))
    return Pairing(post, _pick(pre, have, post.patient_id), donors)


def computable_donors(pairing: Pairing, method: str) -> tuple[list[ChimerismResult], list[tuple[str, str]]]:
    """Results for what is missing, and the (donor_id, sample_id) pairs that can be computed."""
    sid = pairing.post.sample_id
    label = method.upper() if method != "ddpcr" else "ddPCR"
    if not pairing.donors:
        return [
            empty_result(sid, method, None, NO_DONOR_LISTED,
                   f"No donor is known for this sample's patient: add the donor_id to the patient "
                   f"registry (per MST cycle) or a donor row to the sample sheet.")
        ], []
    if pairing.pre_id is None:
        return [
            empty_result(sid, method, d, NO_PRE_SAMPLE,
                   f"No pre-transplant recipient sample (role recipient_pre) of this patient was "
                   f"measured by {label}: run the recipient's pre-transplant DNA and list it in the sample sheet.")
            for d, _ in pairing.donors
        ], []
    out, ok = [], []
    for donor_id, donor_sample in pairing.donors:
        if donor_sample is None:
            out.append(
                empty_result(sid, method, donor_id, NO_DONOR_SAMPLE,
                       f"No sample of donor {donor_id} (role donor) was measured by {label}: run the "
                       f"donor's DNA and list it in the sample sheet with donor_id {donor_id}.")
            )
        else:
            ok.append((donor_id, donor_sample))
    return out, ok
