"""Kubernetes manifests for mmserve: Triton replicas (`mmserve serve`) behind Services, an HPA on Triton's queue time,
a PodDisruptionBudget, the HTTP API (`mmserve api`), the API keys' Secret and the embedded index's volume.

The templates in `k8s/` hold the objects' shape; every `${name}` in them is filled from `K8sOptions` here. An
unquoted scalar that is a placeholder and nothing else takes the value whole (a number, a list, a mapping), and
the entry disappears when that value is None; a quoted one, or a placeholder inside a longer string, is substituted
as text. Templates are parsed before they are filled, so no option value is ever parsed as YAML.
"""

from __future__ import annotations

import copy
import math
import re
import string
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmserve import __version__
from mmserve.config import ServeOptions

QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
MILVUS_URI = r"^milvus://\S+$"
PATTERNS = {  # what each pattern asks for, in words (usage errors)
    QUANTITY: "a Kubernetes quantity, such as 2, 500m, 4Gi",
    DNS_LABEL: "a Kubernetes name: lower-case letters, digits and '-', starting with a letter",
    DNS_SUBDOMAIN: "a Kubernetes name: lower-case letters, digits, '-' and '.'",
    MILVUS_URI: "milvus://HOST:PORT/COLLECTION",
    r"^\S+$": "an image reference without spaces",
}

# The Pods metric the HPA reads and prometheus-adapter's rule names (prometheus-adapter-values.yaml).
QUEUE_METRIC = "mmserve_queue_time_us"
# Not a valid API key (spaces, a colon): an unedited Secret makes `mmserve serve` refuse to start.
KEY_PLACEHOLDER = "REPLACE ME: openssl rand -hex 24"
API_PORT = 8080
MODEL_REPOSITORY = "/models"
INDEX_MOUNT = "/data"
UID = 10001  # the image's user (deploy/docker/Dockerfile)

# Stopping on SIGTERM (README, Operations): tritonserver drains for up to 10 s and is killed 10 s after that at the
# latest (TritonServer.stop), then nginx gets up to 10 s (FrontDoor.stop). Before SIGTERM, the preStop pause lets
# Services stop sending new requests to the pod.
PRESTOP_S = 5
SERVE_STOP_S = 10 + 10 + 10
API_STOP_S = 5  # uvicorn's graceful shutdown (`mmserve api`)
STARTUP_PERIOD_S = 10


