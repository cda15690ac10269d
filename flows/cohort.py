"""``graftwatch cohort --store DIR --out FILE.html [--config FILE]``: the cohort page and table.

Orchestration only: reads ``[cohort]`` of the config, (re)creates the cohort views with those
windows (:mod:`storage.cohort`), asks :mod:`reports.cohort` for the page, writes it atomically,
and prints the statistics table (``make run`` ends with it).
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

EXIT_OK, EXIT_USAGE = 0, 2


def _print_table(con) -> None:
    from rich.console import Console
    from rich.table import Table

    from reports.cohort import PARAMETER_SHORT

    rows = con.execute("""
        SELECT parameter, "window", cycle, n_patients, median, q1, q3, paired_diff_median, wilcoxon_p, p_bh,
               n_excluded_review
        FROM cohort_immune""").fetchall()
    t = Table(title="Cohort: immune parameters by window vs the pre-MST baseline (view cohort_immune)")
    for col in ("", "window", "cycle", "n", "median", "Q1-Q3", "diff", "p", "p BH", "excl."):
        t.add_column(col, justify="left" if col in ("parameter", "window") else "right")

    def num(v, spec="{:.3g}") -> str:
        return "–" if v is None else spec.format(v)

    for p, w, c, n, med, q1, q3, diff, pv, pbh, excl in rows:
        t.add_row(PARAMETER_SHORT.get(p, p), w, str(c), str(n), num(med),
                  f"{num(q1)}–{num(q3)}" if q1 is not None else "–", num(diff),
                  num(pv, "{:.3f}"), num(pbh, "{:.3f}"), str(excl))
    # Wide enough for every column when the output is a pipe or a narrow terminal.
    Console(width=max(Console().width, 110)).print(t)
    print("diff: median paired difference from the baseline; p: Wilcoxon signed-rank; p BH: Benjamini-Hochberg; "
          "excl.: samples flagged for review, left out")


def write_cohort(store_root: str, out: Path, config_path: str | None = None) -> int:
    """Write the cohort page to ``out`` and print the statistics table; the CLI exit code.

    0: written. 2: the store is missing, or ``[cohort]`` of the config is invalid (one line).
    """
    from assays.errors import ConfigError
    from flows.config import load_config
    from reports.cohort import build_cohort_page
    from storage.cohort import cohort_params, create_cohort_views
    from storage.store import Store
    from storage.views import connect

    try:
        settings = load_config(config_path).cohort
        params = cohort_params(settings.windows, settings.min_pairs, settings.specimens)
    except ConfigError as exc:
        print(f"graftwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    con = connect(Store(store_root).existing())
    create_cohort_views(con, params)
    text = build_cohort_page(con, params)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{out.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    _print_table(con)
    print(f"wrote {out} ({len(text.encode('utf-8')) / 1024:.0f} kB)")
    return EXIT_OK
