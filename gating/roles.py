"""Which population plays which role in the immune timeline (``flow_populations.role``),
and which one is the lymphocyte base of ``pct_of_lymphocytes``.

The one place that reads population names: gating writes the decision as data, and the
views (``storage/views.py``) only read the ``role`` column. Renaming a gate therefore
changes what gating writes, never what a view re-derives.

Roles (:data:`ROLES`) and how a population gets one, from its name and its parent's name:

* names are compared on a key: lower case, Gating-ML id suffixes read as signs
  (``CD3_pos`` = ``CD3+``, ``CD4_pos_CD8_neg`` = ``CD4+CD8-``), only letters, digits, ``+``
  and ``-`` kept, a trailing "T cells" / "cells" dropped ("CD3+ T cells", "Th1 cells");
  a bare marker is its positive gate ("CD4" = "CD4+"), "T cells" is CD3+, "Tregs" is Treg;
* ``cd3``: key ``cd3+``; ``th1`` ... ``treg``: keys ``th1``, ``th2``, ``th0``, ``th17``, ``treg``;
* ``cd4`` / ``cd8``: the quadrant population ``CD4+CD8-`` / ``CD4-CD8+`` (either marker
  order); without one, a single ``CD4+`` / ``CD8+`` gate directly inside CD3+ (FlowJo
  templates often gate each marker on its own);
* ``lymphocytes``: the population the ``pct_of_lymphocytes`` of the CD3 population is
  relative to (the deepest of Lymphocytes, Singlets, Live on its path:
  :func:`lymphocyte_base`, which also gives every population's ``pct_of_lymphocytes``
  base in ``gating.statistics``);
* when several populations qualify, the shallowest one takes the role (first in hierarchy
  order on a tie); every other population has no role (NULL).
"""

from __future__ import annotations

import re
from typing import Sequence

from assays.names import name_key

ROLES = ("lymphocytes", "cd3", "cd4", "cd8", "th1", "th2", "th0", "th17", "treg")

# Population names that define the lymphocyte base, from outermost to innermost, as labs
# and FlowJo's defaults spell them (matched on the lower-case letters and digits of the
# name): "Lymphocytes", "Lymphs"; "Singlets", "Single Cells", "FSC Singlets"; "Live",
# "Viable cells", or a viability dye's negative gate ("aAmine-", "Live/Dead neg", "Zombie NIR-").
_LYMPH = re.compile(r"lymph(s|ocytes?)?(gate)?\d*")
_SINGLETS = re.compile(r"(fsc|ssc|fs|ss)?(singlets?|singlecells?|singles?)(fsc|ssc|fs|ss)?\d*")
_LIVE = re.compile(r"(live|viable|alive)(cells?)?\d*")
_VIABILITY_DYES = re.compile(r"(livedead|ld|aamine|amine|zombie[a-z]*|fvs\d*|7aad|dapi|pi|vivid|aqua|viability|dead"
                             r"|sytox[a-z]*|efluor\d*|ef\d+|nearir)")
_NEGATIVE = re.compile(r"\s*(-|\bneg\b|\bnegative\b)\s*$", re.IGNORECASE)
_NOT_KEY = re.compile(r"[^a-z0-9+-]")
_CELLS_SUFFIX = re.compile(r"^(.+?)(tcells?|cells?)$")
_QUADRANT = {"cd4+cd8-": "cd4", "cd8-cd4+": "cd4", "cd4-cd8+": "cd8", "cd8+cd4-": "cd8"}
_SINGLE = {"cd4+": "cd4", "cd8+": "cd8"}
_HELPERS = {"th1", "th2", "th0", "th17", "treg"}


