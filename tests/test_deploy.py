"""The Dockerfile and the Kubernetes manifests: valid offline, and in step with the code.

pytest -q tests/test_deploy.py   # the kubectl and hadolint parts skip where the tool is absent
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
TARGETS = ("base", "overlays/gpu", "overlays/cpu")
SECRET_NAME = "ctr-redis-auth"
NAME = "din-serving"
SERVING_STAGES = {"serve-gpu": "-gpu", "serve-cpu": "-cpu"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
SHARED_WITH_EXPORTER = ("CTR_REDIS_URL", "CTR_REDIS_CLUSTER", "CTR_NAMESPACE")

Manifest = dict[str, Any]


# ---------------------------------------------------------------- loading


def read_yaml(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def read_env_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def generated_config_map(folder: Path, generator: dict) -> Manifest:
    data: dict[str, str] = {}
    for name in generator.get("envs", []):
        data |= read_env_file(folder / name)
    data |= dict(literal.split("=", 1) for literal in generator.get("literals", []))
    metadata = {"name": generator["name"]}
    if labels := generator.get("options", {}).get("labels"):
        metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def kustomization(folder: Path) -> Manifest:
    return read_yaml((folder / "kustomization.yaml").read_text())[0]


def load_base() -> list[Manifest]:
    """The base as kustomize emits it, less the name hashes and the common labels."""
    folder = K8S / "base"
    spec = kustomization(folder)
    objects = [doc for name in spec["resources"] for doc in read_yaml((folder / name).read_text())]
    generated = [generated_config_map(folder, g) for g in spec.get("configMapGenerator", [])]
    return objects + generated


@functools.cache
def kustomize(target: str) -> tuple[Manifest, ...]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH; the rendered overlays are checked where it is")
    command = ["kubectl", "kustomize", str(K8S / target)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return tuple(read_yaml(done.stdout))


def render(target: str) -> tuple[Manifest, ...]:
    return tuple(load_base()) if target == "base" else kustomize(target)


@pytest.fixture(params=TARGETS, ids=lambda target: target.removeprefix("overlays/"))
def manifests(request) -> tuple[Manifest, ...]:
    return render(request.param)


# ---------------------------------------------------------------- navigating objects


def of_kind(objects, kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def component(obj: Manifest) -> str | None:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def pod_template(workload: Manifest) -> Manifest:
    spec = workload["spec"]
    return (
        spec["jobTemplate"]["spec"]["template"]
        if workload["kind"] == "CronJob"
        else spec["template"]
    )


def workloads(objects) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]


def the_server(objects) -> Manifest:
    [server] = [d for d in of_kind(objects, "Deployment") if component(d) == "server"]
    return server


def exporters(objects) -> list[Manifest]:
    found = [w for w in workloads(objects) if component(w) == "exporter"]
    assert {w["kind"] for w in found} == {"Job", "CronJob"}
    return found


def only_container(workload: Manifest) -> Manifest:
    [container] = pod_template(workload)["spec"]["containers"]
    return container


def all_containers(objects) -> Iterator[tuple[Manifest, Manifest, Manifest]]:
    for workload in workloads(objects):
        spec = pod_template(workload)["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield workload, spec, container


def effective_env(objects, container: Manifest) -> dict[str, str | None]:
    """What the process sees: envFrom ConfigMaps, then env (valueFrom entries map to None)."""
    config_maps = {
        cm["metadata"]["name"]: cm.get("data", {}) for cm in of_kind(objects, "ConfigMap")
    }
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        env |= config_maps[source["configMapRef"]["name"]]
    env |= {item["name"]: item.get("value") for item in container.get("env", [])}
    return env


def server_env(objects) -> dict[str, str | None]:
    return effective_env(objects, only_container(the_server(objects)))


def command_line(container: Manifest) -> list[str]:
    return [str(word) for word in container.get("command", []) + container.get("args", [])]


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    return all(matches(expr, labels) for expr in selector.get("matchExpressions", []))


def matches(expression: Manifest, labels: dict[str, str]) -> bool:
    value, operator = labels.get(expression["key"]), expression["operator"]
    if operator in ("In", "NotIn"):
        return (value in expression["values"]) == (operator == "In")
    return (value is not None) == (operator == "Exists")


def pod_labels(workload: Manifest) -> dict[str, str]:
    return pod_template(workload)["metadata"]["labels"]


def gpu_limit(container: Manifest) -> str | None:
    limit = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    return None if limit is None else str(limit)


# ---------------------------------------------------------------- the application side


@functools.cache
def the_app():
    from app.main import create_app

    return create_app()


def app_answers_get(path: str) -> bool:
    """Whether the app routes a GET on path, as the kubelet and Prometheus send it."""
    from starlette.routing import Match

    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in the_app().routes)


def settings_fields() -> dict[str, Any]:
    from app.config import Settings

    return dict(Settings.model_fields)


def all_settings_fields() -> dict[str, Any]:
    """The service's and the ingest worker's settings: both read the same CTR_ variables."""
    from ingest.config import IngestSettings

    return settings_fields() | dict(IngestSettings.model_fields)


def is_secret(field) -> bool:
    return "SecretStr" in str(field.annotation)


def env_name(field_name: str) -> str:
    return f"CTR_{field_name.upper()}"


# ---------------------------------------------------------------- the Dockerfile


@functools.cache
def dockerfile() -> tuple[dict[str, str], dict[str, list[tuple[str, str]]]]:
    """(global ARG defaults, stage name -> [(INSTRUCTION, rest)]), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = rest.split()
            current = words[-1] if len(words) == 3 and words[1].upper() == "AS" else words[0]
            stages[current] = [("FROM", words[0])]
        elif current is None and instruction == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        elif current is not None:
            stages[current].append((instruction, rest.strip()))
    return args, stages


