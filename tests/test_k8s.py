"""Serving past one machine, checked without a cluster or docker: the manifests `mmserve deploy k8s` renders (several
option sets) against the Kubernetes API's schemas and against each other, the prometheus-adapter values, the image's
Dockerfile against this checkout and the CLI, and the Milvus chart's values file."""

from __future__ import annotations

import functools
import inspect
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from mmserve.cli import app
from mmserve.deploy import kubernetes
from mmserve.deploy.kubernetes import K8sOptions

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
KUBERNETES_VERSION = "1.33"  # the oldest release still supported upstream when this was written
MILVUS_URI = "milvus://milvus.milvus.svc.cluster.local:19530/mmserve"

OPTION_SETS = {
    "defaults": [],
    "gpu": ["--gpus", "2", "--cpu", "8", "--memory", "32Gi"],
    "pvc": ["--model-volume", "mmserve-models", "--start-timeout", "900"],
    "milvus": ["--milvus-uri", MILVUS_URI, "--api-replicas", "3", "--max-replicas", "10"],
    "fixed": ["--name", "search", "--namespace", "prod", "--no-create-namespace", "--replicas", "3",
              "--max-replicas", "3", "--api-key-secret", "search-keys", "--storage-class", "fast-ssd",
              "--image", "registry.example/mmserve:0.1.0"],
}


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@functools.cache
def render_set(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(invoke("deploy", "k8s", *OPTION_SETS[name])) if d is not None]


@pytest.fixture(params=sorted(OPTION_SETS))
def rendered(request) -> tuple[str, list[str], list[dict]]:
    return request.param, OPTION_SETS[request.param], render_set(request.param)


