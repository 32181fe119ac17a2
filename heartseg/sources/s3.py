"""Studies in S3 (``s3://bucket/prefix``): find them under a prefix, fetch one to a local folder to read it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from heartseg.errors import StudyError
from heartseg.sources.base import Selection, StudySource
from heartseg.storage import s3_client, safe_key_part, split_s3_uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

INFO_FILE = "Info.cfg"


def _keys(client: S3Client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def discover_s3(uri: str, endpoint_url: str | None = None) -> list[str]:
    """ACDC patient folders (prefixes holding an ``Info.cfg``), DICOM series (prefixes holding
    ``.dcm`` files) and NIfTI files under ``uri``."""
    bucket, prefix = split_s3_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    try:
        keys = _keys(s3_client(endpoint_url), bucket, prefix)
    except Exception as exc:
        raise StudyError(uri, f"cannot list the bucket ({exc})") from exc
    patients = sorted({k.rsplit("/", 1)[0] for k in keys if k.endswith("/" + INFO_FILE) or k == INFO_FILE})
    in_patient = tuple(p + "/" for p in patients)
    files = sorted(k for k in keys if k.endswith((".nii.gz", ".nii")) and not k.startswith(in_patient)
                   and not k.endswith(("_gt.nii.gz", "_gt.nii")))
    series = sorted({k.rsplit("/", 1)[0] for k in keys if k.lower().endswith(".dcm") and "/" in k} - set(patients))
    found = [f"s3://{bucket}/{p}" for p in (*patients, *series)] + [f"s3://{bucket}/{k}" for k in files]
    if not found:
        raise StudyError(uri, "no studies found (ACDC patient folders with Info.cfg, DICOM .dcm series, "
                              "or NIfTI files)")
    return found


def _s3_target(uri: str, cache_dir: Path) -> Path:
    bucket, key = split_s3_uri(uri)
    return cache_dir / safe_key_part(bucket) / key


def fetch(uri: str, cache_dir: Path, endpoint_url: str | None = None) -> Path:
    """Download an S3 study (a patient prefix or one file) into ``cache_dir``; returns the local path.

    Raises
    ------
    StudyError
        When the objects cannot be listed or downloaded (a key that is not there, no access).
    """
    bucket, key = split_s3_uri(uri)
    client = s3_client(endpoint_url)
    target = _s3_target(uri, cache_dir)
    try:
        if key.endswith((".nii.gz", ".nii")):
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
            return target
        keys = [k for k in _keys(client, bucket, key.rstrip("/") + "/") if "/" not in k[len(key) + 1:]]
        if not keys:
            raise StudyError(uri, "no objects under this prefix")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for object_key in keys:
            client.download_file(bucket, object_key, str(target / object_key.rsplit("/", 1)[-1]))
    except StudyError:
        raise
    except Exception as exc:
        raise StudyError(uri, f"cannot download the study ({exc})") from exc
    return target


class S3Source(StudySource):
    """Studies under ``s3://bucket/prefix``, downloaded into ``cache_dir`` to be read."""

    def __init__(self, cache_dir: Path, endpoint_url: str | None = None) -> None:
        self.cache_dir = cache_dir
        self.endpoint_url = endpoint_url

    def discover(self, uri: str, selection: Selection) -> list[str]:
        """See :func:`discover_s3`."""
        self.check_selection(uri, selection)
        return discover_s3(uri, self.endpoint_url)

    def fetch(self, source: str) -> str:
        """See :func:`fetch`."""
        return str(fetch(source, self.cache_dir, self.endpoint_url))

    def release(self, source: str) -> None:
        """Delete the downloaded copy, so a cohort of thousands of studies does not fill the worker's disk."""
        remove_copy(_s3_target(source, self.cache_dir))


def remove_copy(path: Path) -> None:
    """Delete a fetched study, a folder or one file."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
