"""Where studies live: one module per storage scheme, chosen by a source's URI scheme.

==========================  ===============================================  ==========================
Scheme                      Module                                           Studies
==========================  ===============================================  ==========================
a path, ``file://``         :mod:`heartseg.sources.local`                    read in place
``s3://``                   :mod:`heartseg.sources.s3`                       downloaded to the cache
``dicomweb(s)://``          :mod:`heartseg.sources.dicomweb`                 fetched by WADO-RS
==========================  ===============================================  ==========================

The scheduler (discovery) and the workers (fetch, release, store back) reach storage only
through :func:`source_for`. A new scheme is one module with a :class:`StudySource` subclass,
registered with :func:`register_source`.
"""

from __future__ import annotations

from collections.abc import Callable

from heartseg.errors import StudyError
from heartseg.settings import Settings
from heartseg.sources.base import Discovery, Selection, StudySource
from heartseg.sources.dicomweb import DicomWebSource
from heartseg.sources.local import LocalSource
from heartseg.sources.s3 import S3Source
from heartseg.studies import GeometryLimits, open_study
from heartseg.studies.model import Study

__all__ = ["Discovery", "Selection", "SourceFactory", "StudySource", "discover_studies", "load_study",
           "register_source", "scheme_of", "source_for", "unregister_source"]

#: Builds a scheme's source from the process's settings (cache folder, endpoints, credentials).
SourceFactory = Callable[[Settings], StudySource]

_FACTORIES: dict[str, SourceFactory] = {
    "file": lambda settings: LocalSource(),
    "s3": lambda settings: S3Source(settings.cache_dir, settings.s3_endpoint_url),
    "dicomweb": lambda settings: DicomWebSource(settings.cache_dir, settings.dicomweb_auth),
    "dicomwebs": lambda settings: DicomWebSource(settings.cache_dir, settings.dicomweb_auth),
}


def scheme_of(uri: str) -> str:
    """The URI's scheme, lower case; ``file`` for a plain path."""
    scheme, separator, _ = uri.partition("://")
    return scheme.lower() if separator else "file"


def register_source(scheme: str, factory: SourceFactory) -> None:
    """Make ``scheme://`` sources readable by the scheduler and the workers of this process.

    Raises
    ------
    ValueError
        If the scheme is taken.
    """
    if scheme in _FACTORIES:
        raise ValueError(f"the source scheme {scheme!r} is already registered")
    _FACTORIES[scheme] = factory


def unregister_source(scheme: str) -> None:
    """Forget a scheme added by :func:`register_source`."""
    _FACTORIES.pop(scheme, None)


def source_for(uri: str, settings: Settings) -> StudySource:
    """The source that reads ``uri``.

    Raises
    ------
    StudyError
        For a scheme no module handles.
    """
    scheme = scheme_of(uri)
    if scheme not in _FACTORIES:
        known = ", ".join(f"{s}://" for s in sorted(_FACTORIES) if s != "file")
        raise StudyError(uri, f"no source reads {scheme}:// URIs; use a folder or one of {known}")
    return _FACTORIES[scheme](settings)


def discover_studies(uri: str, settings: Settings, selection: Selection | None = None) -> Discovery:
    """The study sources under a folder, a bucket prefix, a PACS, ... (see :meth:`StudySource.discover`)."""
    return source_for(uri, settings).discover(uri, selection or Selection())


def load_study(source: StudySource, uri: str, *, cine: bool, limits: GeometryLimits | None = None) -> Study:
    """Fetch a study and read it; the caller releases it (:meth:`StudySource.release`) when done.

    ``limits`` is the plausible voxel spacing (default: the settings' defaults); a stage passes
    ``GeometryLimits.from_settings(ctx.settings)``.
    """
    return open_study(source.fetch(uri), cine=cine, limits=limits)
