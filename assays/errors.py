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

    Parameters
    ----------
    expected : what a good file has at this point.
    found : what this file has instead.
    action : what the technician should do about it.
    """

    def __init__(self, expected: str, found: str, action: str):
        self.expected = expected
        self.found = found
        self.action = action
        super().__init__(f"Expected {expected}; found {found}. What to do: {action}")


class ConfigError(GraftwatchError):
    """A command-line option, config file or template is unusable (exit status 2)."""
