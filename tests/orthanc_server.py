"""A real PACS for the tests: Debian's Orthanc with its DICOMweb plugin, on a free loopback port."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.conftest import free_port

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its REST root and its DICOMweb root."""

    url: str
    port: int
    auth: tuple[str, str] | None = None
    """The user and password it asks for, when it was started with users."""

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def upload(self, files: list[Path]) -> set[str]:
        """POST each DICOM file to /instances; returns the StudyInstanceUIDs' Orthanc ids."""
        studies = set()
        for path in files:
            reply = requests.post(f"{self.url}/instances", data=path.read_bytes(), timeout=30, auth=self.auth)
            reply.raise_for_status()
            studies.add(reply.json()["ParentStudy"])
        return studies


@contextmanager
def orthanc_server(folder: Path, users: dict[str, str] | None = None) -> Iterator[Orthanc]:
    """Start Orthanc with its storage in ``folder`` (asking for HTTP basic auth when ``users`` maps users to
    passwords); stop it on exit.

    Fails (not skips) when Orthanc is not installed: ``.ci/system-packages.sh`` installs it.
    """
    assert shutil.which(ORTHANC) or Path(ORTHANC).exists(), "Orthanc is not installed (make system)"
    assert DICOMWEB_PLUGIN.exists(), "the Orthanc DICOMweb plugin is not installed (make system)"
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "heartseg-test", "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
        "HttpPort": port, "RemoteAccessAllowed": False, "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        "DicomServerEnabled": False, "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "StableAge": 1, "HttpTimeout": 60,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    auth = next(iter(users.items())) if users else None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/system", timeout=2, auth=auth).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield Orthanc(url, port, auth)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
