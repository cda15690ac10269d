"""One-time backfill of population roles for flow analyses stored before gating wrote them.

``flow_populations.role``/``unresolved`` are written by gating (``gating/roles.py``,
``gating/statistics.py``). Rows stored before those columns existed read them as NULL
(``unresolved`` is never NULL in rows written since), so the views would lose their CD3,
CD4 ... values. :func:`backfill_population_roles` decides those rows' roles with the same
function gating uses and writes them, once, to ``flow_population_roles``;
``storage/views.py`` joins that table in ``flow_populations_latest`` only (a COALESCE).

Old analyses marked a CD4/CD8 split the data could not resolve only by a failed QC row
named ``quadrant_<x>_<y>@<parent id>:unresolved``; reading that name is legacy handling
and lives here alone: every population below that parent (its Gating-ML id mapped to the
population name by ``flow_gates.population_ids``) is marked unresolved, as gating marks
them now; when the id cannot be mapped, the CD4, CD8 and T-helper populations are, which
is what the views did with those rows before.

The backfill commits a batch of kind ``roles-backfill`` (with or without rows); once one
is committed the function returns at once, so callers may run it before every batch.
"""

from __future__ import annotations

import json
import logging

from storage.store import Batch, Store

log = logging.getLogger("graftwatch")

KIND = "roles-backfill"
_LEGACY_QUADRANT = "quadrant_"
_LEGACY_UNRESOLVED = ":unresolved"
# Roles the old views left NULL when the CD4/CD8 split was unresolved.
_BELOW_SPLIT = ("cd4", "cd8", "th1", "th2", "th0", "th17", "treg")


def _legacy_unresolved(checks: list[str], names: dict[str, str]) -> tuple[str, str] | None:
    """(parent population name, reason) of a legacy ``quadrant_<x>_<y>@<parent id>:unresolved``
    row, or None; ``names`` maps Gating-ML ids to population names."""
    from gating.qc import quadrant_check

    for check in checks:
        if check.startswith(_LEGACY_QUADRANT) and check.endswith(_LEGACY_UNRESOLVED):
            pair, _, parent_id = check[len(_LEGACY_QUADRANT):-len(_LEGACY_UNRESOLVED)].partition("@")
            x, _, y = pair.partition("_")
            parent = names.get(parent_id, parent_id)
            return parent, quadrant_check(x, y, parent_id, parent, "unresolved", 0.0, False).message
    return None


def backfill_population_roles(store: Store) -> int:
    """Write roles for flow analyses stored without them; returns the rows written."""
    if not store.files("flow_populations"):
        return 0  # nothing stored yet: every row to come carries its role
    commits = store.read_table("commits")
    if KIND in set(commits.column("kind").to_pylist()):
        return 0
    from gating.roles import assign_roles
    from storage.views import connect

    con = connect(store)
    legacy = con.execute(
        "SELECT sample_id, analysis_id, population, parent, path FROM flow_populations "
        "WHERE unresolved IS NULL AND analysis_id NOT IN (SELECT analysis_id FROM flow_population_roles) "
        "ORDER BY analysis_id, length(path), path"
    ).fetchall()
    ids = {a: json.loads(p) for a, p in con.execute(
        "SELECT analysis_id, population_ids FROM flow_gates WHERE population_ids IS NOT NULL").fetchall()}
    failed = {}
    for analysis_id, check in con.execute(
            "SELECT analysis_id, \"check\" FROM flow_qc WHERE NOT passed ORDER BY analysis_id, \"check\"").fetchall():
        failed.setdefault(analysis_id, []).append(check)
    by_analysis: dict[tuple[str, str], list[tuple]] = {}
    for sample_id, analysis_id, population, parent, path in legacy:
        by_analysis.setdefault((sample_id, analysis_id), []).append((population, parent, path))
    rows = []
    for (sample_id, analysis_id), pops in by_analysis.items():
        # Path tuples from the parent's path (shorter, so met first): a name may hold a '/'.
        tuples: dict[str, tuple[str, ...]] = {}
        for population, _parent, path in pops:
            tuples[path] = tuples.get(path[: len(path) - len(population) - 1], ()) + (population,)
        roles = assign_roles([p[0] for p in pops], [p[1] for p in pops], [tuples[p[2]] for p in pops])
        found = _legacy_unresolved(failed.get(analysis_id, []), ids.get(analysis_id, {}))
        parent, reason = found if found else (None, None)
        mapped = any(parent in t[:-1] for t in tuples.values())
        for (_population, _parent, path), role in zip(pops, roles):
            hit = reason is not None and (parent in tuples[path][:-1] if mapped else role in _BELOW_SPLIT)
            rows.append({"sample_id": sample_id, "analysis_id": analysis_id, "path": path, "role": role,
                         "unresolved": hit, "unresolved_reason": reason if hit else None})
    batch = Batch(store, KIND)
    batch.add("flow_population_roles", rows)
    batch.commit()
    if rows:
        log.info("population roles backfilled for %d flow analyses stored before roles existed", len(by_analysis))
    return len(rows)
