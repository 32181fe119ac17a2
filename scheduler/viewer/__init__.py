"""``heartseg viewer``: OHIF's released viewer of the PACS that HeartSeg reads and writes, where HeartSeg's DICOM
SEGs show over the cine they were drawn on.

One module per job: :mod:`.dist` pins OHIF's release (``make viewer`` fetches it) and checks a build;
:mod:`.config` writes its ``app-config.js``; :mod:`.auth` is the viewer's login; :mod:`.server` serves the build
and the same-origin proxy to the PACS (Tornado, the ``[viewer]`` extra); :mod:`.links` turns a study's source into
its viewer URL; :mod:`.publish` stores a run's DICOM series and SEGs into a PACS (``heartseg run --publish``).

Importing this package imports none of Tornado, dicomweb-client or the record.
"""

from scheduler.viewer.dist import OHIF_VERSION

__all__ = ["OHIF_VERSION"]
