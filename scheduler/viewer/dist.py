"""OHIF's released viewer: the pinned version of the npm package ``@ohif/app`` and the built viewer in its
``dist/`` folder, which ``make viewer`` fetches into ``ohif/`` (never committed).

The Makefile and ``deploy/docker/viewer.Dockerfile`` read :data:`OHIF_VERSION` and :data:`OHIF_INTEGRITY`
from here, so the pin lives in one place.
"""

from __future__ import annotations

import json
from pathlib import Path

from heartseg.errors import ConfigurationError

#: The ``@ohif/app`` release HeartSeg serves and was tested with.
OHIF_VERSION = "3.13.2"
#: Its tarball's integrity as the npm registry gives it (``npm view @ohif/app@3.13.2 dist.integrity``).
OHIF_INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
#: The mode whose route ``/viewer`` opens a study, and the extension that shows DICOM SEG in it: both are built
#: into the released viewer (``modes: []`` and ``extensions: []`` in app-config.js add none).
VIEWER_MODE = "@ohif/mode-longitudinal"
SEG_EXTENSION = "@ohif/extension-cornerstone-dicom-seg"
FETCH_HINT = "run `make viewer` (npm pack @ohif/app), or set HEARTSEG_VIEWER_DIST to an OHIF build"


def check_dist(folder: Path) -> Path:
    """``folder`` when it holds OHIF's built viewer (``index.html``) of :data:`OHIF_VERSION`; returns it.

    The version is read from ``package.json`` beside the folder (the npm package's own); a build without
    one (built from source) is taken as it is.

    Raises
    ------
    ConfigurationError
        When ``folder`` has no ``index.html``, its package is another version, or its main bundle lacks
    :data:`VIEWER_MODE` or :data:`SEG_EXTENSION`.
    """
    if not (folder / "index.html").is_file():
        raise ConfigurationError(f"no OHIF viewer at {folder} (no index.html): {FETCH_HINT}")
    package = folder.parent / "package.json"
    if package.is_file():
        found = json.loads(package.read_text(encoding="utf-8")).get("version")
        if found != OHIF_VERSION:
            raise ConfigurationError(f"{folder} holds OHIF {found}, and HeartSeg pins {OHIF_VERSION}: {FETCH_HINT}")
    bundles = [path.read_bytes() for path in folder.glob("app.bundle.*.js")]
    missing = [name for name in (VIEWER_MODE, SEG_EXTENSION) if not any(f'"{name}"'.encode() in b for b in bundles)]
    if missing:
        raise ConfigurationError(f"the OHIF build at {folder} lacks {' and '.join(missing)}, which show HeartSeg's "
                                 f"SEGs: {FETCH_HINT}")
    return folder
