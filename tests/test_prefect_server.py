"""Deployments against a real Prefect server (``conftest.prefect_server``), maintenance and
reprocessing flows, and scale-out on a real Dask LocalCluster with a ``file://`` store.

One harness server for the module (its start is the main cost).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from ops_helpers import REPO, query, simulate, write_template


@pytest.fixture(scope="module")
def harness(prefect_server):
    """The session's real Prefect server, also in the environment for this module (Dask
    worker processes and flow-run subprocesses read PREFECT_API_URL from it)."""
    import os

    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = prefect_server
    yield prefect_server
    if old is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = old


@pytest.fixture(scope="module")
def tubes(tmp_path_factory):
    root = tmp_path_factory.mktemp("srv-src")
    return {"template": write_template(root / "template.xml"),
            "files": simulate(root / "src", 3, n_events=4000, prefix="D")}


def _inbox_with(tmp_path: Path, files: list[Path]) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for f in files:
        shutil.copy(f, inbox / f.name)
    return inbox


def _env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRAFTWATCH_INBOX", str(tmp_path / "inbox"))
    monkeypatch.setenv("GRAFTWATCH_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("GRAFTWATCH_ARCHIVE", str(tmp_path / "archive"))


def test_prefect_yaml_deployments_build(monkeypatch, tmp_path):
    from flows.serve import load_deployments

    _env(monkeypatch, tmp_path)
    deps = {d.name: d for d in load_deployments(REPO / "prefect.yaml")}
    assert set(deps) == {"inbox-polling", "nightly-maintenance", "reprocessing"}
    assert deps["inbox-polling"].entrypoint == "flows/pipeline.py:process_inbox"
    assert deps["inbox-polling"].parameters["store"] == str(tmp_path / "store")
    assert deps["inbox-polling"].schedules[0].schedule.interval.total_seconds() == 60
    assert deps["nightly-maintenance"].schedules[0].schedule.cron == "30 2 * * *"
    assert not deps["reprocessing"].schedules  # manual only


def test_serve_reports_config_errors(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from assays.errors import ConfigError
    from flows.serve import load_deployments, serve

    for var in ("GRAFTWATCH_INBOX", "GRAFTWATCH_STORE", "GRAFTWATCH_ARCHIVE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="GRAFTWATCH_INBOX"):
        load_deployments(REPO / "prefect.yaml")
    assert serve(SimpleNamespace(prefect_yaml=str(REPO / "prefect.yaml"))) == 2
    bad = tmp_path / "prefect.yaml"
    bad.write_text("deployments:\n  - name: x\n    entrypoint: flows/nope.py:f\n")
    with pytest.raises(ConfigError, match="no such file"):
        load_deployments(bad)


def test_deployment_flow_run_on_real_server(harness, tubes, monkeypatch, tmp_path):
    """inbox-polling applied to the server, a run created from it, executed by a Runner
    in a subprocess the way `graftwatch serve` executes scheduled runs."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.runner import Runner

    from flows.serve import load_deployments

    _env(monkeypatch, tmp_path)
    monkeypatch.chdir(REPO)  # entrypoints are relative to the project folder
    _inbox_with(tmp_path, tubes["files"])
    (dep,) = load_deployments(REPO / "prefect.yaml", ["inbox-polling"])
    dep.schedules = []  # the run below is triggered by hand; no interval runs piling up

    async def execute():
        runner = Runner(query_seconds=1, limit=1)
        await runner.add_deployment(dep)
        run = await run_deployment("process-inbox/inbox-polling", timeout=0,
                                   parameters={"template_path": str(tubes["template"])})
        await runner.start(run_once=True)  # what `graftwatch serve` does, for one round
        async with get_client() as client:
            return await client.read_flow_run(run.id)

    finished = asyncio.run(execute())
    assert finished.state.is_completed(), finished.state
    got = query(tmp_path / "store", "SELECT sample_id FROM samples ORDER BY 1")
    assert got == [("D00",), ("D01",), ("D02",)]
    assert not any((tmp_path / "inbox").iterdir())


