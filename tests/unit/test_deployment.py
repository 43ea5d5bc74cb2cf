"""The Kubernetes deployment, checked as far as a machine without Kubernetes, Docker or the chart can:
every asset step's ``dagster-k8s/config`` tag (rec_orchestration/deployment.py), the Helm values
(deploy/helm/values.yaml) against the Dockerfile and against the keys of Dagster's chart, the instance
config the chart renders from them against Dagster itself, and the Dockerfile's user, command and locks.

Nothing here installs the chart or builds the image. The chart keys below are those of the official
``dagster/dagster`` chart, the one deploy/helm/values.yaml names at version 1.13.27 (the release the project
pins), as read from helm/dagster in the dagster-io/dagster repository: values.schema.json, the templates
configmap-instance.yaml and helpers/instance/*.tpl (runMonitoring, runRetries, the run coordinator) and
charts/dagster-user-deployments/templates (the user deployment). The copy read was a recent one, not one
pinned to the 1.13.27 tag, which could not be fetched. The check that needs dagster-k8s (the tag turned into
a Kubernetes Job) runs only where the ``k8s`` extra is installed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from rec_orchestration import deployment, settings
from rec_orchestration.deployment import GPU_RESOURCE, K8S_CONFIG_TAG, PROFILES, cpu_cores, k8s_step_tags, memory_bytes

ROOT = settings.PROJECT_ROOT
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
DOCKERFILE = ROOT / "Dockerfile"
K8S_LOCK = ROOT / "deploy" / "requirements-k8s.lock"
MANIFEST = settings.DBT_PROJECT_DIR / "target" / "manifest.json"
GPU_STEP = "models__lightgcn"  # the op of models/lightgcn (assets/models.py's factory)


# -- the step tags ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def asset_steps() -> dict[str, dict[str, str]]:
    """Op name -> the op's tags (as Dagster stores them: strings) for every executable asset step."""
    if not MANIFEST.exists():
        pytest.skip(f"no dbt manifest ({MANIFEST}): `make manifest` builds it (make test does)")
    from rec_orchestration.definitions import defs

    steps = {}
    for assets_def in defs.resolve_asset_graph().assets_defs:
        if assets_def.is_executable and assets_def.keys:
            steps[assets_def.op.name] = dict(assets_def.op.tags)
    return steps


def _resources(tag_value: str) -> dict[str, dict[str, str]]:
    return json.loads(tag_value)["container_config"]["resources"]


def test_every_asset_step_carries_cpu_and_memory_requests_and_limits(asset_steps):
    assert GPU_STEP in asset_steps and "warehouse_dbt_models" in asset_steps and "raw_landing" in asset_steps
    untagged = sorted(name for name, tags in asset_steps.items() if K8S_CONFIG_TAG not in tags)
    assert not untagged, f"asset steps without a {K8S_CONFIG_TAG} tag (use deployment.k8s_step_tags): {untagged}"
    for name, tags in asset_steps.items():
        resources = _resources(tags[K8S_CONFIG_TAG])  # stored as JSON, which dagster-k8s json.loads
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), (name, resources)
        assert cpu_cores(resources["requests"]["cpu"]) <= cpu_cores(resources["limits"]["cpu"]), name
        assert memory_bytes(resources["requests"]["memory"]) <= memory_bytes(resources["limits"]["memory"]), name


def test_only_the_lightgcn_step_asks_for_a_gpu(asset_steps):
    with_gpu = {name for name, tags in asset_steps.items() if K8S_CONFIG_TAG in tags
                and any(GPU_RESOURCE in part for part in _resources(tags[K8S_CONFIG_TAG]).values())}
    assert with_gpu == {GPU_STEP}
    config = json.loads(asset_steps[GPU_STEP][K8S_CONFIG_TAG])
    assert config["container_config"]["resources"]["limits"][GPU_RESOURCE] == "1"
    pod = config["pod_spec_config"]
    assert pod["node_selector"] and any(t["key"] == GPU_RESOURCE for t in pod["tolerations"])


