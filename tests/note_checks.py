"""The shape every quarantine note has (issue 18): the lab's words first, then the detail."""

from __future__ import annotations

import re

from assays.errors import GENERIC_PROBLEM

# what a lab person should not meet on the first line: keywords, reprs, exception names
_TECHNICAL = re.compile(r"\$|Error\b|Exception|Traceback|\bNone\b|\\x|(?<![a-z])'|\"|\[|\{|Expected|found\b")


def assert_lab_first(message: str) -> list[str]:
    """Line 1 a plain sentence saying what is wrong (not the generic fallback), line 2 what
    to do, line 3 the technical detail; returns the lines."""
    lines = message.splitlines()
    assert len(lines) >= 3, message
    first = lines[0]
    assert re.match(r"^(This|The|A|Row \d+|Several|\d+ rows) ", first) and first.endswith("."), first
    assert not _TECHNICAL.search(first), first
    assert first != GENERIC_PROBLEM, message
    assert lines[1].startswith("What to do: ") and lines[2].startswith("Details: Expected ") and "; found " in lines[2]
    return lines
