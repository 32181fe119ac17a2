"""Studies in S3: find them under a prefix, and fetch one to a local folder to read it."""

from __future__ import annotations

import shutil
from pathlib import Path

from heartseg.errors import StudyError
from heartseg.storage import s3_client, safe_key_part, split_s3_uri
from heartseg.studies.model import Study

INFO_FILE = "Info.cfg"


def _keys(client: object, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
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
            client.download_file(bucket, key, str(target))  # type: ignore[attr-defined]
            return target
        keys = [k for k in _keys(client, bucket, key.rstrip("/") + "/") if "/" not in k[len(key) + 1:]]
        if not keys:
            raise StudyError(uri, "no objects under this prefix")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for object_key in keys:
            client.download_file(bucket, object_key, str(target / object_key.rsplit("/", 1)[-1]))  # type: ignore[attr-defined]
    except StudyError:
        raise
    except Exception as exc:
        raise StudyError(uri, f"cannot download the study ({exc})") from exc
    return target


def load_source(source: str, *, cine: bool, cache_dir: Path, endpoint_url: str | None = None,
                dicomweb_auth: str | None = None) -> Study:
    """Load a study from a local path, an ``s3://`` URI or a ``dicomweb://`` series (fetched into
    ``cache_dir`` first)."""
    from heartseg.studies import open_study
    from heartseg.studies.dicomweb import fetch_series, is_dicomweb

    if is_dicomweb(source):
        return open_study(fetch_series(source, cache_dir, auth=dicomweb_auth), cine=cine)
    if source.startswith("s3://"):
        return open_study(fetch(source, cache_dir, endpoint_url), cine=cine)
    return open_study(source, cine=cine)


def release_source(source: str, cache_dir: Path) -> None:
    """Delete the local copy of a remote study (S3 or DICOMweb) once a stage is done with it.

    A cohort of thousands of studies would otherwise fill the worker's disk; the next stage
    (often on another host) fetches its own copy. Local sources are left alone.
    """
    from heartseg.studies.dicomweb import cached_series, is_dicomweb

    if is_dicomweb(source):
        paths = [cached_series(source, cache_dir)]
    elif source.startswith("s3://"):
        paths = [_s3_target(source, cache_dir)]
    else:
        return
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
