"""``graftwatch query``: SQL over the store's views, printed or written to a file.

Values are formatted here, from DuckDB's own Python values (no pandas: it would double
the command's start-up): NULL prints as an empty cell (``null`` in JSON), dates as
``YYYY-MM-DD``, timestamps to the second, floats to 4 significant digits in the table
(exact in CSV/JSON). The table fits the terminal: long values wrap or are abbreviated,
but the key columns (patient, sample, day) are never cut.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from pathlib import Path

EXIT_OK, EXIT_USAGE = 0, 2
KEY_COLUMNS = ("patient_id", "sample_id", "day", "days_post_mst", "collection_date")
# Units a lab person needs in the header, by column-name ending.
_UNITS = (("_pct_lymph", "% lymph"), ("_pct_cd4", "% CD4"), ("_pct", "%"), ("days_post_mst", "days"))


def _text(v, table: bool) -> str:
    """One value as a lab person reads it."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S") if (v.hour, v.minute, v.second) != (0, 0, 0) else v.strftime("%Y-%m-%d")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, bool):
        return "yes" if v and table else ("no" if table else str(v).lower())
    if isinstance(v, float):
        return f"{v:.4g}" if table else repr(v)
    return str(v)


def _json_value(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (dt.date, dt.datetime)):
        return _text(v, table=False)
    if isinstance(v, (int, float, bool, str)):
        return v
    return str(v)


def _header(name: str) -> str:
    for suffix, unit in _UNITS:
        if name.endswith(suffix):
            return f"{name}\n({unit})"
    return name


def _print_table(columns: list[str], rows: list[tuple]) -> None:
    """A table that fits the terminal, or one block per row when it cannot.

    Key columns (patient, sample, day) keep their whole value on one line; other values
    wrap or shrink. When the key columns plus a few characters per other column are wider
    than the terminal, each row prints as ``column: value`` lines (psql's expanded display):
    a cut patient ID is worse than a longer listing.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cells = [[_text(v, table=True) for v in row] for row in rows]
    headers = [_header(c) for c in columns]
    key_width = {i: max([len(line) for line in headers[i].splitlines()] + [len(r[i]) for r in cells])
                 for i, c in enumerate(columns) if c in KEY_COLUMNS}
    # rich draws "│ value " per column plus the closing border.
    needed = sum(w + 3 for w in key_width.values()) + 9 * (len(columns) - len(key_width)) + 1
    if needed > console.width:
        _print_expanded(console, columns, cells)
        return
    t = Table(show_header=True, header_style="bold", show_lines=False)
    for i, c in enumerate(columns):
        key = i in key_width
        # Key columns keep their full value on one line; the others may wrap (long
        # messages, reasons) or shrink to their header's width.
        t.add_column(headers[i], no_wrap=key, min_width=key_width.get(i),
                     overflow="fold" if key else "ellipsis" if c.endswith("_id") else "fold")
    for row in cells:
        t.add_row(*row)
    console.print(t)


def _print_expanded(console, columns: list[str], cells: list[list[str]]) -> None:
    width = max(len(c) for c in columns)
    for n, row in enumerate(cells, 1):
        console.print(f"[bold]-- row {n} --[/bold]", highlight=False)
        for c, v in zip(columns, row):
            unit = _header(c).partition("\n")[2]
            console.print(f"{c:<{width}} : {v}{' ' + unit if unit and v else ''}", highlight=False,
                          markup=False, overflow="fold")


def _write_out(rel, columns: list[str], rows: list[tuple], out: str) -> int:
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        rel.write_parquet(str(path))
    elif suffix == ".csv":
        rel.write_csv(str(path))
    elif suffix == ".json":
        path.write_text(json.dumps([{c: _json_value(v) for c, v in zip(columns, r)} for r in rows], indent=1),
                        encoding="utf-8")
    else:
        print("graftwatch: --out must end in .parquet, .csv or .json", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {len(rows)} rows to {path}")
    return EXIT_OK


def _execute(con, sql: str):
    """(relation or None for a statement without rows, its columns, its rows)."""
    rel = con.sql(sql)
    if rel is None:
        return None, [], []
    return rel, list(rel.columns), rel.fetchall()


def run_query(sql: str, store_root: str, fmt: str = "table", out: str | None = None) -> int:
    import duckdb

    from storage.store import Store
    from storage.views import connect, relation_names

    # Creates only the relations the SQL names (and what they read): creating all of them
    # costs more than most queries (storage/views.py).
    con = connect(Store(store_root).existing())
    try:
        rel, columns, rows = _execute(con, sql)
    except duckdb.Error as exc:
        names = ", ".join(n for n in relation_names(con))
        # DuckDB's message can span lines ("Candidate bindings: ..."): keep all of it.
        print(f"graftwatch: the query failed: {str(exc).strip()}\nAvailable tables and views: {names}",
              file=sys.stderr)
        return EXIT_USAGE
    if rel is None:
        return EXIT_OK
    if out:
        return _write_out(rel, columns, rows, out)
    try:
        if fmt == "csv":
            import csv

            w = csv.writer(sys.stdout, lineterminator="\n")
            w.writerow(columns)
            w.writerows([_text(v, table=False) for v in r] for r in rows)
        elif fmt == "json":
            sys.stdout.write(json.dumps([{c: _json_value(v) for c, v in zip(columns, r)} for r in rows]) + "\n")
        else:
            _print_table(columns, rows)
        sys.stdout.flush()
    except BrokenPipeError:
        # `graftwatch query ... | head`: the reader has what it wanted. Point stdout at
        # devnull so the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK
