"""Logging for every HeartSeg process: plain text or JSON lines, with the run and study being worked on.

The run and study come from a context (:func:`log_context`) that the tasks set, so every
line logged while a study is processed carries them, including Celery's and libraries' lines.
Log lines name studies by record id and run name, never by a patient's name or birth date:
nothing here reads DICOM patient attributes, and the DICOM code keeps pydicom's and
highdicom's value warnings (which quote the values) out of the logs.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

_CONTEXT: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar("heartseg_log_context",
                                                                                   default=None)
CONTEXT_FIELDS = ("run", "study_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [run=%(run)s study=%(study_id)s]: %(message)s"
QUIET_LOGGERS = ("highdicom",)
JSON_FIELDS = ("asctime", "levelname", "name", "process", "message", *CONTEXT_FIELDS)


@contextmanager
def log_context(**values: object) -> Iterator[None]:
    """Tag every log line written inside the block with ``values`` (``run``, ``study_id``)."""
    token = _CONTEXT.set({**(_CONTEXT.get() or {}), **values})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    """Adds the current run and study (or None) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _CONTEXT.get() or {}
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, context.get(name))
        return True


def make_formatter(log_format: Literal["text", "json"]) -> logging.Formatter:
    """The formatter for ``HEARTSEG_LOG_FORMAT``: one JSON object per line, or readable text."""
    if log_format == "json":
        return JsonFormatter(list(JSON_FIELDS), rename_fields={"asctime": "time", "levelname": "level",
                                                                "name": "logger"})
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(log_format: Literal["text", "json"] = "text", level: int = logging.INFO) -> None:
    """Send the root logger's records to stderr in ``log_format``, tagged with the current context."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for chatty in QUIET_LOGGERS:  # a line per DICOM module copied into every SEG
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
