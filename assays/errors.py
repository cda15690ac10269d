"""The one error hierarchy of graftwatch.

``InputError``  -> the file goes to ``quarantine/`` with a plain-language ``.error.txt``.
``ConfigError`` -> the command exits with status 2 and a one-line reason.

Every message says what was expected, what was found and what to do, so a lab
technician can act on it without reading code.
"""

from __future__ import annotations


class GraftwatchError(Exception):
    """Base class: every error graftwatch raises on purpose."""


class InputError(GraftwatchError):
    """A file (or a row in it) cannot be used as it is.

    The quarantine note leads with the lab's words, then the detail (DESIGN.md: a
    plain-language note saying what is wrong and how to fix it)::

        <problem: what is wrong with the file, in the lab's words>
        What to do: <action>
        Details: Expected <expected>; found <found>.

    Parameters
    ----------
    expected : what a good file has at this point (technical detail).
    found : what this file has instead (technical detail).
    action : what the technician should do about it.
    problem : one sentence saying what is wrong with the file as a lab person would say
        it ("Row 4 of this sheet has a date that does not exist."); without one the note
        leads with :data:`GENERIC_PROBLEM` (every reader in assays/ gives its own).
    """

    def __init__(self, expected: str, found: str, action: str, problem: str | None = None):
        self.expected = expected
        self.found = found
        self.action = action
        self.problem = problem
        super().__init__(self._message())

    def _message(self) -> str:
        action = self.action.rstrip(".")
        action = action[:1].upper() + action[1:]
        return (f"{self.problem or GENERIC_PROBLEM}\nWhat to do: {action}.\n"
                f"Details: Expected {self.expected}; found {self.found}.")


#: the lab sentence of an InputError raised without one (every reader gives its own)
GENERIC_PROBLEM = "This file cannot be used as it is."


class ConfigError(GraftwatchError):
    """A command-line option, config file or template is unusable (exit status 2)."""