class K8sOptions(BaseModel):
    """What `mmserve deploy k8s` renders (README, Scaling out); each field is also its flag."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="mmserve", pattern=DNS_LABEL, max_length=40,
                      description="Prefix of the objects' names (NAME-triton, NAME-api, ...).")
    namespace: str = Field(default="mmserve", pattern=DNS_LABEL, max_length=63,
                           description="Namespace of every object.")
    create_namespace: bool = Field(default=True, description="Render the Namespace too (off: it exists).")
    image: str = Field(default=f"mmserve:{__version__}", pattern=r"^\S+$",
                       description="The image built from deploy/docker/Dockerfile, as your nodes pull it.")
    replicas: int = Field(default=2, ge=1, le=1000,
                          description="Triton replicas: the HPA's minimum (the count, when --max-replicas equals it).")
    max_replicas: int | None = Field(
        default=None, ge=1, le=1000, description="The HPA's maximum; default three times --replicas. Equal to "
        "--replicas: a fixed count and no HPA.")
    queue_time_target_us: int = Field(
        default=5000, ge=1, description="Scale out when a request waits longer than this in Triton's queues, on "
        "average per pod (microseconds). Above the towers' 2 ms batching window, so an idle pod never triggers it.")
    cpu: str = Field(default="2", pattern=QUANTITY,
                     description="CPU per Triton pod, requested and limit (the thread budget follows the limit).")
    memory: str = Field(default="4Gi", pattern=QUANTITY,
                        description="Memory per Triton pod, requested and limit (/dev/shm's use counts in it).")
    shm_size: str = Field(default="1Gi", pattern=QUANTITY,
                          description="Size of /dev/shm (memory), where Python-backend models exchange tensors.")
    gpus: int = Field(default=0, ge=0, le=16, description="NVIDIA GPUs per Triton pod (nvidia.com/gpu).")
    model_volume: str | None = Field(
        default=None, pattern=DNS_SUBDOMAIN, max_length=253, description="A PersistentVolumeClaim holding a model "
        "repository (`mmserve build`), mounted read-only over the image's /models.")
    start_timeout_s: int = Field(
        default=300, ge=1, description="Longest tritonserver start, warm-up included (`mmserve serve "
        "--start-timeout`); the startup probe allows a little more.")
    milvus_uri: str | None = Field(
        default=None, pattern=MILVUS_URI, description="The API's index on Milvus (milvus://HOST:PORT/"
        "COLLECTION) instead of the embedded index on a volume.")
    api_replicas: int | None = Field(
        default=None, ge=1, le=1000, description="API replicas; default 2 with Milvus, 1 (the most) with the "
        "embedded index.")
    api_cpu: str = Field(default="1", pattern=QUANTITY, description="CPU per API pod, requested and limit.")
    api_memory: str = Field(default="2Gi", pattern=QUANTITY,
                            description="Memory per API pod, requested and limit (the embedded index lives in it).")
    index_size: str = Field(default="10Gi", pattern=QUANTITY, description="The embedded index's volume.")
    storage_class: str | None = Field(
        default=None, pattern=DNS_SUBDOMAIN, max_length=253,
        description="StorageClass of the index's volume (default: the cluster's default).")
    api_key_secret: str | None = Field(
        default=None, pattern=DNS_SUBDOMAIN, max_length=253, description="An existing Secret with MMSERVE_API_KEYS; "
        "default: render NAME-api-keys with a placeholder to replace.")

    @model_validator(mode="after")
    def _consistent(self) -> K8sOptions:
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"--max-replicas ({self.max_replicas}) is below --replicas ({self.replicas})")
        if self.milvus_uri is None and (self.api_replicas or 1) > 1:
            raise ValueError("the embedded index has one writer: more than one API replica needs --milvus-uri")
        return self

    @property
    def autoscaled(self) -> bool:
        return self.hpa_max > self.replicas

    @property
    def hpa_max(self) -> int:
        return self.max_replicas if self.max_replicas is not None else 3 * self.replicas


def render(options: K8sOptions) -> list[dict[str, Any]]:
    """The manifests' documents, in the order `kubectl apply` should create them."""
    names = ["namespace.yaml"] if options.create_namespace else []
    if options.api_key_secret is None:
        names.append("secret.yaml")
    if options.milvus_uri is None:
        names.append("index-pvc.yaml")
    names += ["triton-services.yaml", "api-service.yaml", "triton-deployment.yaml", "api-deployment.yaml",
              "triton-pdb.yaml"]
    if options.autoscaled:
        names.append("triton-hpa.yaml")
    values = _values(options)
    return [document for name in names for document in _template(name, values)]


def render_yaml(options: K8sOptions) -> str:
    """`render` as one multi-document YAML stream for `kubectl apply -f`, with what to know first as comments."""
    changed = options.model_dump(exclude_defaults=True)
    header = [f"# mmserve {__version__} on Kubernetes (`mmserve deploy k8s`; README, Scaling out).",
              f"# Options: {options.model_dump_json(exclude_defaults=True) if changed else 'the defaults'}."]
    header += [f"# {line}" for line in notes(options)]
    return "\n".join(header) + "\n" + dump(render(options))


def notes(options: K8sOptions) -> list[str]:
    """What the rendered manifests leave to the reader (also printed on stderr by the CLI)."""
    found = []
    if options.api_key_secret is None:
        found.append(f"Secret {options.name}-api-keys holds a placeholder: put your keys in before applying "
                     "(or create the Secret and render with --api-key-secret).")
    if options.gpus:
        found.append("--gpus: the image from deploy/docker/Dockerfile runs the towers on CPUs (OpenVINO). GPU towers "
                     "need an image with TensorRT (or PyTorch CUDA) and a repository built on that GPU model "
                     "(`mmserve build --runtime tensorrt`), mounted with --model-volume. NVIDIA's Triton container "
                     "(nvcr.io/nvidia/tritonserver, `mmserve build --target ngc`) serves native TensorRT towers but "
                     "has no mmserve front door or supervisor: these manifests do not run it (README, GPU).")
    if options.autoscaled:
        found.append(f"The HPA reads the Pods metric {QUEUE_METRIC}: install prometheus-adapter with the values "
                     "from `mmserve deploy prometheus-adapter`, else it holds the minimum.")
    return found


