"""Which population plays which role in the immune timeline (``flow_populations.role``).

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
  :func:`gating.statistics.lymphocyte_base`);
* when several populations qualify, the shallowest one takes the role (first in hierarchy
  order on a tie); every other population has no role (NULL).
"""

from __future__ import annotations

import re
from typing import Sequence

ROLES = ("lymphocytes", "cd3", "cd4", "cd8", "th1", "th2", "th0", "th17", "treg")

_NOT_KEY = re.compile(r"[^a-z0-9+-]")
_CELLS_SUFFIX = re.compile(r"^(.+?)(tcells?|cells?)$")
_QUADRANT = {"cd4+cd8-": "cd4", "cd8-cd4+": "cd4", "cd4-cd8+": "cd8", "cd8+cd4-": "cd8"}
_SINGLE = {"cd4+": "cd4", "cd8+": "cd8"}
_HELPERS = {"th1", "th2", "th0", "th17", "treg"}


def population_key(name: str | None) -> str | None:
    """The comparison key of a population name (see the module docstring).

    >>> [population_key(n) for n in ("CD4_pos_CD8_neg", "CD3+ T cells", "T cells", "CD4", "Tregs")]
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


def _candidate(name: str, parent: str | None) -> tuple[str, int] | None:
    """(role, preference) a population qualifies for, lower preference first; None if none."""
    key = population_key(name)
    if key == "cd3+":
        return "cd3", 0
    if key in _QUADRANT:
        return _QUADRANT[key], 0
    if key in _SINGLE and population_key(parent) == "cd3+":
        return _SINGLE[key], 1
    if key in _HELPERS:
        return key, 0
    return None


def assign_roles(names: Sequence[str], parents: Sequence[str | None], paths: Sequence[tuple[str, ...]],
                 lymphocyte_base_of) -> list[str | None]:
    """The role of each population (parallel to ``names``), or None.

    ``names``/``parents``: population and parent display names; ``paths``: each population's
    path of display names from the root (hierarchy order: parents before children).
    ``lymphocyte_base_of(path)``: index in ``path`` of its lymphocyte base, or None.
    """
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
