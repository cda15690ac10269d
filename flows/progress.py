"""A tiny progress hook so the in-process CLI can draw a bar while the flow runs.

The flow reports through :func:`report`; the CLI installs a reporter for the
duration of a run. Without one (Prefect workers, tests) reports go nowhere.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

_reporter: Callable[[str, int, int], None] | None = None


def report(stage: str, done: int, total: int) -> None:
    if _reporter is not None:
        _reporter(stage, done, total)


@contextmanager
def reporting(callback: Callable[[str, int, int], None]):
    global _reporter
    previous, _reporter = _reporter, callback
    try:
        yield
    finally:
        _reporter = previous