def adapter_values(namespace: str, prometheus_url: str, prometheus_port: int, window: str) -> dict[str, Any]:
    """The prometheus-adapter chart's values that define the HPA's metric for the pods in `namespace`."""
    if not re.fullmatch(DNS_LABEL, namespace):
        raise ValueError(f"--namespace {namespace!r} is not a Kubernetes name (lower-case letters, digits, '-')")
    if not re.fullmatch(r"[1-9][0-9]*[smh]", window):
        raise ValueError(f"--window {window!r}: a Prometheus duration such as 30s, 1m")
    if not re.fullmatch(r"https?://\S+", prometheus_url):
        raise ValueError(f"--prometheus-url {prometheus_url!r}: an http:// or https:// URL")
    values = {"namespace": namespace, "prometheus_url": prometheus_url, "prometheus_port": prometheus_port,
              "window": window, "queue_metric": QUEUE_METRIC}
    (document,) = _template("prometheus-adapter-values.yaml", values)
    return document


def dump(documents: list[dict[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(d, sort_keys=False, default_flow_style=False, width=120) for d in documents)


# -- values ------------------------------------------------------------------------------------------------------


def _values(o: K8sOptions) -> dict[str, Any]:
    serve = ServeOptions()
    triton, api = f"{o.name}-triton", f"{o.name}-api"
    secret = o.api_key_secret or f"{o.name}-api-keys"
    index_claim = f"{o.name}-index"
    ports = {"http": serve.http_port, "grpc": serve.grpc_port, "metrics": serve.metrics_port}
    keys_env = [{"name": "MMSERVE_API_KEYS", "valueFrom": {"secretKeyRef": {"name": secret, "key": "MMSERVE_API_KEYS"}}}]
    api_env = copy.deepcopy(keys_env)
    if o.milvus_uri is None:
        index = f"{INDEX_MOUNT}/index"
        api_volumes = [{"name": "index", "persistentVolumeClaim": {"claimName": index_claim}}]
        api_mounts = [{"name": "index", "mountPath": INDEX_MOUNT}]
        # One writer on a ReadWriteOnce volume: the old pod lets go before the new one mounts it.
        api_strategy: dict[str, Any] = {"type": "Recreate"}
    else:
        index, api_volumes, api_mounts = o.milvus_uri, [], []
        # Milvus's credentials, when it checks them, from the same Secret (absent: none sent).
        api_env.append({"name": "MMSERVE_MILVUS_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": secret, "key": "MMSERVE_MILVUS_TOKEN", "optional": True}}})
        api_strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    triton_volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": o.shm_size}},
        # nginx buffers request bodies over 1 MiB here, and the supervisor keeps its run files.
        {"name": "tmp", "emptyDir": {}}]
    triton_mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"},
                                           {"name": "tmp", "mountPath": "/tmp"}]
    if o.model_volume is not None:
        triton_volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": o.model_volume,
                                                                           "readOnly": True}})
        triton_mounts.append({"name": "models", "mountPath": MODEL_REPOSITORY, "readOnly": True})
    limits: dict[str, Any] = {"cpu": o.cpu, "memory": o.memory}
    if o.gpus:
        limits["nvidia.com/gpu"] = o.gpus
    triton_labels, api_labels = _labels(o, "triton"), _labels(o, "api")
    return {
        "namespace": o.namespace, "image": o.image, "secret": secret, "key_placeholder": KEY_PLACEHOLDER,
        "triton": triton, "triton_headless": f"{triton}-headless", "api": api, "index_claim": index_claim,
        "common_labels": _labels(o, None), "triton_labels": triton_labels, "api_labels": api_labels,
        "triton_selector": _selector(triton_labels), "api_selector": _selector(api_labels),
        "http_port": ports["http"], "grpc_port": ports["grpc"], "metrics_port": ports["metrics"],
        "api_port": API_PORT,
        "triton_service_ports": [
            {"name": name, "port": port, "targetPort": name, **({"appProtocol": "kubernetes.io/h2c"}
                                                                  if name == "grpc" else {})}
            for name, port in ports.items()],
        "triton_replicas": None if o.autoscaled else o.replicas,
        "replicas": o.replicas, "max_replicas": o.hpa_max, "queue_metric": QUEUE_METRIC,
        "queue_time_target": str(o.queue_time_target_us),
        "triton_args": ["serve", "--host", "0.0.0.0", "--repository", MODEL_REPOSITORY,
                        "--start-timeout", str(o.start_timeout_s)],
        "triton_env": keys_env,
        "triton_resources": {"requests": {"cpu": o.cpu, "memory": o.memory}, "limits": limits},
        "triton_tolerations": ([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
                               if o.gpus else None),
        "triton_grace_s": PRESTOP_S + SERVE_STOP_S + 5,
        "startup_failures": math.ceil(o.start_timeout_s / STARTUP_PERIOD_S) + 3,
        "prestop_s": PRESTOP_S,
        "triton_volumes": triton_volumes, "triton_mounts": triton_mounts,
        "api_replicas": o.api_replicas or (2 if o.milvus_uri else 1), "api_strategy": api_strategy,
        "api_args": ["api", "--host", "0.0.0.0", "--port", str(API_PORT),
                     "--server", f"grpc://{triton}:{ports['grpc']}", "--index", f"default={index}"],
        "api_env": api_env,
        "api_resources": {"requests": {"cpu": o.api_cpu, "memory": o.api_memory},
                          "limits": {"cpu": o.api_cpu, "memory": o.api_memory}},
        "api_grace_s": PRESTOP_S + API_STOP_S + 5,
        "api_volumes": [{"name": "tmp", "emptyDir": {}}, *api_volumes],
        "api_mounts": [{"name": "tmp", "mountPath": "/tmp"}, *api_mounts],
        "index_size": o.index_size, "storage_class": o.storage_class,
        # The restricted Pod Security Standard, and a root filesystem nothing writes to (/tmp, /dev/shm and the
        # index are volumes; the image prepares tritonserver's backend directory at build time).
        "pod_security": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                         "seccompProfile": {"type": "RuntimeDefault"}},
        "container_security": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                               "capabilities": {"drop": ["ALL"]}},
    }


