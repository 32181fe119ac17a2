"""Names and keys from outside: every path written or deleted stays under its root, and names never collide.

An S3 key with ``..`` segments fails its own study (the rest of the cohort goes on) and writes
nothing outside the cache; two patients whose names differ only in non-ASCII letters get their own
mask files; :func:`heartseg.paths.key_part` gives every name its own single path segment.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import boto3
import pytest
from sqlalchemy import select

from db.schema import Mask, Study
from db.session import open_record, session_scope
from heartseg.enums import StudyStatus
from heartseg.errors import StudyError
from heartseg.paths import check_object_key, inside, key_part
from heartseg.settings import Settings
from heartseg.sources.base import Selection
from heartseg.sources.dicomweb import cached_series
from heartseg.sources.s3 import S3Source, discover_s3, fetch
from heartseg.storage import LocalStore, StorageError, mask_key, seg_key
from scheduler.submit import submit_sources
from tests.bad_input import changed_outside, snapshot
from tests.conftest import upload_folder
from tests.phantom_cache import write_cohort
from tests.test_models import fake_model
from tests.test_pipeline_stages import Oracle
from workers.pipeline import ModelInfo, evaluate_stage, segment_stage
from workers.stage_context import StageContext

#: From ``<cache>/<bucket>/cohort``, four levels up is ``tmp_path``: the key aims at ``tmp_path/outside``.
ESCAPING = "cohort/../../../../outside"


@pytest.fixture
def hostile_bucket(s3_endpoint: str, tmp_path: Path) -> str:
    """A bucket with a good study ``cohort/phantom001`` and a study under keys that climb out of the cache."""
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    name = f"hostile-{tmp_path.name.lower().replace('_', '-')[-40:]}".rstrip("-")
    client.create_bucket(Bucket=name)
    local = tmp_path / "local"
    write_cohort(local, 2, seed=21)
    upload_folder(client, name, "cohort/phantom001", local / "phantom001")
    (local / "outside").mkdir()
    for path in sorted((local / "phantom002").iterdir()):
        renamed = path.name.replace("phantom002", "outside")
        path.rename(local / "outside" / renamed)
        client.upload_file(str(local / "outside" / renamed), name, f"{ESCAPING}/{renamed}")
    (local / "phantom002").rmdir()
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=name, Prefix="cohort/")["Contents"]]
    assert f"{ESCAPING}/Info.cfg" in keys, "the S3 server normalised the key: this test would prove nothing"
    return name


def test_s3_keys_climbing_out_of_the_cache_fail_their_study_only(hostile_bucket: str, s3_endpoint: str,
                                                                tmp_path: Path) -> None:
    sentinel = tmp_path / "outside" / "keep.txt"
    sentinel.parent.mkdir()
    sentinel.write_text("not yours")
    work = tmp_path / "work"
    cache, results, record = work / "cache", work / "results", tmp_path / "record"
    record.mkdir()
    engine = open_record(f"sqlite:///{record / 'record.db'}")
    model_dir = fake_model(tmp_path / "models")
    settings = Settings(trusted_model_roots=[tmp_path / "models"], s3_endpoint_url=s3_endpoint, cache_dir=cache)

    sources = discover_s3(f"s3://{hostile_bucket}/cohort", s3_endpoint)
    # discovery keeps going: the bad key becomes a study of its own, which fails with the reason
    assert sources == [f"s3://{hostile_bucket}/{ESCAPING}", f"s3://{hostile_bucket}/cohort/phantom001"]
    submission = submit_sources(engine, settings, name="hostile", source_uri=f"s3://{hostile_bucket}/cohort",
                                sources=sources, model_dir=model_dir)
    ctx = StageContext(engine, LocalStore(results), settings)
    oracle = Oracle([tmp_path / "local" / "phantom001", tmp_path / "local" / "outside"])
    before = snapshot(tmp_path)
    for study_id in submission.study_ids:
        if segment_stage(ctx, study_id, ModelInfo(submission.fingerprint, oracle), worker="t"):
            evaluate_stage(ctx, study_id)
    after = snapshot(tmp_path)

    assert changed_outside(before, after, [cache, results, record]) == []
    assert sentinel.read_text() == "not yours" and sorted(sentinel.parent.iterdir()) == [sentinel]
    with session_scope(engine) as session:
        rows = {r.source_uri: r for r in session.execute(select(Study)).scalars()}
        bad, good = rows[sources[0]], rows[sources[1]]
        assert good.status == StudyStatus.DONE
        assert bad.status == StudyStatus.FAILED and bad.attempts == 1
        assert f"s3://{hostile_bucket}/{ESCAPING}" in (bad.error or "") and "'..'" in (bad.error or "")
        assert all(Path(uri).is_relative_to(results.resolve()) for uri in session.scalars(select(Mask.uri)))
    assert not [p for p in cache.rglob("*") if p.is_file()]
    engine.dispose()


def test_s3_fetch_and_release_of_a_climbing_key_touch_nothing(hostile_bucket: str, s3_endpoint: str,
                                                             tmp_path: Path) -> None:
    cache = tmp_path / "work" / "cache"
    cache.mkdir(parents=True)
    sentinel = tmp_path / "outside" / "keep.txt"
    sentinel.parent.mkdir()
    sentinel.write_text("not yours")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.put_object(Bucket=hostile_bucket, Key=f"{ESCAPING}.nii.gz", Body=b"x")
    before = snapshot(tmp_path)
    source = S3Source(cache, s3_endpoint)
    for uri in (f"s3://{hostile_bucket}/{ESCAPING}", f"s3://{hostile_bucket}/{ESCAPING}.nii.gz"):
        with pytest.raises(StudyError, match=r"outside(\.nii\.gz)?: object key has a '\.\.' or '\.' segment"):
            fetch(uri, cache, s3_endpoint)
        source.release(uri)  # nothing was fetched: nothing to delete, and no error
    assert changed_outside(before, snapshot(tmp_path), []) == []
    # a good study still lands in the cache, in a folder of its own name
    local = Path(source.fetch(f"s3://{hostile_bucket}/cohort/phantom001"))
    assert local.name == "phantom001" and local.is_relative_to(cache.resolve()) and (local / "Info.cfg").is_file()
    source.release(f"s3://{hostile_bucket}/cohort/phantom001")
    assert not local.exists() and sentinel.read_text() == "not yours"


def test_s3_study_holding_an_unsafe_object_fails_naming_it(hostile_bucket: str, s3_endpoint: str,
                                                           tmp_path: Path) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.put_object(Bucket=hostile_bucket, Key="cohort/phantom001/..\\..\\evil.nii.gz", Body=b"x")
    with pytest.raises(StudyError, match=r"evil\.nii\.gz: object key holds a backslash"):
        fetch(f"s3://{hostile_bucket}/cohort/phantom001", tmp_path / "cache", s3_endpoint)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_s3_discovery_keeps_unsafe_keys_as_studies_and_skips_nul(hostile_bucket: str, s3_endpoint: str,
                                                                 tmp_path: Path) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for key in ("cohort//double.nii.gz", "cohort/nul\x00.nii.gz", "nul-only/a\x00.nii.gz"):
        client.put_object(Bucket=hostile_bucket, Key=key, Body=b"x")
    discovery = S3Source(tmp_path / "cache", s3_endpoint).discover(f"s3://{hostile_bucket}/cohort", Selection())
    assert discovery.sources == [f"s3://{hostile_bucket}/{ESCAPING}", f"s3://{hostile_bucket}/cohort/phantom001",
                                 f"s3://{hostile_bucket}/cohort//double.nii.gz"]
    assert discovery.skipped == [(f"s3://{hostile_bucket}/cohort/nul\\x00.nii.gz", "object key holds a NUL character")]
    with pytest.raises(StudyError, match=r"cohort//double\.nii\.gz: object key has an empty segment"):
        fetch(discovery.sources[2], tmp_path / "cache", s3_endpoint)
    with pytest.raises(StudyError, match=r"no studies found .* skipped 1 keys holding NUL"):
        discover_s3(f"s3://{hostile_bucket}/nul-only", s3_endpoint)


def test_patients_differing_only_in_non_ascii_letters_get_their_own_masks(tmp_path: Path) -> None:
    local = tmp_path / "cohort"
    write_cohort(local, 1, seed=5, prefix="Müller")
    write_cohort(local, 1, seed=6, prefix="Möller")
    folders = sorted(local.iterdir())
    assert [f.name for f in folders] == ["Möller001", "Müller001"]
    engine = open_record(f"sqlite:///{tmp_path / 'record.db'}")
    model_dir = fake_model(tmp_path / "models")
    settings = Settings(trusted_model_roots=[tmp_path / "models"])
    run = "../../etc"
    submission = submit_sources(engine, settings, name=run, source_uri=str(local),
                                sources=[str(f) for f in folders], model_dir=model_dir)
    ctx = StageContext(engine, LocalStore(tmp_path / "work" / "results"), settings)
    model = ModelInfo(submission.fingerprint, Oracle(folders))
    # every study segmented before any is evaluated: a shared mask file would be overwritten by then
    assert all(segment_stage(ctx, study_id, model, worker="t") for study_id in submission.study_ids)
    for study_id in submission.study_ids:
        evaluate_stage(ctx, study_id)

    with session_scope(engine) as session:
        statuses = dict(session.execute(select(Study.patient_id, Study.status)).all())
        assert statuses == {"Möller001": StudyStatus.DONE, "Müller001": StudyStatus.DONE}
        rows = session.execute(select(Study.patient_id, Mask.uri, Mask.sha256)
                               .join(Mask, Mask.study_id == Study.id)).all()
    uris = {patient: {uri for p, uri, _ in rows if p == patient} for patient in statuses}
    assert len(rows) == 4 and not uris["Möller001"] & uris["Müller001"]
    run_folder = (tmp_path / "work" / "results" / "masks" / submission.fingerprint[:16] / key_part(run)).resolve()
    for patient, uri, sha256 in rows:
        path = Path(uri)
        assert path.parent == run_folder / key_part(patient)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256, f"{uri} is not the mask recorded"
    engine.dispose()


NAMES = ["患者", "山田太郎", "山田花子", "../../etc", "etc", "..", ".", "", "...", ".hidden", "hidden",
         "it's", 'say "hi"', "a b", "a_b", "a/b", "a\\b", "a~b", "a\x00b", "\n", "x" * 300, "x" * 301,
         "Müller", "Möller", "Muller", "M_ller", "1.2.840.113619.2.55", "patient001", "-rf"]


def test_key_part_gives_each_name_its_own_single_segment() -> None:
    parts = [key_part(name) for name in NAMES]
    assert len(set(parts)) == len(NAMES), "two names share a path segment"
    for name, part in zip(NAMES, parts, strict=True):
        assert part not in ("", ".", "..") and "/" not in part and "\\" not in part and "\x00" not in part
        assert Path(part).name == part and len(part.encode()) <= 100, part
        assert key_part(name) == part
    # plain names stay readable as they are; others keep their safe letters before "~" and the hash
    for plain in ("etc", "patient001", "1.2.840.113619.2.55", "a_b", "-rf", "M_ller"):
        assert key_part(plain) == plain
    assert key_part("Müller").startswith("Muller~") and key_part("../../etc").startswith("etc~")
    assert key_part("../../etc")[-12:] == hashlib.sha256(b"../../etc").hexdigest()[:12]


def test_mask_and_seg_keys_have_one_segment_per_name() -> None:
    key = mask_key("f" * 64, "../../etc", "../x", 1)
    assert key.split("/")[:2] == ["masks", "f" * 16] and len(key.split("/")) == 5
    assert ".." not in key.split("/") and key.split("/")[2] == key_part("../../etc")
    assert seg_key("f" * 64, "run", "Müller", 3).endswith(f"/{key_part('Müller')}_frame03_seg.dcm")
    assert mask_key("f" * 64, "r", "Müller", 1) != mask_key("f" * 64, "r", "Möller", 1)


@pytest.mark.parametrize("key", ["a/../b", "../a", "a/..", "a/./b", "./a", "/a", "a//b", "a/", "a\\b", "a\x00b",
                                 "cohort/../../../../outside/Info.cfg", ""])
def test_check_object_key_refuses(key: str) -> None:
    with pytest.raises(StudyError) as raised:
        check_object_key(key)
    assert "\x00" not in str(raised.value) and (not key or key.replace("\x00", "\\x00") in str(raised.value))


@pytest.mark.parametrize("key", ["a", "a/b.nii.gz", "studies/acdc/patient001/Info.cfg", "a/..b/c..", "a/.x", "患者/x"])
def test_check_object_key_accepts(key: str) -> None:
    assert check_object_key(key) == key


def test_inside_refuses_paths_leaving_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert inside(root, "a", "b") == root.resolve() / "a" / "b"
    assert inside(root, "a/../b") == root.resolve() / "b"
    for parts in [("..",), ("a", "..", "..", "x"), ("/etc",), ("link", "x"), ("",), (".",), ("a\x00",)]:
        with pytest.raises(StudyError, match=str(root.resolve())):
            inside(root, *parts)


def test_local_store_writes_only_under_its_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "results")
    assert Path(store.put("masks/a/b.bin", b"1")).is_relative_to((tmp_path / "results").resolve())
    for key in ("../escaped.bin", "masks/../../escaped.bin", str(tmp_path / "absolute.bin")):
        with pytest.raises(StorageError, match="not inside"):
            store.put(key, b"2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_dicomweb_cache_folders_are_distinct_and_inside(tmp_path: Path) -> None:
    base = "dicomweb://127.0.0.1:8042/dicom-web/studies/1.2"
    folders = [cached_series(f"{base}/series/{uid}", tmp_path / "cache") for uid in ("..", "...", "1.2.3", ".")]
    assert len(set(folders)) == 4
    assert all(f.parent == (tmp_path / "cache" / "dicomweb").resolve() for f in folders)
    assert folders[2].name == "1.2.3"
