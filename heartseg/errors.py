"""The one exception family for bad input and configuration."""

from __future__ import annotations

from pathlib import Path


class HeartSegError(Exception):
    """Base class of every error HeartSeg raises on purpose."""


class StudyError(HeartSegError):
    """A study (or one of its files) cannot be used as given.

    The message always names the offending file (or folder) and what is wrong with it,
    so that it can be recorded against the study and shown to a user as is.

    Parameters
    ----------
    path
        The file or folder that is wrong.
    problem
        What is wrong, and where possible what was expected.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigurationError(HeartSegError, ValueError):
    """A setting or option that cannot work as given (the message names it and what it needs)."""
