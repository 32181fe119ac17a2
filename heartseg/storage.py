"""Where masks are written and studies are read: a local folder or S3 (boto3), addressed by URI.

S3 credentials and region come from the standard AWS variables (``AWS_ACCESS_KEY_ID``, ...);
an S3-compatible endpoint (MinIO, moto) from ``HEARTSEG_S3_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from heartseg.errors import HeartSegError, StudyError
from heartseg.extras import require
from heartseg.paths import inside, key_part

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


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
        """Write atomically (temporary file, then rename), so a killed worker leaves no half file.

        Raises
        ------
        StorageError
            When ``key`` would land outside the store's folder (``..``, an absolute path, a link), or the
            file system refuses the write (the folder unmounted, read-only or full): a transient error,
            retried by the task.
        """
        try:
            target = inside(self.root, key)
        except StudyError as exc:
            raise StorageError(f"result key {exc}") from exc
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(data)
            partial.replace(target)
        except OSError as exc:
            raise StorageError(f"{target}: cannot write the result: {type(exc).__name__}: {exc.strerror or exc}") \
                from exc
        return str(target)

    def get(self, uri: str) -> bytes:
        """Read a file written by :meth:`put` (:class:`StorageError` when it is missing or cannot be read)."""
        path = Path(uri)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"{uri}: result file not found") from exc
        except OSError as exc:
            raise StorageError(f"{uri}: cannot read the result: {type(exc).__name__}: {exc.strerror or exc}") \
                from exc


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    if not uri.startswith("s3://"):
        raise StorageError(f"{uri}: not an s3:// URI")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket named")
    return bucket, key


def s3_client(endpoint_url: str | None = None) -> S3Client:
    """A boto3 S3 client (credentials from the standard AWS variables)."""
    require("s3:// storage", "s3", "boto3")
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url or None)


class S3Store:
    """Objects under ``s3://bucket/prefix``."""

    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        self.bucket, prefix = split_s3_uri(uri)
        self.prefix = prefix.strip("/")
        self.client = s3_client(endpoint_url)

    def put(self, key: str, data: bytes) -> str:
        """Upload ``data`` (one PUT: an object appears whole or not at all)."""
        full = f"{self.prefix}/{key}" if self.prefix else key
        try:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data)
        except Exception as exc:  # botocore raises many types; name the object
            raise StorageError(f"s3://{self.bucket}/{full}: upload failed ({exc})") from exc
        return f"s3://{self.bucket}/{full}"

    def get(self, uri: str) -> bytes:
        """Download an object by URI."""
        bucket, key = split_s3_uri(uri)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise StorageError(f"{uri}: download failed ({exc})") from exc


def open_store(uri: str, endpoint_url: str | None = None) -> ResultStore:
    """The store for ``HEARTSEG_RESULTS_URI``: ``s3://bucket/prefix`` or a folder (``file://`` optional)."""
    if uri.startswith("s3://"):
        return S3Store(uri, endpoint_url)
    return LocalStore(uri.removeprefix("file://"))


def mask_key(fingerprint: str, run: str, patient_id: str, frame: int) -> str:
    """``masks/<fingerprint 16>/<run>/<patient>/<patient>_frame<NN>.nii.gz``: the documented key layout.

    The run name and the patient ID are each encoded as one segment by :func:`heartseg.paths.key_part`
    (unchanged when plain, else ``<slug>~<hash>``), so different names never share a file.
    """
    patient = key_part(patient_id)
    return f"masks/{key_part(fingerprint[:16])}/{key_part(run)}/{patient}/{patient}_frame{frame:02d}.nii.gz"


def seg_key(fingerprint: str, run: str, patient_id: str, frame: int) -> str:
    """The DICOM SEG beside the mask of :func:`mask_key`: ``..._frame<NN>_seg.dcm``."""
    return mask_key(fingerprint, run, patient_id, frame).removesuffix(".nii.gz") + "_seg.dcm"


def gzip_deterministic(data: bytes) -> bytes:
    """gzip without a timestamp, so the same mask always has the same bytes and checksum."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
