"""deploy k8s, deploy prometheus-adapter: manifests for serving past one machine (README, Scaling out)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from mmserve.cli import app, err
from mmserve.deploy.kubernetes import PATTERNS, K8sOptions

deploy = typer.Typer(name="deploy", no_args_is_help=True, rich_markup_mode=None,
                     help="Render what serving past one machine needs (Kubernetes manifests, Helm values).")
app.add_typer(deploy, name="deploy")


def _help(field: str) -> str:
    return K8sOptions.model_fields[field].description or field


def _flag(field: str) -> str:
    return {"start_timeout_s": "--start-timeout"}.get(field, "--" + field.replace("_", "-"))


@deploy.command()
def k8s(
    name: Annotated[str, typer.Option(help=_help("name"))] = "mmserve",
    namespace: Annotated[str, typer.Option(help=_help("namespace"))] = "mmserve",
    create_namespace: Annotated[bool, typer.Option(help=_help("create_namespace"))] = True,
    image: Annotated[Optional[str], typer.Option(help=_help("image") + " [default: mmserve:VERSION]",
                                                 show_default=False)] = None,
    replicas: Annotated[int, typer.Option(help=_help("replicas"))] = 2,
    max_replicas: Annotated[Optional[int], typer.Option(help=_help("max_replicas"), show_default=False)] = None,
    queue_time_target_us: Annotated[int, typer.Option(help=_help("queue_time_target_us"))] = 5000,
    cpu: Annotated[str, typer.Option(help=_help("cpu"))] = "2",
    memory: Annotated[str, typer.Option(help=_help("memory"))] = "4Gi",
    shm_size: Annotated[str, typer.Option(help=_help("shm_size"))] = "1Gi",
    gpus: Annotated[int, typer.Option(help=_help("gpus"))] = 0,
    model_volume: Annotated[Optional[str], typer.Option(help=_help("model_volume"), metavar="PVC")] = None,
    start_timeout: Annotated[int, typer.Option(help=_help("start_timeout_s"))] = 300,
    milvus_uri: Annotated[Optional[str], typer.Option(help=_help("milvus_uri"), metavar="URI")] = None,
    api_replicas: Annotated[Optional[int], typer.Option(help=_help("api_replicas"), show_default=False)] = None,
    api_cpu: Annotated[str, typer.Option(help=_help("api_cpu"))] = "1",
    api_memory: Annotated[str, typer.Option(help=_help("api_memory"))] = "2Gi",
    index_size: Annotated[str, typer.Option(help=_help("index_size"))] = "10Gi",
    storage_class: Annotated[Optional[str], typer.Option(help=_help("storage_class"))] = None,
    api_key_secret: Annotated[Optional[str], typer.Option(help=_help("api_key_secret"), metavar="NAME")] = None,
) -> None:
    """Kubernetes manifests on stdout: Triton replicas (`mmserve serve`) with Services, a PodDisruptionBudget and an
    HPA on Triton's queue time; the HTTP API (`mmserve api`) with its Service; the API keys' Secret; the embedded
    index's volume (or Milvus, --milvus-uri).

        mmserve deploy k8s --image REGISTRY/mmserve:0.1.0 | kubectl apply -f -
    """
    given = {k: v for k, v in locals().items() if v is not None}
    if "start_timeout" in given:
        given["start_timeout_s"] = given.pop("start_timeout")
    options = _options(given)
    from mmserve.deploy.kubernetes import notes, render_yaml

    sys.stdout.write(render_yaml(options))
    for line in notes(options):
        err.print(f"note: {line}")


@deploy.command("prometheus-adapter")
def prometheus_adapter(
    namespace: Annotated[str, typer.Option(help="The namespace mmserve runs in (as given to `deploy k8s`).")] = "mmserve",
    prometheus_url: Annotated[str, typer.Option(
        help="Prometheus as the adapter reaches it (kube-prometheus-stack: http://prometheus-operated.NAMESPACE.svc).")]
        = "http://prometheus-operated.monitoring.svc",
    prometheus_port: Annotated[int, typer.Option(help="Its port.")] = 9090,
    window: Annotated[str, typer.Option(help="Window of the queue-time average (at least two scrape intervals).")]
        = "30s",
) -> None:
    """Values for the prometheus-adapter Helm chart: the Pods metric the Triton HPA scales on (average queue time
    per request, per pod, from Triton's counters).

        mmserve deploy prometheus-adapter > adapter.yaml
        helm install prometheus-adapter prometheus-community/prometheus-adapter -n monitoring -f adapter.yaml
    """
    from mmserve.deploy.kubernetes import adapter_values, dump

    try:
        values = adapter_values(namespace, prometheus_url, prometheus_port, window)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    sys.stdout.write("# prometheus-adapter values for mmserve's HPA (`mmserve deploy prometheus-adapter`).\n"
                     + dump([values]))


def _options(given: dict) -> K8sOptions:
    """The options, or a usage error naming the flag at fault."""
    try:
        return K8sOptions(**given)
    except ValidationError as error:
        problem = error.errors()[0]
        field = str(problem["loc"][0]) if problem["loc"] else None
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "string_pattern_mismatch":
            message = f"{problem['input']!r} is not {PATTERNS.get(problem['ctx']['pattern'], 'valid here')}"
        raise typer.BadParameter(message, param_hint=f"'{_flag(field)}'" if field else None) from None