def test_maintenance_and_reprocessing_flows(harness, tubes, tmp_path):
    import flowkit as fk

    from flows.maintenance import nightly_maintenance, reprocess
    from flows.pipeline import process_inbox

    store = tmp_path / "store"
    for i, f in enumerate(tubes["files"]):  # three runs: three small batches per table
        inbox = tmp_path / "inbox"
        inbox.mkdir(exist_ok=True)
        shutil.copy(f, inbox / f.name)
        process_inbox(str(inbox), str(store), None, str(tubes["template"]))
    before = query(store, "SELECT sample_id, population, count FROM flow_populations ORDER BY ALL")

    result = nightly_maintenance(str(store), orphan_minutes=0)
    assert result["compaction"]["batches_merged"] == 3
    assert result["row_counts"]["samples"] == 3 and result["row_counts"]["immune_timeline"] == 3
    assert query(store, "SELECT sample_id, population, count FROM flow_populations ORDER BY ALL") == before

    # A new template: CD3 threshold moved up. Reprocessing writes new analyses; the views
    # show them, the old ones stay stored.
    strategy = fk.GatingStrategy()
    strategy.add_gate(fk.gates.RectangleGate("Lymphocytes", [fk.Dimension("FSC-A", range_min=20000, range_max=120000),
                                                             fk.Dimension("SSC-A", range_min=0, range_max=60000)]),
                      ("root",))
    strategy.add_gate(fk.gates.RectangleGate("CD3_pos", [fk.Dimension("BUV395-A", range_min=5000)]),
                      ("root", "Lymphocytes"))
    new_template = tmp_path / "strict_cd3.xml"
    with open(new_template, "wb") as fh:
        fk.export_gatingml(strategy, fh)
    summary = reprocess(str(store), str(tmp_path / "archive"), str(new_template))
    assert summary.files == 3 and summary.samples == 3 and not summary.failed and summary.missing == 0
    assert query(store, "SELECT count(*), count(DISTINCT sample_id) FROM analyses") == [(6, 3)]
    assert query(store, "SELECT count(*) FROM samples") == [(3,)]  # no second sample row
    latest = dict(query(store, "SELECT sample_id, analysis_id FROM immune_timeline"))
    assert sorted(latest.values()) == sorted(summary.analyses)
    old = dict(query(store, "SELECT sample_id, count FROM flow_populations WHERE population = 'CD3_pos' "
                            f"AND analysis_id NOT IN ({', '.join(repr(a) for a in summary.analyses)})"))
    new = dict(query(store, "SELECT sample_id, count FROM flow_populations_latest WHERE population = 'CD3_pos'"))
    assert set(old) == set(new) and all(new[s] < old[s] for s in new)
    assert query(store, "SELECT DISTINCT template FROM flow_gates WHERE analysis_id IN "
                        f"({', '.join(repr(a) for a in summary.analyses)})") == [("strict_cd3.xml",)]


def test_dask_local_cluster_and_file_uri_store(harness, tubes, tmp_path):
    pytest.importorskip("prefect_dask")
    from flows.pipeline import process_inbox
    from flows.runners import make_task_runner

    inbox = _inbox_with(tmp_path, tubes["files"])
    uri = (tmp_path / "store").as_uri()  # file:///...
    runner = make_task_runner("dask", None, workers=1)  # one worker process: the path, not the speed-up
    summary = process_inbox.with_options(task_runner=runner)(str(inbox), uri, None, str(tubes["template"]))
    assert summary.stored == 3 and not summary.quarantined
    assert query(tmp_path / "store", "SELECT count(DISTINCT sample_id) FROM flow_populations") == [(3,)]


def test_task_runner_choices():
    from assays.errors import ConfigError
    from flows.runners import make_task_runner

    assert type(make_task_runner(None, None)).__name__ == "ThreadPoolTaskRunner"
    with pytest.raises(ConfigError, match="unknown"):
        make_task_runner("spark", None)
    with pytest.raises(ConfigError, match="needs --task-runner dask"):
        make_task_runner("thread", "tcp://10.0.0.5:8786")
    with pytest.raises(ConfigError, match="scheduler address"):
        make_task_runner("dask", "10.0.0.5")
    if pytest.importorskip("prefect_dask"):
        assert type(make_task_runner("dask", "tcp://10.0.0.5:8786")).__name__ == "DaskTaskRunner"


def test_file_flows_run_at_most_default_workers_files_at_once():
    """The inbox and reprocessing flows bound their thread pools (each 1M-event file in
    flight holds ~0.5 GB); Prefect's default pool would run min(32, cores + 4)."""
    from flows.maintenance import reprocess
    from flows.pipeline import default_workers, process_inbox

    # prefect 3.8 keeps the bound as ThreadPoolTaskRunner._max_workers (no public attribute)
    assert reprocess.task_runner._max_workers == process_inbox.task_runner._max_workers == default_workers()