def instructions(stage: str, name: str) -> list[str]:
    return [rest for instruction, rest in dockerfile()[1][stage] if instruction == name]


def base_image(stage: str) -> str:
    args, _ = dockerfile()
    image = instructions(stage, "FROM")[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)


def builder_of(stage: str) -> str:
    [source] = re.findall(r"--from=(\S+) /opt/venv", " ".join(instructions(stage, "COPY")))
    return source


def uvicorn_port(stage: str) -> int:
    [cmd] = instructions(stage, "CMD")
    return int(option(json.loads(cmd), "--port"))


def hadolint_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)


# ---------------------------------------------------------------- schema validation


def test_manifests_pass_the_kubernetes_schemas_in_strict_mode(manifests):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    errors = []
    for obj in manifests:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} {where}: {error.message}")
    assert not errors, "\n".join(errors)


def test_overlay_patches_name_objects_of_the_base():
    base = {(obj["kind"], obj["metadata"]["name"]) for obj in load_base()}
    for overlay in TARGETS[1:]:
        for patch in kustomization(K8S / overlay).get("patches", []):
            [target] = read_yaml((K8S / overlay / patch["path"]).read_text())
            assert (target["kind"], target["metadata"]["name"]) in base, patch["path"]


def test_the_default_install_is_the_gpu_overlay():
    assert kustomize(".") == kustomize("overlays/gpu")


# ---------------------------------------------------------------- the service contract


def test_probes_and_scrape_path_are_routes_of_the_app(manifests):
    server = the_server(manifests)
    container = only_container(server)
    probes = {kind: container[kind]["httpGet"]["path"] for kind in PROBES}
    assert probes["readinessProbe"] == "/readyz"
    assert probes["livenessProbe"] == "/healthz"
    scrape = pod_template(server)["metadata"]["annotations"]["prometheus.io/path"]
    unrouted = {path for path in {*probes.values(), scrape} if not app_answers_get(path)}
    assert not unrouted, f"app.main.create_app() has no GET route for {sorted(unrouted)}"


