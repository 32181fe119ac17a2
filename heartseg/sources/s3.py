"""Studies in S3 (``s3://bucket/prefix``): find them under a prefix, fetch one to a local folder to read it.

Object keys are input: a key that cannot be mapped onto folders as it is (``..`` or ``.`` segments, a
leading ``/``, ``//``, a backslash, NUL; see :func:`heartseg.paths.check_object_key`) is never
downloaded. Discovery keeps going past such keys: a study whose key is bad is returned like any
other and fails when fetched, with a :class:`StudyError` naming the key (so it is recorded against
that study and the rest of the cohort goes on); a key holding NUL, which the record cannot store,
is listed in :attr:`Discovery.skipped` instead.

A study is downloaded to ``<cache>/s3/<bucket>/<folders of its key>/<its name>``, the bucket and
the folders each encoded as one segment by :func:`heartseg.paths.key_part`: the name the readers
see is the key's own last segment, and two studies never share or nest in each other's folder.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from heartseg.errors import StudyError
from heartseg.extras import MissingExtraError
from heartseg.paths import check_object_key, inside, key_part, printable
from heartseg.sources.base import Discovery, Selection, StudySource
from heartseg.storage import s3_client, split_s3_uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

INFO_FILE = "Info.cfg"


def _keys(client: S3Client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def discover_s3(uri: str, endpoint_url: str | None = None) -> list[str]:
    """ACDC patient folders (prefixes holding an ``Info.cfg``), DICOM series (prefixes holding
    ``.dcm`` files) and NIfTI files under ``uri`` (see :func:`discover_s3_entries`)."""
    return discover_s3_entries(uri, endpoint_url).sources


def discover_s3_entries(uri: str, endpoint_url: str | None = None) -> Discovery:
    """The studies under ``uri`` (see :func:`discover_s3`), and the keys skipped with the reason.

    A study under a key that :func:`fetch` will refuse (``..``, ``//``, ...) is kept: it fails
    with the reason when a worker fetches it. Keys holding NUL are skipped here (the record cannot
    store them).
    """
    bucket, prefix = split_s3_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    try:
        listed = _keys(s3_client(endpoint_url), bucket, prefix)
    except MissingExtraError:
        raise
    except Exception as exc:
        raise StudyError(uri, f"cannot list the bucket ({exc})") from exc
    keys = [k for k in listed if "\x00" not in k]
    skipped = [(printable(f"s3://{bucket}/{k}"), "object key holds a NUL character") for k in listed if "\x00" in k]
    patients = sorted({k.rsplit("/", 1)[0] for k in keys if k.endswith("/" + INFO_FILE) or k == INFO_FILE})
    in_patient = tuple(p + "/" for p in patients)
    files = sorted(k for k in keys if k.endswith((".nii.gz", ".nii")) and not k.startswith(in_patient)
                   and not k.endswith(("_gt.nii.gz", "_gt.nii")))
    series = sorted({k.rsplit("/", 1)[0] for k in keys if k.lower().endswith(".dcm") and "/" in k} - set(patients))
    found = [f"s3://{bucket}/{p}" for p in (*patients, *series)] + [f"s3://{bucket}/{k}" for k in files]
    if not found:
        raise StudyError(uri, "no studies found (ACDC patient folders with Info.cfg, DICOM .dcm series, "
                              f"or NIfTI files){f'; skipped {len(skipped)} keys holding NUL' if skipped else ''}")
    for source in found:
        try:
            check_object_key(split_s3_uri(source)[1], where=source)
        except StudyError as exc:
            logger.warning("%s (the study will fail when fetched)", exc)
    return Discovery(found, skipped)


def _s3_target(uri: str, cache_dir: Path) -> Path:
    """Where the study ``uri`` is downloaded in ``cache_dir``; StudyError for a key that is refused."""
    bucket, key = split_s3_uri(uri)
    key = check_object_key(key.removesuffix("/"), where=uri)
    folders, _, name = key.rpartition("/")
    return inside(cache_dir, "s3", key_part(bucket), key_part(folders), name)


def fetch(uri: str, cache_dir: Path, endpoint_url: str | None = None) -> Path:
    """Download an S3 study (a patient prefix or one file) into ``cache_dir``; returns the local path.

    Every key is checked before anything is written (:func:`heartseg.paths.check_object_key`), and
    every file lands inside ``cache_dir``.

    Raises
    ------
    StudyError
        When the objects cannot be listed or downloaded (a key that is not there, no access), or a
        key (the study's or one of its objects') is refused; the message names the key.
    """
    target = _s3_target(uri, cache_dir)
    bucket, key = split_s3_uri(uri)
    key = key.removesuffix("/")
    client = s3_client(endpoint_url)
    try:
        if key.endswith((".nii.gz", ".nii")):
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
            return target
        # the prefix's own objects; a zero-byte "folder/" marker holds nothing
        keys = [k for k in _keys(client, bucket, key + "/") if k != key + "/" and "/" not in k[len(key) + 1:]]
        if not keys:
            raise StudyError(uri, "no objects under this prefix")
        files = [(k, inside(target, check_object_key(k, where=f"s3://{bucket}/{k}").rsplit("/", 1)[-1]))
                 for k in keys]
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for object_key, path in files:
            client.download_file(bucket, object_key, str(path))
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

    def discover(self, uri: str, selection: Selection) -> Discovery:
        """See :func:`discover_s3_entries`."""
        self.check_selection(uri, selection)
        return discover_s3_entries(uri, self.endpoint_url)

    def fetch(self, source: str) -> str:
        """See :func:`fetch`."""
        return str(fetch(source, self.cache_dir, self.endpoint_url))

    def release(self, source: str) -> None:
        """Delete the downloaded copy, so a cohort of thousands of studies does not fill the worker's disk.

        Only a folder or file inside the cache is ever deleted; for a refused key there is nothing
        to delete (it was never fetched), and nothing is raised.
        """
        try:
            target = _s3_target(source, self.cache_dir)
        except StudyError:
            return
        remove_copy(target)


def remove_copy(path: Path) -> None:
    """Delete a fetched study, a folder or one file."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
