"""Shared pytest set-up: Prefect isolated in a temporary home, reference-data paths."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Prefect must never touch ~/.prefect or the network from the test suite.
_PREFECT_HOME = tempfile.mkdtemp(prefix="graftwatch-prefect-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real reference files; tests using this are marked ``reference``."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (clone outside the workplace)")
    return SHARED_DATA


def run_pipeline(inbox: Path, store: Path, template: Path | None = None, config: Path | None = None):
    """Run the real Prefect inbox flow in-process (one temporary Prefect server per session)."""
    from flows.pipeline import process_inbox

    return process_inbox(str(inbox), str(store), str(config) if config else None, str(template) if template else None)


def query(store: Path, sql: str) -> list[tuple]:
    from storage.store import Store
    from storage.views import connect

    return connect(Store(store)).execute(sql).fetchall()