def test_container_port_is_the_port_uvicorn_binds(manifests):
    server = the_server(manifests)
    container = only_container(server)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert int(option(command_line(container), "--port")) == ports["http"]
    assert {container[kind]["httpGet"]["port"] for kind in PROBES} <= set(ports)
    annotations = pod_template(server)["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    [service] = [s for s in of_kind(manifests, "Service") if component(s) == "server"]
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= set(ports)


@pytest.mark.parametrize("stage", SERVING_STAGES)
def test_image_exposes_and_checks_the_port_its_command_binds(stage):
    port = uvicorn_port(stage)
    assert instructions(stage, "EXPOSE") == [str(port)]
    assert f"127.0.0.1:{port}/healthz" in instructions(stage, "HEALTHCHECK")[0]
    deployment_port = only_container(the_server(load_base()))["ports"][0]["containerPort"]
    assert port == deployment_port


@pytest.mark.parametrize("stage", SERVING_STAGES)
def test_deployment_runs_the_command_the_image_runs(stage):
    [cmd] = instructions(stage, "CMD")
    assert command_line(only_container(the_server(load_base()))) == json.loads(cmd)


def test_every_ctr_variable_is_a_settings_field(manifests):
    fields = all_settings_fields() | {"train_nodes": None}
    names = {name for cm in of_kind(manifests, "ConfigMap") for name in cm.get("data", {})}
    for _, _, container in all_containers(manifests):
        names |= set(effective_env(manifests, container))
    unknown = {n for n in names if n.startswith("CTR_") and n[4:].lower() not in fields}
    assert not unknown, f"no such field in app/config.py Settings: {sorted(unknown)}"


def test_config_map_sets_every_setting_except_an_inline_password(manifests):
    env = server_env(manifests)
    expected = {env_name(name) for name, field in settings_fields().items() if not is_secret(field)}
    missing = expected - set(env)
    assert not missing, f"add to k8s/base/config.env: {sorted(missing)}"


def test_every_required_setting_is_provided(manifests):
    required = {env_name(name) for name, field in settings_fields().items() if field.is_required()}
    assert required <= set(server_env(manifests))


def test_configured_values_parse_as_settings(manifests, monkeypatch):
    from app.config import Settings

    for name in [name for name in os.environ if name.startswith("CTR_")]:
        monkeypatch.delenv(name)
    for name, value in server_env(manifests).items():
        if value is not None:
            monkeypatch.setenv(name, value)
    Settings()


def test_exporter_reads_the_redis_and_namespace_the_server_reads(manifests):
    server = server_env(manifests)
    for exporter in exporters(manifests):
        env = effective_env(manifests, only_container(exporter))
        for name in (*SHARED_WITH_EXPORTER, "CTR_REDIS_PASSWORD_FILE"):
            assert env.get(name) == server[name], f"{exporter['metadata']['name']}: {name}"


def test_redis_url_names_the_in_cluster_redis_service(manifests):
    url = urlsplit(server_env(manifests)["CTR_REDIS_URL"])
    [statefulset] = of_kind(manifests, "StatefulSet")
    service = next(
        s for s in of_kind(manifests, "Service") if s["metadata"]["name"] == url.hostname
    )
    assert service["spec"]["clusterIP"] == "None"
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(statefulset))
    assert url.port in {port["port"] for port in service["spec"]["ports"]}
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]


# ---------------------------------------------------------------- labels and selectors


def test_selectors_match_the_pods_they_manage(manifests):
    for workload in of_kind(manifests, "Deployment") + of_kind(manifests, "StatefulSet"):
        assert selects(workload["spec"]["selector"], pod_labels(workload)), workload["metadata"]
    for workload in workloads(manifests):
        labels = pod_labels(workload)
        assert labels["app.kubernetes.io/name"] == NAME
        assert labels["app.kubernetes.io/component"] == component(workload)