def only(documents: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in documents if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def containers(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"]


def option(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


# -- the manifests -------------------------------------------------------------------------------------------------


def test_every_document_validates_against_the_kubernetes_schemas(rendered):
    _, _, documents = rendered
    kinds = sorted(d["kind"] for d in documents)
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= set(kinds)
    for document in documents:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{document['kind']}/{document['metadata']['name']}: {error.message} at "
                        f"{'.'.join(map(str, error.path))}")


def test_names_and_namespaces(rendered):
    _, args, documents = rendered
    namespace = option(args, "--namespace") or "mmserve"
    assert any(d["kind"] == "Namespace" for d in documents) == ("--no-create-namespace" not in args)
    for document in documents:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == namespace, document["metadata"]
        name = document["metadata"]["name"]
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    pairs = [(d["kind"], d["metadata"]["name"]) for d in documents]
    assert len(pairs) == len(set(pairs)), "two objects of one kind share a name"


def test_services_select_the_pods_and_ports_of_one_deployment(rendered):
    _, _, documents = rendered
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    for deployment in deployments:
        assert deployment["spec"]["selector"]["matchLabels"].items() <= \
            deployment["spec"]["template"]["metadata"]["labels"].items()
    for service in (d for d in documents if d["kind"] == "Service"):
        selector = service["spec"]["selector"].items()
        targets = [d for d in deployments if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {len(targets)} Deployments"
        port_names = {p["name"] for c in containers(targets[0]) for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, (service["metadata"]["name"], port)


def test_probes_mounts_and_references_resolve(rendered):
    _, args, documents = rendered
    claims = {d["metadata"]["name"] for d in documents if d["kind"] == "PersistentVolumeClaim"}
    secrets = {d["metadata"]["name"] for d in documents if d["kind"] == "Secret"}
    external_claims = {option(args, "--model-volume")} - {None}
    external_secrets = {option(args, "--api-key-secret")} - {None}
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims | external_claims
        for container in pod["containers"]:
            ports = {p["name"] for p in container["ports"]} | {p["containerPort"] for p in container["ports"]}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in container:
                    handler = container[probe].get("httpGet") or container[probe]["tcpSocket"]
                    assert handler["port"] in ports, (container["name"], probe)
            assert container["readinessProbe"], container["name"]
            for mount in container["volumeMounts"]:
                assert mount["name"] in volumes, (container["name"], mount)
            for variable in container["env"]:
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    assert reference["name"] in secrets | external_secrets, reference
    if external_secrets:
        assert not secrets, "a Secret rendered beside --api-key-secret (re-applying would overwrite the real keys)"


def test_triton_replicas(rendered):
    from mmserve.serving.frontdoor import FrontDoor
    from mmserve.serving.server import TritonServer

    name_set, args, documents = rendered
    name = option(args, "--name") or "mmserve"
    triton = only(documents, "Deployment", f"{name}-triton")
    (container,) = containers(triton)
    pod = triton["spec"]["template"]["spec"]
    assert container["command"] == ["mmserve"] and container["args"][:5] == [
        "serve", "--host", "0.0.0.0", "--repository", kubernetes.MODEL_REPOSITORY]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    # Probes through the front door's HTTP port, on the paths the supervisor answers.
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    start_timeout = int(option(args, "--start-timeout") or 300)
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] > start_timeout
    assert container["args"][container["args"].index("--start-timeout") + 1] == str(start_timeout)
    # The grace period covers the preStop pause and the whole of `mmserve serve`'s stop.
    prestop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    stop = TritonServer.exit_timeout_s + 10 + inspect.signature(FrontDoor.stop).parameters["timeout_s"].default
    assert pod["terminationGracePeriodSeconds"] >= prestop + stop
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    annotations = triton["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8002"
    resources = container["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == (option(args, "--cpu") or "2")
    if name_set == "gpu":
        assert resources["limits"]["nvidia.com/gpu"] == 2
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    else:
        assert "nvidia.com/gpu" not in resources["limits"] and "tolerations" not in pod
    if name_set == "pvc":
        assert mounts["/models"]["readOnly"] is True
        assert volumes[mounts["/models"]["name"]]["persistentVolumeClaim"] == {"claimName": "mmserve-models",
                                                                                "readOnly": True}
    else:
        assert "/models" not in mounts  # the repository built into the image
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert pod["securityContext"]["runAsNonRoot"] and mounts["/tmp"]


def test_autoscaling_and_disruption_budget(rendered):
    _, args, documents = rendered
    name = option(args, "--name") or "mmserve"
    triton = only(documents, "Deployment", f"{name}-triton")
    labels = triton["spec"]["template"]["metadata"]["labels"].items()
    budget = only(documents, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels and budget["spec"]["maxUnavailable"] == 1
    replicas = int(option(args, "--replicas") or 2)
    maximum = int(option(args, "--max-replicas") or 3 * replicas)
    autoscalers = [d for d in documents if d["kind"] == "HorizontalPodAutoscaler"]
    if maximum == replicas:
        assert not autoscalers and triton["spec"]["replicas"] == replicas
        return
    (hpa,) = autoscalers
    # No replica count of its own: re-applying the manifests must not undo the HPA's choice.
    assert "replicas" not in triton["spec"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", f"{name}-triton")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (replicas, maximum)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == kubernetes.QUEUE_METRIC
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "5000"}


def test_api_reaches_the_triton_service_and_its_index(rendered):
    name_set, args, documents = rendered
    name = option(args, "--name") or "mmserve"
    api = only(documents, "Deployment", f"{name}-api")
    (container,) = containers(api)
    arguments = container["args"]
    assert container["command"] == ["mmserve"] and arguments[0] == "api"
    server = arguments[arguments.index("--server") + 1]
    triton_service = only(documents, "Service", f"{name}-triton")
    grpc_port = next(p["port"] for p in triton_service["spec"]["ports"] if p["name"] == "grpc")
    assert server == f"grpc://{name}-triton:{grpc_port}"
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert "httpGet" not in container["livenessProbe"], "the API must not be restarted because Triton is away"
    index = arguments[arguments.index("--index") + 1]
    claims = [d for d in documents if d["kind"] == "PersistentVolumeClaim"]
    env = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container["env"]}
    if name_set == "milvus":
        assert index == f"default={MILVUS_URI}" and not claims
        # Milvus's token, if any, from the keys' Secret; optional, so a Milvus without credentials needs none.
        assert env["MMSERVE_MILVUS_TOKEN"]["optional"] is True
        assert env["MMSERVE_MILVUS_TOKEN"]["name"] == env["MMSERVE_API_KEYS"]["name"]
        assert api["spec"]["replicas"] == 3 and api["spec"]["strategy"]["type"] == "RollingUpdate"
    else:
        (claim,) = claims
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == kubernetes.INDEX_MOUNT)
        volume = next(v for v in api["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert index == f"default={kubernetes.INDEX_MOUNT}/index"
        # One writer: a single replica, and the old pod gone before the new one mounts the volume.
        assert api["spec"]["replicas"] == 1 and api["spec"]["strategy"] == {"type": "Recreate"}
        assert set(env) == {"MMSERVE_API_KEYS"}
        assert claim["spec"].get("storageClassName") == option(args, "--storage-class")


def test_the_secret_placeholder_is_not_a_usable_key(rendered):
    from mmserve.config import ServeOptions
    from mmserve.serving.frontdoor import check_api_key

    _, args, documents = rendered
    secrets = [d for d in documents if d["kind"] == "Secret"]
    if "--api-key-secret" in args:
        assert not secrets
        return
    (secret,) = secrets
    (placeholder,) = secret["stringData"].values()
    # The server splits MMSERVE_API_KEYS as it would, and refuses to start on what it finds.
    for key in ServeOptions(api_keys=placeholder).api_keys_in_effect():
        with pytest.raises(ValueError):
            check_api_key(key)


def test_every_container_command_is_one_the_cli_accepts():
    command_lines = [["mmserve", *c["args"]] for name in OPTION_SETS for d in render_set(name)
                     if d["kind"] == "Deployment" for c in containers(d)]
    assert_cli_accepts(command_lines)


def test_bad_options_are_usage_errors():
    runner = CliRunner()
    for args, message in [(["--replicas", "3", "--max-replicas", "2"], "below --replicas"),
                          (["--api-replicas", "2"], "needs --milvus-uri"),
                          (["--memory", "lots"], "Kubernetes quantity"),
                          (["--name", "Search"], "Kubernetes name"),
                          (["--milvus-uri", "http://milvus:19530"], "milvus://")]:
        result = runner.invoke(app, ["deploy", "k8s", *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    with pytest.raises(ValueError, match="one writer"):
        K8sOptions(api_replicas=2)


def test_prometheus_adapter_rule_feeds_the_hpa_metric():
    values = yaml.safe_load(invoke("deploy", "prometheus-adapter", "--namespace", "prod", "--window", "1m"))
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == kubernetes.QUEUE_METRIC
    assert rule["seriesQuery"] == 'nv_inference_queue_duration_us{namespace="prod",pod!=""}'
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    query = rule["metricsQuery"]
    # Queue time over successful requests, each a counter over the window, per pod (<<.GroupBy>>).
    numerator, denominator = query.split(" / ")
    assert "nv_inference_queue_duration_us{<<.LabelMatchers>>}[1m]" in numerator
    assert "nv_inference_request_success{<<.LabelMatchers>>}[1m]" in denominator
    assert query.count("by (<<.GroupBy>>)") == 2
    assert isinstance(values["prometheus"]["port"], int)
    result = CliRunner().invoke(app, ["deploy", "prometheus-adapter", "--window", "soon"])
    assert result.exit_code == 2 and "duration" in result.output


def test_templates_ship_in_the_wheel():
    """The templates are package data: scikit-build-core packs every file of `wheel.packages` not git-ignored."""
    import tomllib

    from pathspec import GitIgnoreSpec

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = pyproject["tool"]["scikit-build"]["wheel"]
    assert "mmserve" in wheel["packages"] and not wheel.get("exclude")
    templates = sorted((ROOT / "mmserve" / "deploy" / "k8s").glob("*.yaml"))
    assert len(templates) >= 9
    ignored = GitIgnoreSpec.from_lines((ROOT / ".gitignore").read_text().splitlines())
    assert not [t for t in templates if ignored.match_file(str(t.relative_to(ROOT)))]


# -- the image -------------------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    return instructions


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the context) out of the build context: Docker's rules (patterns
    anchored at the root, `*` within a name, `**` across directories, a matched directory excludes its contents,
    the last matching line wins, `!` re-includes)."""
    verdict = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        include = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = "".join("(?:.*/)?" if part == "**/" else ".*" if part == "**" else "[^/]*" if part == "*"
                        else "[^/]" if part == "?" else re.escape(part)
                        for part in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern))
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            verdict = not include
    return verdict


def test_dockerfile_copies_only_what_exists_and_the_context_holds():
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "ARG" and "python:3.11-slim" in instructions[0][1]
    copied = []
    for word, arguments in instructions:
        if word == "COPY" and not arguments.startswith("--from="):
            *sources, _destination = shlex.split(arguments)
            copied += sources
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the checkout"
        assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    assert {"pyproject.toml", "README.md", "constraints.txt", "CMakeLists.txt", "csrc", "mmserve"} <= set(copied)
    # What the build needs from inside those folders reaches the context too.
    sources = [p.relative_to(ROOT).as_posix() for folder in ("mmserve", "csrc") for p in (ROOT / folder).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    needed = [f for f in sources if f.endswith((".py", ".cpp", ".h", ".inc", ".yaml", ".json", ".safetensors",
                                                ".txt", ".in", ".pbtxt", ".pyi"))]
    assert needed and not [f for f in needed if dockerignored(f)]
    for path in ("mmserve/models/default/model.safetensors", "mmserve/deploy/k8s/triton-deployment.yaml",
                 "mmserve/serving/templates/nginx.conf.in"):
        assert (ROOT / path).exists() and not dockerignored(path), path
    for path in (".git", ".venv", "build/x/_C.so", "mmserve/__pycache__/config.cpython-311.pyc", "model_repository"):
        assert dockerignored(path), path


def dockerfile_command_lines() -> list[list[str]]:
    """The `mmserve ...` commands the Dockerfile's RUN lines and its ENTRYPOINT + CMD run, as words."""
    instructions = dockerfile_instructions()
    command_lines = []
    for word, arguments in instructions:
        if word != "RUN":
            continue
        lexer = shlex.shlex(arguments, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", ";", "|"):
                if words and words[0] == "mmserve":
                    command_lines.append([w for w in words if w != "\0"])
                words = []
            elif token.startswith((">", "<")):
                words.append("\0")  # a redirection: the command's words end here
            elif "\0" not in words:
                words.append(token)
    entrypoint = json.loads(next(a for w, a in instructions if w == "ENTRYPOINT"))
    cmd = json.loads(next(a for w, a in instructions if w == "CMD"))
    return [*command_lines, entrypoint + cmd]


def test_dockerfile_runs_mmserve_commands_that_exist():
    instructions = dockerfile_instructions()
    command_lines = dockerfile_command_lines()
    assert command_lines[-1] == ["mmserve", "serve", "--host", "0.0.0.0", "--repository", kubernetes.MODEL_REPOSITORY]
    names = [words[1] for words in command_lines]
    assert names[:2] == ["export", "build"], names
    build = command_lines[1]
    assert build[build.index("--repository") + 1] == kubernetes.MODEL_REPOSITORY
    assert_cli_accepts(command_lines)
    imports = [found for word, arguments in instructions if word == "RUN"
               for found in re.findall(r"from (mmserve[\w.]*) import (\w+)", arguments)]
    assert imports
    for module, name in imports:
        assert hasattr(__import__(module, fromlist=[name]), name), f"{module}.{name}"
    user = next(a for w, a in instructions if w == "USER")
    assert user == f"{kubernetes.UID}:{kubernetes.UID}", "the image's user is the one the manifests run as"
    exposed = {int(p) for w, a in instructions if w == "EXPOSE" for p in a.split()}
    assert {8000, 8001, 8002, kubernetes.API_PORT} <= exposed


def assert_cli_accepts(command_lines: list[list[str]]) -> None:
    """Each `mmserve CMD ARGS...` names a command and options that exist: `CMD ARGS... --help` exits 0 (click
    rejects an unknown command or option before it prints the help); in this process, which is what
    `python -m mmserve.cli` runs (test_the_cli_module_runs_each_command_the_deployment_uses)."""
    runner = CliRunner()
    for words in command_lines:
        assert words[0] == "mmserve", words
        result = runner.invoke(app, [*words[1:], "--help"])
        assert result.exit_code == 0 and "Usage: " in result.output, (words, result.output[-500:])


def test_the_cli_module_runs_each_command_the_deployment_uses():
    """`python -m mmserve.cli --help` lists every command the Dockerfile and the manifests run (each one's own
    `--help`, with the very arguments used, runs in-process in assert_cli_accepts: the same click app)."""
    result = subprocess.run([sys.executable, "-m", "mmserve.cli", "--help"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^  ([a-z][a-z0-9-]*) ", result.stdout, flags=re.MULTILINE))
    used = {words[1] for words in dockerfile_command_lines()} | {
        c["args"][0] for name in OPTION_SETS for d in render_set(name) if d["kind"] == "Deployment"
        for c in containers(d)}
    assert used == {"export", "build", "serve", "api"} and used <= listed, (used, listed)


# -- Milvus ----------------------------------------------------------------------------------------------------------


def test_milvus_values_parse_and_match_the_uri_the_readme_gives():
    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "milvus-values.yaml").read_text())
    assert values["cluster"]["enabled"] is False and values["standalone"]["persistence"]["enabled"] is True
    for part in ("standalone", "minio"):
        assert values[part]["resources"]["requests"]["memory"]
    readme = (ROOT / "README.md").read_text()
    assert "-f deploy/k8s/milvus-values.yaml" in readme and f"--milvus-uri {MILVUS_URI}" in readme
    assert "docker build -f deploy/docker/Dockerfile" in readme
