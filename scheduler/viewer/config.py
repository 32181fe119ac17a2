"""OHIF's ``app-config.js``, generated from the settings: one DICOMweb data source, the PACS, reached through the
viewer's own same-origin proxy (:data:`PROXY_PATH`), so the browser never talks to the PACS and the PACS needs no
CORS setting.
"""

from __future__ import annotations

import json
from typing import Any

from scheduler.viewer.dist import SEG_EXTENSION, VIEWER_MODE

#: Where the viewer serves the PACS's DICOMweb API (QIDO-RS, WADO-RS), relative to its own root.
PROXY_PATH = "/dicom-web"
#: The data source's name in the config (OHIF's ``dataSources[].sourceName``).
SOURCE_NAME = "heartseg"

# A PACS writes absolute BulkDataURIs with its own address (Orthanc takes it from the Host header, so through
# the proxy it names the PACS, not the viewer). The transform keeps what follows ``/studies/<uid>/``, which
# OHIF then resolves under the proxy (``relativeResolution: 'studies'``), whatever address the PACS wrote.
_BULKDATA_TRANSFORM = "url => url.replace(/^(?:https?:\\/\\/[^/]+)?\\/(?:.*\\/)?studies\\/[^/]+\\//, '')"


def data_source(friendly_name: str) -> dict[str, Any]:
    """The one DICOMweb data source, every root under :data:`PROXY_PATH` (WADO-RS for images and thumbnails)."""
    return {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": SOURCE_NAME,
        "configuration": {
            "friendlyName": friendly_name,
            "name": SOURCE_NAME,
            "wadoUriRoot": PROXY_PATH,
            "qidoRoot": PROXY_PATH,
            "wadoRoot": PROXY_PATH,
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
        },
    }


def app_config(friendly_name: str = "HeartSeg PACS") -> str:
    """The text of ``app-config.js``: OHIF's ``window.config`` with the PACS as its only data source.

    ``extensions`` and ``modes`` stay empty: the released viewer has its modes and extensions built in, among
    them the longitudinal mode (route ``/viewer``) with the DICOM SEG extension, which shows HeartSeg's SEGs
    over the cine (:func:`scheduler.viewer.dist.check_dist` checks the build holds them).
    """
    config: dict[str, Any] = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": True,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "defaultDataSourceName": SOURCE_NAME,
        "dataSources": [data_source(friendly_name)],
    }
    text = json.dumps(config, indent=2)
    # The one value that is code, not data: put the function in place of its marker.
    text = text.replace('"relativeResolution": "studies"',
                        f'"relativeResolution": "studies",\n        "transform": {_BULKDATA_TRANSFORM}')
    return (f"/** OHIF configuration written by HeartSeg (scheduler/viewer/config.py): mode {VIEWER_MODE} "
            f"with {SEG_EXTENSION}. */\nwindow.config = {text};\n")