def test_each_service_selects_exactly_one_workload(manifests):
    for service in of_kind(manifests, "Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        chosen = [w for w in workloads(manifests) if selects(selector, pod_labels(w))]
        assert len(chosen) == 1, service["metadata"]["name"]


def test_autoscaler_and_disruption_budget_target_the_server(manifests):
    server = the_server(manifests)
    [hpa] = of_kind(manifests, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert target["name"] == server["metadata"]["name"]
    assert "replicas" not in server["spec"], "the HPA owns the replica count"
    [pdb] = of_kind(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == server["spec"]["selector"]
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]


def test_server_spreads_over_zones_and_nodes(manifests):
    server = the_server(manifests)
    constraints = pod_template(server)["spec"]["topologySpreadConstraints"]
    keys = {c["topologyKey"] for c in constraints}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert all(selects(c["labelSelector"], pod_labels(server)) for c in constraints)


def test_network_policy_admits_only_server_and_exporter_pods_to_redis(manifests):
    [policy] = of_kind(manifests, "NetworkPolicy")
    [redis] = of_kind(manifests, "StatefulSet")
    assert selects(policy["spec"]["podSelector"], pod_labels(redis))
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert all(set(peer) == {"podSelector"} for peer in peers), "no namespace or IP peers"
    admitted = {
        (w["kind"], w["metadata"]["name"])
        for w in workloads(manifests)
        if any(selects(peer["podSelector"], pod_labels(w)) for peer in peers)
    }
    expected = {(w["kind"], w["metadata"]["name"]) for w in [the_server(manifests)]}
    expected |= {(w["kind"], w["metadata"]["name"]) for w in exporters(manifests)}
    expected |= {("Deployment", "ctr-ingest")}
    assert admitted == expected
    redis_port = only_container(redis)["ports"][0]["containerPort"]
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == {redis_port}


def test_exporter_job_and_cronjob_run_the_same_pod(manifests):
    job, cronjob = sorted(exporters(manifests), key=lambda w: w["kind"] == "CronJob")
    assert pod_template(job) == pod_template(cronjob)


# ---------------------------------------------------------------- pod hardening


def test_every_container_is_locked_down(manifests):
    problems = []
    for workload, spec, container in all_containers(manifests):
        where = f"{workload['metadata']['name']}/{container['name']}"
        problems += [f"{where}: {p}" for p in lockdown_problems(spec, container)]
    assert not problems, "\n".join(problems)


def lockdown_problems(spec: Manifest, container: Manifest) -> list[str]:
    pod, own = spec.get("securityContext", {}), container.get("securityContext", {})
    merged = pod | own
    checks = {
        "runAsNonRoot": merged.get("runAsNonRoot") is True,
        "seccompProfile RuntimeDefault": merged.get("seccompProfile") == {"type": "RuntimeDefault"},
        "allowPrivilegeEscalation false": own.get("allowPrivilegeEscalation") is False,
        "readOnlyRootFilesystem": own.get("readOnlyRootFilesystem") is True,
        "drop ALL capabilities": own.get("capabilities", {}).get("drop") == ["ALL"],
        "emptyDir on /tmp": "/tmp" in empty_dir_mounts(spec, container),
        "cpu and memory requests": {"cpu", "memory"} <= set(requests_of(container)),
        "memory limit": "memory" in container.get("resources", {}).get("limits", {}),
        "no service account token": spec.get("automountServiceAccountToken") is False,
        # Service links would add CTR_<SERVICE>_* variables under the settings prefix.
        "no service links": spec.get("enableServiceLinks") is False,
    }
    return [name for name, ok in checks.items() if not ok]


def empty_dir_mounts(spec: Manifest, container: Manifest) -> set[str]:
    empty = {volume["name"] for volume in spec.get("volumes", []) if "emptyDir" in volume}
    return {m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in empty}


def requests_of(container: Manifest) -> dict:
    return container.get("resources", {}).get("requests", {})


def test_server_drains_before_the_grace_period_ends(manifests):
    server = the_server(manifests)
    container = only_container(server)
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    graceful = int(option(command_line(container), "--timeout-graceful-shutdown"))
    assert pod_template(server)["spec"]["terminationGracePeriodSeconds"] > sleep + graceful


def test_redis_password_is_a_file_from_the_secret(manifests):
    for workload, spec, container in all_containers(manifests):
        env = effective_env(manifests, container)
        plain = [e for e in container.get("env", []) if "PASSWORD" in e["name"] and "value" in e]
        assert not [e for e in plain if not e["name"].endswith("_FILE")], workload["metadata"]
        if component(workload) == "redis":
            assert secret_mounts(spec, container), "redis reads its password from the Secret"
            continue
        path = PurePosixPath(env["CTR_REDIS_PASSWORD_FILE"])
        assert str(path.parent) in secret_mounts(spec, container), workload["metadata"]["name"]


def secret_mounts(spec: Manifest, container: Manifest) -> set[str]:
    secrets = {
        volume["name"]
        for volume in spec.get("volumes", [])
        if volume.get("secret", {}).get("secretName") == SECRET_NAME
    }
    return {m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in secrets}


# ---------------------------------------------------------------- overlays


def test_overlay_images_name_images_the_base_runs():
    used = {c["image"].partition(":")[0] for _, _, c in all_containers(load_base())}
    for overlay in TARGETS[1:]:
        renamed = {image["name"] for image in kustomization(K8S / overlay).get("images", [])}
        assert renamed <= used, f"{overlay}: kustomize would ignore {sorted(renamed - used)}"


@pytest.mark.parametrize("target", ["overlays/gpu", "overlays/cpu"])
def test_overlays_pin_every_image_tag(target):
    for _, _, container in all_containers(kustomize(target)):
        image = container["image"]
        tag = image.rpartition("/")[2].partition(":")[2]
        assert tag and tag != "latest", image


def test_gpu_overlay_gives_each_server_pod_one_gpu():
    objects = kustomize("overlays/gpu")
    server = the_server(objects)
    spec, container = pod_template(server)["spec"], only_container(server)
    assert gpu_limit(container) == "1"
    assert server_env(objects)["CTR_DEVICE"] in {"cuda", "auto"}
    assert "nvidia.com/gpu" in {t["key"] for t in spec["tolerations"]}
    assert any(key.startswith("nvidia.com/gpu") for key in spec["nodeSelector"])
    assert container["image"].endswith(SERVING_STAGES["serve-gpu"])


def test_cpu_overlay_asks_for_no_gpu():
    objects = kustomize("overlays/cpu")
    server = the_server(objects)
    assert server_env(objects)["CTR_DEVICE"] == "cpu"
    assert all(gpu_limit(container) is None for _, _, container in all_containers(objects))
    assert "tolerations" not in pod_template(server)["spec"]
    assert only_container(server)["image"].endswith(SERVING_STAGES["serve-cpu"])


def test_only_the_gpu_server_asks_for_a_gpu():
    objects = kustomize("overlays/gpu")
    asking = {w["metadata"]["name"] for w, _, c in all_containers(objects) if gpu_limit(c)}
    assert asking == {the_server(objects)["metadata"]["name"]}


# ---------------------------------------------------------------- the Dockerfile


def image_uid() -> int:
    users = {instructions(stage, "USER")[-1] for stage in [*SERVING_STAGES, "exporter"]}
    [user] = users
    return int(user.partition(":")[0])


def test_images_run_as_a_numeric_non_root_user():
    for stage in [*SERVING_STAGES, "exporter"]:
        user = instructions(stage, "USER")[-1]
        assert re.fullmatch(r"\d+(:\d+)?", user), stage
        assert int(user.partition(":")[0]) != 0


def test_server_and_exporter_run_as_the_image_user():
    objects = load_base()
    for workload in [the_server(objects), *exporters(objects)]:
        assert pod_template(workload)["spec"]["securityContext"]["runAsUser"] == image_uid()


def test_base_images_are_pinned():
    _, stages = dockerfile()
    for stage in stages:
        image = base_image(stage)
        if image in stages:
            continue
        tag = image.partition(":")[2]
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{stage}: pin {image} to a full version"


def test_gpu_image_runs_on_cuda_13_with_cudnn():
    root = base_image("serve-gpu")
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base_image(root))


@pytest.mark.parametrize("stage", SERVING_STAGES)
def test_serving_images_install_the_serve_lock_and_no_torch(stage):
    installs = [run for run in instructions(builder_of(stage), "RUN") if "pip install" in run]
    assert any("--require-hashes" in run and "-r serve.txt" in run for run in installs)
    assert not any("export" in run or "torch" in run for run in installs)
    locked = (ROOT / "requirements" / "serve.txt").read_text()
    assert "onnxruntime" in locked and "\ntorch==" not in locked


def test_exporter_image_installs_the_export_lock():
    installs = [run for run in instructions(builder_of("exporter"), "RUN") if "pip install" in run]
    assert any("--require-hashes" in run and "-r export.txt" in run for run in installs)
    assert "\ntorch==" in (ROOT / "requirements" / "export.txt").read_text()


def test_plain_build_gives_the_gpu_serving_image():
    assert list(dockerfile()[1])[-1] == "serve-gpu"


def test_dockerfile_passes_hadolint():
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed")
    done = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


# ---------------------------------------------------------------- no secret in the repository

# A value that is a reference ($VAR, $(cmd), ${VAR}), a placeholder (<password>) or elided
# (...) is not a secret; anything else after these keys is.
REFERENCE = r"""(?!["']?[$<{%.])"""
TEXT_PATTERNS = [
    re.compile(rf"requirepass\s+{REFERENCE}\S", re.IGNORECASE),
    re.compile(rf"""CTR_REDIS_PASSWORD\s*[=:]\s*{REFERENCE}[^\s"']"""),
    re.compile(rf"""rediss?://[^\s:/@"']*:{REFERENCE}[^\s@/"']+@""", re.IGNORECASE),
    re.compile(rf"from-literal=password={REFERENCE}\S", re.IGNORECASE),
]
CONFIG_PATTERN = re.compile(
    rf"^\s*-?\s*(?:password|requirepass)\s*:\s*{REFERENCE}[^\s#]", re.IGNORECASE | re.MULTILINE
)
CONFIG_SUFFIXES = {".yaml", ".yml", ".env", ".conf", ".ini", ".toml", ".json"}


def secret_findings(text: str, suffix: str) -> list[str]:
    patterns = TEXT_PATTERNS + ([CONFIG_PATTERN] if suffix in CONFIG_SUFFIXES else [])
    return [match.group(0) for pattern in patterns for match in pattern.finditer(text)]


def repository_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    command = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / name for name in done.stdout.split("\0") if name]


