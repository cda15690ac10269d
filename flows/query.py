"""``graftwatch query``: SQL over the store's views, printed or written to a file."""

from __future__ import annotations

import sys
from pathlib import Path


def run_query(sql: str, store_root: str, fmt: str = "table", out: str | None = None) -> int:
    import duckdb

    from storage.store import Store
    from storage.views import connect, relation_names

    con = connect(Store(store_root))
    try:
        rel = con.sql(sql)
    except duckdb.Error as exc:
        names = ", ".join(n for n in relation_names(con))
        first = str(exc).splitlines()[0]
        print(f"graftwatch: the query failed: {first}\nAvailable tables and views: {names}", file=sys.stderr)
        return 2
    if rel is None:
        return 0
    if out:
        path = Path(out)
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            rel.write_parquet(str(path))
        elif suffix == ".csv":
            rel.write_csv(str(path))
        elif suffix == ".json":
            path.write_text(rel.df().to_json(orient="records", date_format="iso", indent=1), encoding="utf-8")
        else:
            print("graftwatch: --out must end in .parquet, .csv or .json", file=sys.stderr)
            return 2
        print(f"wrote {len(rel)} rows to {path}")
        return 0
    df = rel.df()
    if fmt == "csv":
        df.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        sys.stdout.write(df.to_json(orient="records", date_format="iso") + "\n")
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(show_header=True, header_style="bold")
        for c in df.columns:
            t.add_column(str(c))
        for row in df.itertuples(index=False):
            t.add_row(*("" if v is None or (isinstance(v, float) and v != v) else
                        (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row))
        Console(width=max(120, Console().width)).print(t)
    return 0
