"""The ``process-inbox`` Prefect flow: one batch (:mod:`flows.batch`) as a flow run.

Files are Prefect tasks on the flow's bounded thread pool (or a Dask cluster); the run
publishes its summary and, when long, its progress as artifacts in the Prefect UI. This
is what prefect.yaml's deployments, ``graftwatch watch``/``serve`` and a ``graftwatch run``
with ``PREFECT_API_URL`` set execute; a one-shot run without a server runs the same batch
in-process (:func:`flows.batch.run_in_process`).
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.batch import RunSummary, default_workers, prepare, process_files, run_inbox
from flows.inbox import InboxFile
from flows.process import FileOutcome, GatingSetup


@task(name="process-files", cache_policy=NO_CACHE, retries=0)
def process_files_task(files: list[InboxFile], setup: GatingSetup, known: dict[str, str]) -> list[FileOutcome]:
    return process_files(files, setup, known)


# Bounded thread pool: Prefect's default has no limit, and every 1M-event file in flight
# holds its events, their compensated copy and the transformed columns in memory.
@flow(name="process-inbox", validate_parameters=False, task_runner=ThreadPoolTaskRunner(max_workers=default_workers()))
def process_inbox(inbox: str, store: str, config_path: str | None = None, template_path: str | None = None) -> RunSummary:
    """Prefect flow: process every file in ``inbox`` into the store at ``store``, once."""
    from flows.artifacts import publish_run_summary
    from flows.runners import blas_threads_per_worker

    inbox_p, store_o, config, setup = prepare(inbox, store, config_path, template_path)
    with blas_threads_per_worker(default_workers()):
        summary = run_inbox(inbox_p, store_o, config, setup, process_files_task.submit, progress_artifact=True)
    publish_run_summary(summary, config)
    return summary