@pytest.mark.parametrize(
    "text",
    [
        "requirepass hunter2",
        "CTR_REDIS_PASSWORD=hunter2",
        "CTR_REDIS_URL=rediss://default:hunter2@redis.example.com:6380/0",
        "kubectl create secret generic ctr-redis-auth --from-literal=password=hunter2",
    ],
)
def test_secret_scan_flags_a_literal_password(text):
    assert secret_findings(text, ".md")


@pytest.mark.parametrize(
    "text",
    [
        'requirepass "$(cat /etc/redis-auth/password)"',
        "CTR_REDIS_PASSWORD_FILE=/etc/ctr/redis/password",
        "CTR_REDIS_URL=rediss://redis.example.com:6380/0",
        'kubectl create secret generic x --from-literal=password="$(openssl rand -hex 32)"',
    ],
)
def test_secret_scan_passes_references(text):
    assert not secret_findings(text, ".yaml")


def test_repository_holds_no_literal_password():
    findings = []
    for path in repository_files():
        relative = path.relative_to(ROOT)
        # Tests may give a throwaway password to the redis-server they start themselves.
        if relative.parts[0] == "tests" or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        findings += [f"{relative}: {hit}" for hit in secret_findings(text, path.suffix)]
    assert not findings, "\n".join(findings)