def signed_population_key(name: str | None) -> str | None:
    """The comparison key of a population name that keeps its ``+``/``-`` signs.

    Not :func:`assays.names.name_key`, on purpose: that key drops punctuation, so
    ``CD4+CD8-`` and ``CD4-CD8+`` (two different quadrants) would be one name. This key
    keeps the signs, reads Gating-ML id suffixes as signs and folds the spellings listed
    in the module docstring (a trailing "T cells", a bare marker, "Tregs").

    Parameters
    ----------
    name : str or None
        A gate name or Gating-ML id as written in the template.

    Returns
    -------
    str or None
        The key (None for None).

    Examples
    --------
    >>> [signed_population_key(n) for n in ("CD4_pos_CD8_neg", "CD3+ T cells", "T cells", "CD4", "Tregs")]
    ['cd4+cd8-', 'cd3+', 'cd3+', 'cd4+', 'treg']
    """
    if name is None:
        return None
    k = _NOT_KEY.sub("", name.lower().replace("_pos", "+").replace("_neg", "-"))
    k = _CELLS_SUFFIX.sub(r"\1", k)
    if k in ("t", "cd3", "cd3+"):
        return "cd3+"
    if k in ("cd4", "cd8"):
        return k + "+"
    return "treg" if k == "tregs" else k


def base_level(name: str) -> int | None:
    """0 for a lymphocyte gate, 1 for a singlet gate, 2 for a live-cell gate; None otherwise."""
    n = name_key(name)
    if _LYMPH.fullmatch(n):
        return 0
    if _SINGLETS.fullmatch(n):
        return 1
    negative = _NEGATIVE.search(name)
    if _LIVE.fullmatch(n) or (negative and _VIABILITY_DYES.fullmatch(name_key(name[:negative.start()]))):
        return 2
    return None


def lymphocyte_base(path_names: tuple[str, ...]) -> int | None:
    """Index in ``path_names`` of the deepest lymphocyte-base population, or None.

    >>> lymphocyte_base(("Lymphocytes", "Single Cells", "Single Cells", "CD3+"))
    2
    >>> lymphocyte_base(("Time", "Singlets", "aAmine-", "CD3+")) is None  # no lymphocyte gate
    True
    """
    base = None
    level = -1
    for i, name in enumerate(path_names):
        lvl = base_level(name)
        # Live only counts once we are inside lymphocytes (a Live gate on all events is not a
        # base); a repeated level (FSC then SSC "Single Cells") moves the base to the deeper one.
        if lvl is not None and lvl >= level and (lvl == 0 or level >= 0):
            base, level = i, lvl
    return base


def _candidate(name: str, parent: str | None) -> tuple[str, int] | None:
    """(role, preference) a population qualifies for, lower preference first; None if none."""
    key = signed_population_key(name)
    if key == "cd3+":
        return "cd3", 0
    if key in _QUADRANT:
        return _QUADRANT[key], 0
    if key in _SINGLE and signed_population_key(parent) == "cd3+":
        return _SINGLE[key], 1
    if key in _HELPERS:
        return key, 0
    return None


def assign_roles(names: Sequence[str], parents: Sequence[str | None], paths: Sequence[tuple[str, ...]],
                 lymphocyte_base_of=None) -> list[str | None]:
    """The role of each population (parallel to ``names``), or None.

    ``names``/``parents``: population and parent display names; ``paths``: each population's
    path of display names from the root (hierarchy order: parents before children).
    ``lymphocyte_base_of(path)``: index in ``path`` of its lymphocyte base, or None
    (default :func:`lymphocyte_base`).
    """
    lymphocyte_base_of = lymphocyte_base_of or lymphocyte_base
    best: dict[str, tuple[int, int, int]] = {}  # role -> (preference, depth, row)
    for i, (name, parent, path) in enumerate(zip(names, parents, paths)):
        cand = _candidate(name, parent)
        if cand is None:
            continue
        role, pref = cand
        rank = (pref, len(path), i)
        if role not in best or rank < best[role]:
            best[role] = rank
    roles: list[str | None] = [None] * len(names)
    for role, (_pref, _depth, i) in best.items():
        roles[i] = role
    if "cd3" in best:
        cd3_path = paths[best["cd3"][2]]
        base = lymphocyte_base_of(cd3_path)
        if base is not None:
            base_path = cd3_path[: base + 1]
            roles[next(i for i, p in enumerate(paths) if p == base_path)] = "lymphocytes"
    return roles
