"""What the study stages work with: the record, the results store, the study sources and the settings.

A worker's Task builds one context when its process first needs it; tests and in-process
runners build theirs with :meth:`StageContext.from_settings` or field by field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from db.session import make_engine
from heartseg.settings import Settings
from heartseg.sources import StudySource, source_for
from heartseg.storage import ResultStore, open_store

#: source_for(uri, settings) -> the StudySource that reads ``uri``.
SourceResolver = Callable[[str, Settings], StudySource]


@dataclass(frozen=True)
class StageContext:
    """Everything a stage reads besides the study id and the model."""

    engine: Engine
    store: ResultStore
    settings: Settings
    sources: SourceResolver = source_for

    @classmethod
    def from_settings(cls, settings: Settings) -> StageContext:
        """The record at ``database_url``, the store at ``results_uri``, every registered source."""
        return cls(make_engine(settings.database_url), open_store(settings.results_uri, settings.s3_endpoint_url),
                   settings)

    def source(self, uri: str) -> StudySource:
        """The source that reads the study at ``uri``."""
        return self.sources(uri, self.settings)
