"""Where masks are written: a local folder (S3 joins in the pipeline issue), addressed by URI."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path
from typing import Protocol

from heartseg.errors import HeartSegError


class StorageError(HeartSegError):
    """A results location that cannot be used."""


class ResultStore(Protocol):
    """Writes and reads result files by key."""

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key``; returns the object's URI."""
        ...

    def get(self, uri: str) -> bytes:
        """Read back an object written by :meth:`put`."""
        ...


class LocalStore:
    """A folder on a local or shared file system."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def put(self, key: str, data: bytes) -> str:
        """Write atomically (temporary file, then rename), so a killed worker leaves no half file."""
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)
        return str(target)

    def get(self, uri: str) -> bytes:
        """Read a file written by :meth:`put`."""
        path = Path(uri)
        if not path.is_file():
            raise StorageError(f"{uri}: result file not found")
        return path.read_bytes()


def open_store(uri: str) -> ResultStore:
    """The store for ``HEARTSEG_RESULTS_URI``: a folder path (``file://`` optional)."""
    if uri.startswith("s3://"):
        raise StorageError(f"{uri}: S3 results are not supported yet; use a folder")
    return LocalStore(uri.removeprefix("file://"))


def safe_key_part(text: str) -> str:
    """A name usable as one path segment of a key."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "unnamed"


def mask_key(fingerprint: str, run: str, patient_id: str, frame: int) -> str:
    """``masks/<fingerprint 16>/<run>/<patient>/<patient>_frame<NN>.nii.gz``: the documented key layout."""
    patient = safe_key_part(patient_id)
    return f"masks/{fingerprint[:16]}/{safe_key_part(run)}/{patient}/{patient}_frame{frame:02d}.nii.gz"


def gzip_deterministic(data: bytes) -> bytes:
    """gzip without a timestamp, so the same mask always has the same bytes and checksum."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
