"""Compare the results held by two stores: ``python -m storage.compare STORE_A STORE_B [--ignore COL,...]``.

For a refactoring that must not change a number (issue 16: "the demo store built before and
after holds the same rows"): each view and result table is read from both stores (latest
analyses, through :func:`storage.views.connect`), reduced to the columns both sides have,
minus the ones that differ by construction on every run (ids, batch ids, timestamps), and
compared as multisets of rows. Exit 0 when every relation holds the same rows, else 1 with
the first differing rows of each relation.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass

from storage.store import Store
from storage.views import connect

RELATIONS = ("immune_timeline", "chimerism_timeline", "flow_populations_latest", "flow_markers", "flow_qc",
             "chimerism", "chimerism_markers", "samples", "sample_sheet", "patients")
# Differ on every run by construction (new ids and clock times), not by result.
VOLATILE = {"analysis_id", "batch_id", "ingested_at", "created_at", "seen_at", "committed_at", "month"}


@dataclass
class Difference:
    relation: str
    columns: list[str]
    only_a: list[tuple]
    only_b: list[tuple]


def _rows(con, relation: str, columns: list[str]) -> Counter:
    cols = ", ".join(f'"{c}"' for c in columns)
    where = ""
    if relation in ("flow_markers", "flow_qc", "chimerism", "chimerism_markers"):
        where = " WHERE analysis_id IN (SELECT analysis_id FROM latest_analyses)"
    # NaN != NaN: a NaN stands for itself, so two stores with the same NaN compare equal.
    return Counter(tuple("NaN" if isinstance(v, float) and v != v else v for v in row)
                   for row in con.execute(f"SELECT {cols} FROM {relation}{where}").fetchall())


def compare_stores(a: str, b: str, relations: tuple[str, ...] = RELATIONS,
                   ignore: tuple[str, ...] = ()) -> tuple[dict[str, int], list[Difference]]:
    """Rows per relation (of store ``a``) and the relations whose rows differ.

    ``ignore``: more columns to leave out (e.g. ones added on one side on purpose).
    """
    con_a, con_b = connect(Store(a)), connect(Store(b))
    counts, diffs = {}, []
    for rel in relations:
        cols_a = [r[0] for r in con_a.execute(f"DESCRIBE {rel}").fetchall()]
        cols_b = {r[0] for r in con_b.execute(f"DESCRIBE {rel}").fetchall()}
        cols = [c for c in cols_a if c in cols_b and c not in VOLATILE and c not in ignore]
        ra, rb = _rows(con_a, rel, cols), _rows(con_b, rel, cols)
        counts[rel] = sum(ra.values())
        if ra != rb:
            diffs.append(Difference(rel, cols, sorted((ra - rb).elements(), key=repr),
                                    sorted((rb - ra).elements(), key=repr)))
    return counts, diffs


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ignore: tuple[str, ...] = ()
    if "--ignore" in args:
        i = args.index("--ignore")
        ignore = tuple(c.strip() for c in args[i + 1:i + 2][0].split(",")) if i + 1 < len(args) else ()
        del args[i:i + 2]
    if len(args) != 2:
        print("usage: python -m storage.compare STORE_A STORE_B [--ignore COLUMN,...]", file=sys.stderr)
        return 2
    counts, diffs = compare_stores(*args, ignore=ignore)
    for rel, n in counts.items():
        print(f"{rel}: {n} rows{'' if any(d.relation == rel for d in diffs) else ', same in both'}")
    for d in diffs:
        print(f"\n{d.relation} differs (columns {', '.join(d.columns)}):")
        for side, rows in (("only in A", d.only_a), ("only in B", d.only_b)):
            for r in rows[:5]:
                print(f"  {side}: {r}")
            if len(rows) > 5:
                print(f"  ... {len(rows) - 5} more {side}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
