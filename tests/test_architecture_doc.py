"""docs/architecture.md names every package and every module of the code, one line each.

A module added without its line in the table fails here, so the page a newcomer reads
first does not drift from the tree (issue 16, point 8).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assays", "gating", "storage", "flows", "reports", "simulators")


def _listed() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return re.findall(r"^\| `([^`]+)` \|", text, flags=re.MULTILINE)


def _code_paths() -> set[str]:
    paths = set()
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            rel = f.relative_to(ROOT).as_posix()
            paths.add(rel[: -len("__init__.py")] if f.name == "__init__.py" else rel)
    return paths


def test_every_package_and_module_has_its_line():
    listed = _listed()
    code = _code_paths()
    assert len(code) > 50  # the walk found the tree
    missing = sorted(code - set(listed))
    assert not missing, f"add a line for each to the module table of docs/architecture.md: {missing}"
    gone = sorted(set(listed) - code)
    assert not gone, f"docs/architecture.md lists modules that no longer exist: {gone}"
    twice = sorted({p for p in listed if listed.count(p) > 1})
    assert not twice, f"listed more than once: {twice}"
