"""Shared fixtures: the real ACDC cases and small NIfTI writers."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from heartseg.settings import Settings


def _acdc_root() -> Path:
    return Settings().acdc_training_dir


def require_shared(path: Path, what: str) -> Path:
    """``path`` when it exists; else skip the test locally, and fail it in CI (where the data must be)."""
    if not path.exists():
        message = f"{what} not found at {path.resolve()} (set HEARTSEG_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def acdc_root() -> Path:
    """The real ACDC training folder."""
    return require_shared(_acdc_root(), "ACDC data")


def write_nifti(path: Path, data: np.ndarray, spacing: tuple[float, ...] = (1.5, 1.5, 10.0),
                affine: np.ndarray | None = None) -> Path:
    """Write ``data`` as NIfTI with the given voxel spacing."""
    if affine is None:
        diagonal = [*spacing[:3], *([1.0] * (3 - len(spacing[:3])))]
        affine = np.diag([*diagonal, 1.0])
    image = nib.Nifti1Image(data, affine)
    image.header.set_zooms(tuple(spacing) + (1.0,) * (data.ndim - len(spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


# --- the record: a fresh PostgreSQL database per test, or a fresh SQLite file ---

POSTGRES_ADMIN_URL = os.environ.get("HEARTSEG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def new_database(admin_url: str = POSTGRES_ADMIN_URL, prefix: str = "heartseg_test") -> Iterator[str]:
    """URL of a new, empty database on the PostgreSQL server of ``admin_url``, dropped on exit (its admin
    connections are not pooled, so they survive a server restart)."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database on the real server, dropped after the test."""
    with new_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a new SQLite file."""
    return f"sqlite:///{tmp_path / 'record.db'}"


@pytest.fixture(params=["postgresql", "sqlite"])
def record_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once on PostgreSQL and once on SQLite."""
    return request.getfixturevalue("postgres_url" if request.param == "postgresql" else "sqlite_url")


# --- S3: moto server in a subprocess, over real HTTP ---


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on a free loopback port (fake credentials in the environment)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    yield url
    server.terminate()
    server.wait(10)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def upload_folder(client: object, bucket: str, prefix: str, folder: Path) -> None:
    """Upload every file under ``folder`` to ``s3://bucket/prefix/<relative path>``."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")  # type: ignore[attr-defined]