def _labels(o: K8sOptions, component: str | None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "mmserve", "app.kubernetes.io/instance": o.name}
    if component is not None:
        labels["app.kubernetes.io/component"] = component
    return labels | {"app.kubernetes.io/version": __version__, "app.kubernetes.io/managed-by": "mmserve-deploy"}


def _selector(labels: dict[str, str]) -> dict[str, str]:
    """The labels that pick a component's pods: never the version, which changes on upgrade."""
    keep = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")
    return {k: v for k, v in labels.items() if k in keep}


# -- templates ---------------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
_OMIT = object()


class _Quoted(str):
    """A scalar quoted in the template: it stays a string whatever fills it."""


class _TemplateLoader(yaml.SafeLoader):
    def construct_yaml_str(self, node):
        text = super().construct_yaml_str(node)
        return _Quoted(text) if node.style in ("'", '"') else text


_TemplateLoader.add_constructor("tag:yaml.org,2002:str", _TemplateLoader.construct_yaml_str)


def _template(name: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    text = (resources.files("mmserve.deploy") / "k8s" / name).read_text()
    return [_fill(document, values) for document in yaml.load_all(text, Loader=_TemplateLoader)]


def _fill(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        filled = {str(key): _fill(value, values) for key, value in node.items()}
        return {key: value for key, value in filled.items() if value is not _OMIT}
    if isinstance(node, list):
        return [value for value in (_fill(item, values) for item in node) if value is not _OMIT]
    if isinstance(node, str):
        whole = None if isinstance(node, _Quoted) else _PLACEHOLDER.fullmatch(node)
        if whole is not None:
            value = values[whole.group(1)]
            # A copy: PyYAML would write a value used twice as an anchor and an alias.
            return _OMIT if value is None else copy.deepcopy(value)
        return str(string.Template(node).substitute(values))
    return node
