"""Marker-label matching: which FCS channel carries which marker.

Labels are compared after :func:`normalize_marker`, which makes matching
case-insensitive, punctuation-blind and Greek-aware, so ``IFN-γ``, ``IFNg``,
``IFN-gamma`` and ``IFNG`` are one marker. A channel label may carry a
fluorochrome beside the marker (``CD3 BUV395``, ``FITC CD4``, ``CD8-APC``): runs of
its tokens are also tried on their own (:func:`label_candidates`).
"""

from __future__ import annotations

import re

from assays.errors import InputError
from assays.names import name_key
from assays.records import Channel

def normalize_marker(label: str) -> str:
    """Canonical form of a marker label: :func:`assays.names.name_key` with Greek folding.

    >>> normalize_marker("IFN-γ") == normalize_marker("IFN gamma") == "ifng"
    True
    """
    return name_key(label, greek=True)


# Separators between a marker and a fluorochrome in channel labels ("CD3 FITC", "CD3-FITC",
# "CD3/FITC", "CD3_FITC", "CD3.FITC", "anti-CD3"). Hyphens also occur inside marker names
# (IL-17A, IFN-γ, HLA-DR), hence the runs of consecutive tokens below.
_SEPARATORS = re.compile(r"[\s/_:|()\[\]{},;.+-]+")
_MAX_TOKENS = 4  # longest marker spelling, in tokens ("IFN-γ", "IL-7Rα", "LIVE/DEAD Fixable Aqua")


def label_candidates(label: str) -> set[str]:
    """Normalised forms under which a channel label can match a marker: the whole label
    and every run of up to four consecutive tokens, tokens being split at whitespace and
    ``/ _ : | ( ) [ ] { } , ; . + -``.

    >>> sorted(label_candidates("IL-17A PE-Cy7"))[:4]
    ['17a', '17ape', '17apecy7', 'cy7']
    >>> {"cd3", "il17a", "ifng"} <= label_candidates("CD3-FITC") | label_candidates("IL-17A PE") | label_candidates("anti-IFN-γ")
    True
    """
    forms = {normalize_marker(label)}
    tokens = [t for t in _SEPARATORS.split(label) if t]
    for i in range(len(tokens)):
        for j in range(i + 1, min(len(tokens), i + _MAX_TOKENS) + 1):
            forms.add(normalize_marker("".join(tokens[i:j])))
    forms.discard("")
    return forms


def match_marker_channels(channels: list[Channel], marker: str,
                          aliases: list[str] | tuple[str, ...] = ()) -> list[Channel]:
    """Every channel that names ``marker`` (or an alias) equally well, in file order.

    A $PnS match beats a $PnN match and an area (``-A``) detector beats height/width,
    since gating uses area signals; channels tied at the best score are all returned
    (a tube stained for CD8a and CD8b, or CD8 on two fluorochromes).
    """
    wanted = {normalize_marker(a) for a in (marker, *aliases)}
    scored: list[tuple[float, Channel]] = []
    for ch in channels:
        score = None
        if ch.pns and label_candidates(ch.pns) & wanted:
            score = 2
        elif label_candidates(ch.pnn) & wanted:
            score = 1
        if score is None:
            continue
        if ch.pnn.upper().endswith("-A"):
            score += 0.5
        scored.append((score, ch))
    top = max((s for s, _ in scored), default=None)
    return [ch for s, ch in scored if s == top]


def match_marker(channels: list[Channel], marker: str, aliases: list[str] | tuple[str, ...] = ()) -> Channel | None:
    """The channel whose $PnS (else $PnN) names ``marker`` or one of its aliases: the first
    of :func:`match_marker_channels` (the gating may choose among them by separation)."""
    found = match_marker_channels(channels, marker, aliases)
    return found[0] if found else None


def marker_alternatives(channels: list[Channel], aliases: dict[str, list[str]]) -> dict[str, list[Channel]]:
    """Markers of ``aliases`` that several channels name equally well -> those channels."""
    out = {}
    for marker, names in aliases.items():
        found = match_marker_channels(channels, marker, names)
        if len(found) > 1:
            out[marker] = found
    return out


def match_markers(
    channels: list[Channel], aliases: dict[str, list[str]], required: tuple[str, ...] = ()
) -> dict[str, Channel]:
    """Map each marker of ``aliases`` to its channel; markers not found are left out.

    Raises ``InputError`` when a marker in ``required`` has no channel, naming it and
    listing the channels present.
    """
    found = {}
    for marker, names in aliases.items():
        ch = match_marker(channels, marker, names)
        if ch is not None:
            found[marker] = ch
    missing = [m for m in required if m not in found]
    if missing:
        listed = ", ".join(f"{c.pnn}" + (f" ({c.pns})" if c.pns else "") for c in channels)
        raise InputError(
            f"a channel for the required marker{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            "(matched on $PnS, else $PnN)",
            f"none among the channels {listed}",
            "check the marker labels ($PnS) in the acquisition template, or add the lab's "
            "spelling as an alias in the panel config",
            problem="This FCS file has no channel for a marker the panel needs.",
        )
    return found
