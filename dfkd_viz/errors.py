"""User-facing errors.

Every error a user can cause (a bad option, an unknown name, missing data, a rejected file) is a
:class:`DfkdVizError` whose message is one clear sentence; the CLI prints it without a traceback and
exits with code 2, the app shows it as a message.
"""

from __future__ import annotations


class DfkdVizError(Exception):
    """Base class of errors caused by user input; ``str(err)`` is one sentence for the user."""


class ConfigError(DfkdVizError, ValueError):
    """An invalid configuration value (names the field and the allowed range)."""


class UnknownNameError(DfkdVizError, KeyError):
    """A name (teacher, method, defense, dataset, trigger, preset, run) that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; a user should not see the quotes
        return str(self.args[0]) if self.args else ""


class DataUnavailableError(DfkdVizError, FileNotFoundError):
    """A dataset that is not on this machine (the message names the command that installs it)."""


class RunStateError(DfkdVizError, RuntimeError):
    """An operation that the run's current state does not allow (e.g. resuming a running run)."""
