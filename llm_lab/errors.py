"""The lab's small set of exceptions.

Errors are raised where a bad value first becomes known and name the config key and the fix, so
that ``train.py`` can print them as one line and exit with code 2.
"""

from __future__ import annotations


class LabError(Exception):
    """Base class of every error the lab reports to a user as one line."""


class ConfigError(LabError, ValueError):
    """An impossible or invalid configuration value.

    ``ConfigError("model.net.n_head", "n_embd=30 is not divisible by n_head=4", "pick a divisor")``
    reads ``model.net.n_head: n_embd=30 is not divisible by n_head=4 (pick a divisor)``.
    """

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        self.key = key
        message = f"{key}: {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)


class DataError(LabError, ValueError):
    """Input data that cannot be used: missing, empty, not UTF-8, too short, corrupt."""