def test_profiles_are_consistent():
    assert [name for name, profile in PROFILES.items() if profile.gpu] == ["gpu_training"]
    for name in PROFILES:
        config = k8s_step_tags(name)[K8S_CONFIG_TAG]
        assert json.loads(json.dumps(config)) == config  # Dagster's condition for a non-string tag value
        resources = config["container_config"]["resources"]
        assert (GPU_RESOURCE in resources["limits"]) == (name == "gpu_training")
        assert GPU_RESOURCE not in resources["requests"]  # an extended resource: the request is the limit
        threads = {e["name"]: e["value"] for e in config["container_config"]["env"]}["REC_STEP_THREADS"]
        assert int(threads) == max(1, math.floor(cpu_cores(resources["limits"]["cpu"])))
        assert ("pod_spec_config" in config) == (name == "gpu_training")
    assert deployment.model_profile("lightgcn") == "gpu_training" and deployment.model_profile("ease") == "training"
    with pytest.raises(ValueError, match="unknown step profile"):
        k8s_step_tags("huge")


def test_quantities_parse():
    assert cpu_cores("250m") == 0.25 and cpu_cores("2") == 2 and cpu_cores("1.5") == 1.5
    assert memory_bytes("512Mi") == 512 * 2**20 and memory_bytes("4Gi") == 4 * 2**30 and memory_bytes("1G") == 10**9
    for bad in ("", "2 cores", "1.5.1", "-1"):
        with pytest.raises(ValueError):
            cpu_cores(bad)
    with pytest.raises(ValueError):
        memory_bytes("4GB")


def test_the_gpu_image_applies_to_the_gpu_step_only(monkeypatch):
    monkeypatch.setenv(deployment.GPU_IMAGE_VARIABLE, "registry.example.com/rec-orchestration:abc-cuda")
    assert k8s_step_tags("gpu_training")[K8S_CONFIG_TAG]["container_config"]["image"].endswith(":abc-cuda")
    assert "image" not in k8s_step_tags("training")[K8S_CONFIG_TAG]["container_config"]
    monkeypatch.delenv(deployment.GPU_IMAGE_VARIABLE)
    assert "image" not in k8s_step_tags("gpu_training")[K8S_CONFIG_TAG]["container_config"]


def test_the_deployment_module_needs_neither_dagster_nor_dagster_k8s():
    blocker = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('dagster', 'dagster_k8s', 'kubernetes') or name.startswith('dagster_'):\n"
        "            raise ImportError(name + ' blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from rec_orchestration.deployment import k8s_step_tags\n"
        "print(sorted(k8s_step_tags('gpu_training')['dagster-k8s/config']))\n")
    done = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "container_config" in done.stdout


def test_dagster_k8s_turns_the_tags_into_kubernetes_jobs(asset_steps):
    """Where the k8s extra is installed: each step's tags through dagster-k8s's own reader and job builder."""
    pytest.importorskip("dagster_k8s")
    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config
    from kubernetes.client import ApiClient

    for name, tags in asset_steps.items():
        job = construct_dagster_k8s_job(
            DagsterK8sJobConfig(job_image="rec:test", dagster_home="/opt/dagster/dagster_home"),
            args=["dagster", "api", "execute_step"], job_name=f"step-{name}", pod_name=f"step-{name}",
            user_defined_k8s_config=get_user_defined_k8s_config(tags))
        spec = ApiClient().sanitize_for_serialization(job)["spec"]["template"]["spec"]
        container = spec["containers"][0]
        assert container["resources"] == _resources(tags[K8S_CONFIG_TAG]), name
        assert any(variable["name"] == "REC_STEP_THREADS" for variable in container["env"]), name
        assert ("tolerations" in spec) == (name == GPU_STEP), name


# -- the Helm values --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def user_deployment(values) -> dict[str, Any]:
    deployments = values["dagster-user-deployments"]["deployments"]
    assert len(deployments) == 1
    return deployments[0]


def test_values_launch_runs_on_kubernetes_with_the_daemon(values):
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagster-user-deployments"]["enabled"] is True
    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] is True  # schedules, sensors, the run queue
    assert daemon["runCoordinator"] == {"enabled": True, "type": "QueuedRunCoordinator"}
    # Dagster's own storage: an external server, its password from a Secret the chart does not render
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlHost"]
    assert values["generatePostgresqlPasswordSecret"] is False and values["global"]["postgresqlSecretName"]


