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
# Prefect's default profile lets a client with no API URL start a temporary server that must
# answer within 20 s; on a loaded CI machine it does not. Tests that need a server use the
# shared one (the `prefect_server` fixture), waited for without a deadline; anything else
# reaching for a server fails at once, naming the missing URL.
os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"

REPO = Path(__file__).resolve().parents[1]

# How `make test` shares the work between its two pytest-xdist workers (--dist loadfile,
# --no-loadscope-reorder, and the scheduler below): whole files, so a file's module fixtures
# are built once, except that the files talking to the suite's shared Prefect server
# (ops_helpers.shared_api_url) go to one worker together, so one worker starts that server
# instead of both; and units are handed out heaviest first, because xdist deals them in
# collection order and a heavy unit dealt last leaves the other worker idle until it ends.
# (xdist's own --dist loadgroup cannot do this under pytest 9: it renames node ids through
# an attribute pytest 9 no longer reads.)
SHARED_SERVER_FILES = ("test_prefect_server.py", "test_local_server.py", "test_faults.py",
                       "test_config_and_artifacts.py")
HEAVIEST_FIRST = ("prefect-server", "test_adaptive_panel.py", "test_report.py", "test_watch.py", "test_cohort_report.py",
                  "test_demo.py", "test_gating_pictures.py", "test_pipeline_foundation.py", "test_identity.py",
                  "test_str_chimerism.py", "test_qpcr_chimerism.py", "test_export_variants.py")


def work_unit(path: str) -> str:
    """The xdist work unit of a test file: the shared-server group, or the file itself."""
    name = path.split("::", 1)[0].rsplit("/", 1)[-1]
    return "prefect-server" if name in SHARED_SERVER_FILES else name


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(work_unit(item.nodeid), len(rank)))  # stable: file order within a unit


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class WorkUnits(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnits(config, log)

SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real reference files; tests using this are marked ``reference``."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (clone outside the workplace)")
    return SHARED_DATA


def run_pipeline(inbox: Path, store: Path, template: Path | None = None, config: Path | None = None):
    """One batch of the inbox, in-process, as a one-shot ``graftwatch run`` without a
    Prefect server runs it (the Prefect flow wraps the same batch: tests/test_prefect_server.py)."""
    from flows.batch import run_in_process

    return run_in_process(str(inbox), str(store), str(config) if config else None, str(template) if template else None)


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect server for this pytest session, set as the API of this process.

    Started like ``graftwatch watch`` starts its own (flows.runners.LocalServer) on a free
    port, and waited for with no deadline: a loaded machine makes it slow, not a failure.
    Yields the API URL (give it to subprocesses as PREFECT_API_URL).
    """
    from ops_helpers import shared_api_url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = shared_api_url()
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url


def query(store: Path, sql: str) -> list[tuple]:
    from storage.store import Store
    from storage.views import connect

    return connect(Store(store)).execute(sql).fetchall()
