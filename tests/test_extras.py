"""Optional dependencies (the extras): a feature used without its packages is one line naming the extra; a
worker without prometheus-client runs with its metrics off. The packages are hidden, not uninstalled
(tests/test_install.py runs a real install without them)."""

from __future__ import annotations

import logging
from importlib.machinery import ModuleSpec
from types import SimpleNamespace

import pytest

import heartseg.extras
from heartseg.errors import ConfigurationError
from heartseg.extras import MissingExtraError, require
from heartseg.sources.s3 import discover_s3_entries
from workers import celery_app, monitoring


@pytest.fixture
def hide(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Top-level modules to report as not installed (add names to the returned set)."""
    hidden: set[str] = set()
    real = heartseg.extras.find_spec

    def find_spec(name: str) -> ModuleSpec | None:
        return None if name in hidden else real(name)

    monkeypatch.setattr(heartseg.extras, "find_spec", find_spec)
    return hidden


def test_require_names_the_missing_packages_and_the_extra(hide: set[str]) -> None:
    require("segmentation", "worker", "torch", "nnunetv2")  # installed here: nothing to say
    hide.update({"nnunetv2", "dicomweb_client"})
    with pytest.raises(MissingExtraError) as missing:
        require("segmentation", "worker", "torch", "nnunetv2")
    assert str(missing.value) == "segmentation needs nnunetv2: pip install 'heartseg[worker]'"
    assert isinstance(missing.value, ConfigurationError) and missing.value.extra == "worker"
    with pytest.raises(MissingExtraError, match=r"needs dicomweb-client: pip install 'heartseg\[pacs\]'$"):
        require("a dicomweb:// source", "pacs", "dicomweb_client")


def test_s3_discovery_without_boto3_is_the_install_hint_not_a_bucket_error(hide: set[str]) -> None:
    hide.add("boto3")
    with pytest.raises(MissingExtraError) as missing:
        discover_s3_entries("s3://bucket/cohort")
    assert str(missing.value) == "s3:// storage needs boto3: pip install 'heartseg[s3]'"


def test_a_worker_without_prometheus_client_counts_nothing_and_serves_no_endpoint(
        hide: set[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    hide.add("prometheus_client")
    monkeypatch.setattr(monitoring, "ENABLED", False)
    monkeypatch.setattr(monitoring, "_metrics", None)
    monitoring.count_study("run", "done")
    monitoring.observe_stage("forward", 0.5)
    monitoring.count_frames("run", 3)
    monitoring.process_exited(12345)
    assert monitoring.metrics() is None

    monkeypatch.setattr(celery_app, "get_settings", lambda: SimpleNamespace(metrics_port=9808))
    with caplog.at_level(logging.ERROR, logger="workers.celery_app"):
        celery_app._serve_metrics()  # the worker_init handler: says why, and the worker starts
    assert "needs prometheus-client: pip install 'heartseg[monitoring]'; this worker serves no metrics" in caplog.text
