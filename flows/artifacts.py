"""Prefect artifacts: a markdown summary of each run and, for long runs, a progress bar,
visible in the Prefect UI.

Patient identifiers stay out unless ``[privacy] show_patient_ids`` is set: files are
then named, otherwise only counts and reasons are shown.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("graftwatch")


def summary_markdown(summary, show_names: bool) -> str:
    lines = [
        "# graftwatch inbox run",
        "",
        "| files | stored | duplicates | quarantined | samples | flagged for review | chimerism results |",
        "|---|---|---|---|---|---|---|",
        f"| {summary.files} | {summary.stored} | {summary.duplicates} | {len(summary.quarantined)} | "
        f"{summary.samples} | {len(summary.flagged_samples)} | {summary.chimerism_results} |",
    ]
    if summary.flagged_samples:
        lines += ["", "## Flagged for review (a QC check failed)", ""]
        if show_names:
            lines += [f"- {sid}: gating pictures in `gating_plots/{sid}/` beside the store" for sid in summary.flagged_samples]
        else:
            lines.append(f"- {len(summary.flagged_samples)} sample(s); see `flow_qc` where passed = false")
    if summary.quarantined:
        lines += ["", "## Quarantined", ""]
        for i, q in enumerate(summary.quarantined, 1):
            name = q.name if show_names else f"file {i}"
            lines.append(f"- **{name}**: {q.reason.splitlines()[0][:300]}")
    return "\n".join(lines)


def publish_run_summary(summary, config) -> None:
    """Attach the run summary to the current flow run (no-op outside one)."""
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(
            key="inbox-run-summary",
            markdown=summary_markdown(summary, config.privacy.show_patient_ids),
            description="Files stored, duplicates and quarantined in this run",
        )
    except Exception as exc:  # an artifact is a convenience; never fail a run over it
        log.debug("artifact not published: %s", exc)


class RunProgress:
    """Share of a run's files done, as a Prefect progress artifact on the current flow run.

    Created only once the run has lasted ``after`` seconds, then updated at most every
    ``every`` seconds and at the end: each update is a request to the API (~10 ms), which
    a run of small files that ends within a second should not pay, and nobody watches it.
    """

    def __init__(self, total: int, after: float = 2.0, every: float = 1.0):
        self.total, self.after, self.every = total, after, every
        self.started = time.monotonic()
        self.artifact_id = None
        self._last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        final = done >= self.total
        if self.total <= 0 or now - self.started < self.after:
            return
        if not final and now - self._last < self.every:
            return
        percent = 100.0 * min(done, self.total) / self.total
        try:
            from prefect.artifacts import create_progress_artifact, update_progress_artifact

            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(
                    progress=percent, key="inbox-run-progress",
                    description=f"Files processed in this run (of {self.total})")
            else:
                update_progress_artifact(self.artifact_id, progress=percent)
        except Exception as exc:  # a convenience; never fail a run over it
            log.debug("progress artifact not updated: %s", exc)
        self._last = now
