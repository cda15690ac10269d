"""The demo inbox of `make run` (examples/build_demo.py, fixed seeds) end to end."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, query, run_pipeline

sys.path.insert(0, str(REPO / "examples"))
from build_demo import build  # noqa: E402


def _counts(store: Path) -> dict[str, int]:
    tables = ("samples", "flow_populations", "flow_markers", "flow_gates", "chimerism", "chimerism_markers",
              "sample_sheet", "patients", "analyses")
    return {t: query(store, f"SELECT count(*) FROM {t}")[0][0] for t in tables}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The committed demo inbox processed once, laid out as `make run` leaves it: ./data/."""
    root = tmp_path_factory.mktemp("demo")
    inbox, store = root / "data" / "inbox", root / "data" / "store"
    shutil.copytree(REPO / "examples" / "demo_inbox", inbox)
    summary = run_pipeline(inbox, store)
    return root, summary


def test_demo_builds_identically_and_runs_twice_without_new_rows(tmp_path, demo):
    build(tmp_path / "demo")
    committed = REPO / "examples" / "demo_inbox"
    for f in committed.rglob("*"):
        if f.is_file():
            assert (tmp_path / "demo" / f.relative_to(committed)).read_bytes() == f.read_bytes(), f.name
    root, s1 = demo
    inbox, store = root / "data" / "inbox", root / "data" / "store"
    files = sum(1 for f in committed.rglob("*") if f.is_file())
    assert s1.stored == files == 29 and not s1.quarantined
    immune = query(store, "SELECT patient_id, days_post_mst, th1_pct_cd4 FROM immune_timeline ORDER BY 1, 2")
    # six patients x (pre, day 14, day 30); P01's unstimulated control tube left out
    assert len(immune) == 18 and {r[0] for r in immune} == {f"P0{i}" for i in range(1, 7)}
    chim = query(store, "SELECT sample_id, method, detected FROM chimerism_timeline")
    assert len(chim) == 16 and all(r[2] for r in chim)
    before = _counts(store)
    shutil.copytree(committed, inbox, dirs_exist_ok=True)
    s2 = run_pipeline(inbox, store)
    assert s2.duplicates == files and s2.stored == 0
    assert _counts(store) == before


# Commands of the README that this test does not paste: `watch` runs until Ctrl-C
# (tests/test_watch.py runs it), `resolve` needs a quarantined conflict (tests/test_identity.py).
_NOT_PASTED = ("graftwatch watch ", "graftwatch resolve ")


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)  # shell line continuations
        for ln in joined.splitlines():
            ln = ln.split("  #")[0].strip()  # trailing comments
            if ln.startswith("graftwatch ") and not ln.startswith(_NOT_PASTED):
                lines.append(ln)
    return lines


def test_readme_commands_work_as_pasted(demo):
    """Each role's README commands, pasted as written, in a folder laid out as `make run` leaves it."""
    root, _ = demo
    exe = Path(sys.executable).with_name("graftwatch")
    lines = _readme_commands()
    assert sum(ln.startswith("graftwatch query ") for ln in lines) >= 5
    assert any(ln.startswith("graftwatch report ") for ln in lines)
    assert any(ln.startswith("graftwatch cohort ") for ln in lines)
    for ln in lines:
        r = subprocess.run([str(exe)] + shlex.split(ln)[1:], capture_output=True, text=True, timeout=300,
                           cwd=root)
        assert r.returncode == 0, f"{ln}\n{r.stderr[-2000:]}"
        assert "Traceback" not in r.stderr, ln
    assert (root / "P01.html").stat().st_size > 10_000 and (root / "cohort.html").is_file()
    assert (root / "populations.parquet").is_file()