def test_values_configure_the_project_for_kubernetes(user_deployment):
    env = user_deployment["env"]
    assert env["REC_EXECUTOR"] == "k8s" and "k8s" in settings.EXECUTORS
    store = env["REC_MODEL_STORE_DIR"]
    assert "://" in store and not store.startswith("file:"), "every step pod must reach the model store"
    assert not {"REC_DATABASE_URL", "REC_DAGSTER_DATABASE_URL", "PGPASSWORD"} & set(env), "database URLs are secret"
    assert [secret["name"] for secret in user_deployment["envSecrets"]]
    assert user_deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    mounts = [mount["mountPath"] for mount in user_deployment["volumeMounts"]]
    assert any(env["REC_LANDING_DIR"].startswith(path.rstrip("/") + "/") for path in mounts)


def _leaves(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in _leaves(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [leaf for index, value in enumerate(node) for leaf in _leaves(value, f"{path}[{index}]")]
    return [(path, node)]


CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


def test_no_password_or_credentials_in_values_or_dockerfile(values):
    for path, value in _leaves(values):
        name = path.rsplit(".", 1)[-1].lower()
        if isinstance(value, str) and value:  # a flag such as generatePostgresqlPasswordSecret is no password
            assert not any(word in name for word in ("password", "secretkey", "secret_key", "token")), path
        assert not (isinstance(value, str) and CREDENTIALS_IN_URL.search(value)), path
    assert not CREDENTIALS_IN_URL.search(VALUES.read_text())
    for line in _instructions(DOCKERFILE):
        if line.startswith(("ENV ", "ARG ")):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|DATABASE_URL", line, re.IGNORECASE), line


# The keys this file may use, per the chart's schema (None: a Kubernetes object or free-form map, not
# descended into). A key outside these is a typo the chart would ignore or reject.
_IMAGE = {"repository": None, "tag": None, "pullPolicy": None}
_RESOURCES = {"requests": None, "limits": None}
USER_DEPLOYMENT_KEYS = {
    "name": None, "image": _IMAGE, "port": None, "dagsterApiGrpcArgs": None, "codeServerArgs": None,
    "includeConfigInLaunchedRuns": {"enabled": None}, "deploymentNamespace": None, "env": None,
    "envConfigMaps": None, "envSecrets": None, "annotations": None, "nodeSelector": None, "affinity": None,
    "tolerations": None, "podSecurityContext": None, "securityContext": None, "resources": _RESOURCES,
    "livenessProbe": None, "readinessProbe": None, "startupProbe": None, "labels": None, "volumeMounts": None,
    "volumes": None, "schedulerName": None, "initContainers": None, "sidecarContainers": None,
}
K8S_RUN_LAUNCHER_KEYS = {
    "image": _IMAGE, "imagePullPolicy": None, "jobNamespace": None, "loadInclusterConfig": None,
    "kubeconfigFile": None, "envConfigMaps": None, "envSecrets": None, "envVars": None, "volumeMounts": None,
    "volumes": None, "labels": None, "failPodOnRunFailure": None, "resources": _RESOURCES, "schedulerName": None,
    "securityContext": None, "runK8sConfig": None,
}
DAEMON_KEYS = {
    "enabled": None, "image": _IMAGE, "heartbeatTolerance": None, "env": None, "envConfigMaps": None,
    "envSecrets": None, "deploymentLabels": None, "labels": None, "nodeSelector": None, "affinity": None,
    "tolerations": None, "podSecurityContext": None, "securityContext": None, "resources": _RESOURCES,
    "livenessProbe": None, "readinessProbe": None, "startupProbe": None, "annotations": None,
    "sensors": None, "schedules": None, "schedulerName": None, "volumeMounts": None, "volumes": None,
    "initContainerResources": None,
    "runCoordinator": {"enabled": None, "type": None,
                       "config": {"queuedRunCoordinator": {"maxConcurrentRuns": None, "tagConcurrencyLimits": None,
                                                           "dequeueIntervalSeconds": None, "dequeueNumWorkers": None,
                                                           "dequeueUseThreads": None,
                                                           "blockOpConcurrencyLimitedRuns": None},
                                  "customRunCoordinator": None}},
    # what the instance template reads of these free-form maps
    "runMonitoring": {"enabled": None, "startTimeoutSeconds": None, "pollIntervalSeconds": None,
                      "maxResumeRunAttempts": None},
    "runRetries": {"enabled": None, "maxRetries": None},
}
CHART_KEYS = {
    "global": {"postgresqlSecretName": None, "dagsterHome": None, "serviceAccountName": None,
               "celeryConfigSecretName": None},
    "generatePostgresqlPasswordSecret": None, "generateCeleryConfigSecret": None,
    "postgresql": {"enabled": None, "image": _IMAGE, "postgresqlHost": None, "postgresqlUsername": None,
                   "postgresqlPassword": None, "postgresqlDatabase": None, "postgresqlParams": None,
                   "postgresqlScheme": None, "service": {"port": None}},
    "dagster-user-deployments": {"enabled": None, "enableSubchart": None, "imagePullSecrets": None,
                                 "deployments": [USER_DEPLOYMENT_KEYS]},
    "runLauncher": {"type": None, "config": {"k8sRunLauncher": K8S_RUN_LAUNCHER_KEYS, "celeryK8sRunLauncher": None,
                                             "customRunLauncher": None}},
    "dagsterDaemon": DAEMON_KEYS,
    "telemetry": {"enabled": None},
    "additionalInstanceConfig": None,
    "dagsterWebserver": None, "rabbitmq": None, "redis": None, "flower": None, "ingress": None,
    "imagePullSecrets": None, "computeLogManager": None, "scheduler": None, "pythonLogs": None, "busybox": None,
    "migrate": None, "serviceAccount": None, "retention": None,
}


def _unknown_keys(node: Any, allowed: Any, path: str = "") -> list[str]:
    if allowed is None:
        return []
    if isinstance(allowed, list):
        assert isinstance(node, list), path
        return [bad for index, item in enumerate(node) for bad in _unknown_keys(item, allowed[0], f"{path}[{index}]")]
    assert isinstance(node, dict), f"{path} should be a map"
    bad = [f"{path}.{key}" for key in node if key not in allowed]
    return bad + [b for key, value in node.items() if key in allowed for b in _unknown_keys(value, allowed[key],
                                                                                             f"{path}.{key}")]


def test_values_use_only_the_charts_keys_and_values(values):
    assert _unknown_keys(values, CHART_KEYS) == []
    assert values["runLauncher"]["type"] in {"K8sRunLauncher", "CeleryK8sRunLauncher", "CustomRunLauncher"}
    for path, value in _leaves(values):
        if path.endswith("pullPolicy"):
            assert value in {"Always", "IfNotPresent", "Never"}, path
        if path.endswith((".port", ".enabled")):
            assert isinstance(value, int), path  # schema: integer / boolean (bool is an int)
    # the checker itself: a typo is caught
    assert _unknown_keys({"runLauncher": {"type": "K8sRunLauncher", "config": {"k8sRunLuncher": {}}}},
                         CHART_KEYS) == [".runLauncher.config.k8sRunLuncher"]


def test_the_instance_the_chart_renders_is_accepted_by_dagster(values, tmp_path):
    """The dagster.yaml parts the chart builds from these values (run coordinator without limits, run monitoring,
    run retries, additionalInstanceConfig), loaded by Dagster: the queue limits and the pool as dagster.yaml's."""
    import dagster as dg

    daemon = values["dagsterDaemon"]
    monitoring, retries = daemon["runMonitoring"], daemon["runRetries"]
    queued = daemon["runCoordinator"].get("config", {}).get("queuedRunCoordinator") or {}
    run_coordinator = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
    rendered = {snake: queued[camel] for camel, snake in (("maxConcurrentRuns", "max_concurrent_runs"),
                                                          ("tagConcurrencyLimits", "tag_concurrency_limits"),
                                                          ("dequeueIntervalSeconds", "dequeue_interval_seconds"))
                if queued.get(camel)}  # as helpers/instance/_run-coordinator.tpl renders them
    if rendered:
        run_coordinator["config"] = rendered
    instance_yaml = {
        "storage": {"sqlite": {"base_dir": str(tmp_path / "storage")}},
        "run_coordinator": run_coordinator,
        "run_monitoring": {"enabled": monitoring["enabled"], "start_timeout_seconds": monitoring["startTimeoutSeconds"],
                           "poll_interval_seconds": monitoring["pollIntervalSeconds"]},
        "run_retries": {"enabled": retries["enabled"], "max_retries": retries["maxRetries"]},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
        **values["additionalInstanceConfig"],
    }
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 2
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.pool_config.pool_granularity.value == "run"
        assert instance.run_retries_max_retries == 1
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert values["additionalInstanceConfig"]["concurrency"] == local["concurrency"]


# -- the Dockerfile ---------------------------------------------------------------------------------------

def _instructions(path: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def _final_stage() -> list[str]:
    instructions = _instructions(DOCKERFILE)
    last_from = max(i for i, line in enumerate(instructions) if line.upper().startswith("FROM "))
    return instructions[last_from:]


def _grpc_options(argv: list[str]) -> dict[str, str]:
    assert argv[:3] == ["dagster", "api", "grpc"], argv
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    long_names = {"-m": "--module-name", "-h": "--host", "-p": "--port"}
    return {long_names.get(key, key): value for key, value in options.items()}


def test_dockerfile_cmd_is_the_chart_servers_command(user_deployment):
    stage = _final_stage()
    assert stage[0].split()[1] == "${PYTHON_IMAGE}" and "ARG PYTHON_IMAGE=python:3.11-slim" in _instructions(DOCKERFILE)
    assert not any(line.upper().startswith("ENTRYPOINT") for line in stage), "the chart passes the command as args"
    cmd = json.loads(next(line for line in stage if line.upper().startswith("CMD "))[4:])
    docker = _grpc_options(cmd)
    assert docker == {"--module-name": "rec_orchestration.definitions", "--host": "0.0.0.0", "--port": "3030"}
    port = user_deployment["port"]
    chart = _grpc_options(["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(port),
                           *user_deployment["dagsterApiGrpcArgs"]])  # deployment-user.yaml's args
    assert chart == docker
    assert f"EXPOSE {port}" in stage
    module = docker["--module-name"]
    assert importlib.util.find_spec(module) is not None
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"] == module
    assert user_deployment["image"]["repository"] and user_deployment["image"]["tag"]


def test_dockerfile_runs_as_a_numeric_non_root_user(user_deployment):
    users = [line.split()[1] for line in _final_stage() if line.upper().startswith("USER ")]
    assert users, "the final stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "runAsNonRoot needs a numeric, non-zero uid"
    assert user_deployment["podSecurityContext"]["runAsUser"] == int(uid)


def test_dockerfile_installs_the_hash_pinned_locks_and_builds_the_manifest():
    text = " ".join(_instructions(DOCKERFILE))
    install = re.search(r"pip install --no-deps --require-hashes [^;]*-r deploy/requirements-k8s\.lock", text)
    assert install and "-r /tmp/base.lock" in install.group(0), "both locks, hash-checked, in one install"
    assert "COPY requirements.lock" in text and "pip install --no-deps --no-build-isolation -e ." in text
    assert "rec dbt-parse" in text  # the manifest Dagster loads, as `make manifest` builds it
    for line in _instructions(DOCKERFILE):
        if line.startswith("COPY ") and "--from" not in line:
            sources = shlex.split(line)[1:-1]
            assert all((ROOT / source).exists() for source in sources), line


def _locked(path: Path) -> dict[str, str]:
    return {line.split("==")[0].lower(): line.split("==")[1].split()[0]
            for line in path.read_text().splitlines() if re.match(r"^[A-Za-z0-9]", line) and "==" in line}


def test_the_k8s_lock_completes_requirements_lock():
    base, extra = _locked(ROOT / "requirements.lock"), _locked(K8S_LOCK)
    assert not set(base) & set(extra), "a package pinned twice"
    k8s_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["k8s"]
    for requirement in k8s_extra:
        name, version = requirement.split("==")
        assert extra[name.lower()] == version, f"{K8S_LOCK.name} is stale: run deploy/lock-k8s.sh"
    assert extra["s3fs"] == base["fsspec"]  # s3fs releases are pinned to their fsspec
    blocks = re.split(r"\n(?=[A-Za-z0-9])", K8S_LOCK.read_text().split("\n", 3)[-1].strip())
    assert len(blocks) == len(extra) and all("--hash=sha256:" in block for block in blocks)


def test_dockerignore_keeps_local_state_out_and_what_the_build_needs_in():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "test-artifacts", ".rec", "data", "dbt_project/target", "**/__pycache__", ".git"} <= ignored
    for needed in ("requirements.lock", "deploy/requirements-k8s.lock", "pyproject.toml", "README.md",
                   "rec_orchestration", "dbt_project", "deploy"):
        assert needed not in ignored, needed