def test_k8s_holds_no_secret_object_or_generator():
    for path in K8S.rglob("*.y*ml"):
        for doc in read_yaml(path.read_text()):
            assert doc.get("kind") != "Secret", f"{path.relative_to(ROOT)}: create it with kubectl"
            assert "secretGenerator" not in doc, path.relative_to(ROOT)


def test_rendered_manifests_reference_the_secret_without_holding_it(manifests):
    assert not of_kind(manifests, "Secret")
    mounted = {
        volume["secret"]["secretName"]
        for workload in workloads(manifests)
        for volume in pod_template(workload)["spec"].get("volumes", [])
        if "secret" in volume
    }
    assert mounted == {SECRET_NAME}


# ---------------------------------------------------------------- multi-node training


def load_training() -> list[Manifest]:
    folder = K8S / "training"
    spec = kustomization(folder)
    objects = [doc for name in spec["resources"] for doc in read_yaml((folder / name).read_text())]
    return objects + [generated_config_map(folder, g) for g in spec["configMapGenerator"]]


def test_training_manifests_pass_the_kubernetes_schemas_and_are_locked_down():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    objects = load_training()
    for obj in objects:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    problems = [p for _, spec, c in all_containers(objects) for p in lockdown_problems(spec, c)]
    assert not problems


def test_training_job_runs_one_torchrun_node_per_pod_rendezvousing_on_pod_zero():
    objects = load_training()
    [job], [service] = of_kind(objects, "Job"), of_kind(objects, "Service")
    spec, container = job["spec"], only_container(job)
    nodes = int(effective_env(objects, container)["CTR_TRAIN_NODES"])
    assert (
        spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == nodes
    )
    assert spec["backoffLimit"] == 0
    script = command_line(container)[-1]
    assert (
        '--nnodes "$CTR_TRAIN_NODES"' in script and '--node-rank "$JOB_COMPLETION_INDEX"' in script
    )
    name, pod_spec = job["metadata"]["name"], pod_template(job)["spec"]
    assert (
        pod_spec["subdomain"] == service["metadata"]["name"]
        and service["spec"]["clusterIP"] == "None"
    )
    assert f"--master-addr {name}-0.{service['metadata']['name']}" in script
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(job))
    assert "ctr-export publish" in script.split("torchrun")[1]  # after training, on pod 0


def test_the_network_policy_admits_the_training_pods_to_redis():
    [policy] = of_kind(load_base(), "NetworkPolicy")
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    [job] = of_kind(load_training(), "Job")
    assert any(selects(peer["podSelector"], pod_labels(job)) for peer in peers)


def test_training_publishes_where_the_server_reads():
    objects = load_training()
    env = effective_env(objects, only_container(of_kind(objects, "Job")[0]))
    server = server_env(load_base())
    for name in (*SHARED_WITH_EXPORTER, "CTR_REDIS_PASSWORD_FILE"):
        assert env[name] == server[name]
