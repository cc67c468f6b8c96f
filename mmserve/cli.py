"""`mmserve` command line (typer + rich).

Serving:   build, serve, demo
Search:    index, search, classify, info   (through a running server; --server, --index)
Local:     export, quality, embed-text, embed-image   (in-process, no server)

Every option with an MMSERVE_* variable in README, Configuration, may be set
there instead. Errors print one line and exit 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

# `serve` and `demo` start tritonserver and nginx (fork + exec) while gRPC threads run; gRPC's fork handlers
# could do nothing for a child that execs at once, and would log a line for every start.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from mmserve.config import Settings  # noqa: E402

app = typer.Typer(
    name="mmserve", help="Multimodal (CLIP) embedding server and cross-modal search.", no_args_is_help=True,
    add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
)
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

# Options shared by several commands (None: the Settings default / MMSERVE_* variable).
ModelDir = Annotated[Optional[Path], typer.Option(
    help="Local Hugging Face CLIP directory (default: the bundled model; env MMSERVE_MODEL_DIR).")]
CacheDir = Annotated[Optional[Path], typer.Option(help="Where ONNX exports live (default ~/.cache/mmserve).")]
Runtime = Annotated[Optional[str], typer.Option(help="CPU runtime: openvino (default) or onnxruntime.")]
Threads = Annotated[Optional[int], typer.Option(help="Runtime threads per tower (default: all cores).")]
BatchSize = Annotated[Optional[int], typer.Option(help="Items per tower call / request (default 64).")]
ServerUrl = Annotated[Optional[str], typer.Option(
    "--server", help="grpc://HOST:PORT or http://HOST:PORT (default grpc://127.0.0.1:8001; env MMSERVE_SERVER).")]
ApiKey = Annotated[Optional[str], typer.Option(
    "--api-key", help="Key for a server started with --api-key (env MMSERVE_API_KEY).")]
CaCert = Annotated[Optional[Path], typer.Option(
    "--ca-cert", help="grpcs:// or https:// servers: CA file that signed the server's certificate (default: the "
    "system's trust store; env MMSERVE_CA_CERT).")]
ClientCert = Annotated[Optional[Path], typer.Option(
    "--client-cert", help="Mutual TLS: this client's certificate (env MMSERVE_CLIENT_CERT).")]
ClientKey = Annotated[Optional[Path], typer.Option(
    "--client-key", help="Mutual TLS: its key (env MMSERVE_CLIENT_KEY).")]
IndexPath = Annotated[Optional[Path], typer.Option(
    "--index", help="Index directory (default ~/.local/share/mmserve/index; env MMSERVE_INDEX).")]
Repository = Annotated[Path, typer.Option(help="Model repository directory.")]
MaxBatchSize = Annotated[Optional[int], typer.Option(help="Largest batch per model (default 64).")]
QueueDelay = Annotated[Optional[int], typer.Option(
    "--queue-delay-us", help="Dynamic batching: how long a tower waits to fill a batch (default 2000).")]
MaxQueueSize = Annotated[Optional[int], typer.Option(
    help="Requests queued per model before new ones are refused at once (default: about 1 s of the tower's "
    "throughput, timed at build, at least one batch).")]
TowerInstances = Annotated[Optional[int], typer.Option(help="Processes per tower (default 1).")]
PreprocessInstances = Annotated[Optional[int], typer.Option(help="image_preprocess processes (default 1).")]
PreprocessThreads = Annotated[Optional[int], typer.Option(help="Decode threads per instance (default: all).")]
Precision = Annotated[Optional[str], typer.Option(
    help="Tower precision: auto (default: bf16 where the CPU has it), f32, or int8 (uint8 weights, faster).")]
Exact = Annotated[bool, typer.Option("--exact", help="Bit-exact Pillow preprocessing (no reduced-scale decode).")]


def _settings(**values) -> Settings:
    return Settings(**{key: value for key, value in values.items() if value is not None})


def _build_values(max_batch_size, queue_delay_us, max_queue_size, tower_instances, preprocess_instances,
                  preprocess_threads, precision, exact) -> dict[str, object]:
    """The repository options given on the command line, as Settings fields."""
    return {"max_batch_size": max_batch_size, "tower_queue_delay_us": queue_delay_us,
            "max_queue_size": max_queue_size, "tower_instances": tower_instances,
            "preprocess_instances": preprocess_instances, "preprocess_threads": preprocess_threads,
            "precision": precision, "exact_preprocessing": True if exact else None}


def _build(settings: Settings, repository: Path) -> Path:
    from mmserve.serving.triton.repository import build_repository

    t = time.perf_counter()
    built = build_repository(settings, repository)
    out.print(f"model repository for {settings.model_dir} written to {built} ({time.perf_counter() - t:.1f} s)")
    return built


# -- serving ---------------------------------------------------------------------------------------------------


@app.command()
def build(
    model: Annotated[Optional[Path], typer.Argument(help="CLIP model directory (default: the bundled model).")] = None,
    repository: Repository = Path("model_repository"),
    cache_dir: CacheDir = None, runtime: Runtime = None, threads: Threads = None,
    max_batch_size: MaxBatchSize = None, queue_delay_us: QueueDelay = None, max_queue_size: MaxQueueSize = None,
    tower_instances: TowerInstances = None, preprocess_instances: PreprocessInstances = None,
    preprocess_threads: PreprocessThreads = None, precision: Precision = None, exact: Exact = False,
) -> None:
    """Export the model's towers (if needed) and write a Triton model repository."""
    settings = _settings(model_dir=model, cache_dir=cache_dir, runtime=runtime, threads=threads,
                         **_build_values(max_batch_size, queue_delay_us, max_queue_size, tower_instances,
                                         preprocess_instances, preprocess_threads, precision, exact))
    _build(settings, repository)


@app.command()
def serve(
    repository: Repository = Path("model_repository"),
    host: Annotated[Optional[str], typer.Option(
        help="Address the front door binds (default 127.0.0.1; 0.0.0.0 for every interface).")] = None,
    http_port: Annotated[Optional[int], typer.Option(help="HTTP/REST port (default 8000).")] = None,
    grpc_port: Annotated[Optional[int], typer.Option(help="gRPC port (default 8001).")] = None,
    metrics_port: Annotated[Optional[int], typer.Option(help="Prometheus metrics port (default 8002).")] = None,
    api_key: Annotated[Optional[list[str]], typer.Option(
        "--api-key", metavar="KEY", help="Require 'Authorization: Bearer KEY' (gRPC metadata authorization) on inference, metadata "
        "and statistics; repeatable (env MMSERVE_API_KEYS, comma-separated). Health stays open.")] = None,
    api_key_file: Annotated[Optional[Path], typer.Option(help="More API keys, one per line.")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option(help="TLS on every port: server certificate (PEM).")] = None,
    tls_key: Annotated[Optional[Path], typer.Option(help="The certificate's private key (PEM).")] = None,
    tls_client_ca: Annotated[Optional[Path], typer.Option(
        help="Mutual TLS: require client certificates signed by this CA (health excepted).")] = None,
    admin_key: Annotated[Optional[str], typer.Option(
        help="Open the admin APIs to requests with header 'mmserve-admin-key: KEY' (default: closed).")] = None,
    max_request_bytes: Annotated[Optional[int], typer.Option(
        help="Largest request body; larger: 413 / RESOURCE_EXHAUSTED (default 80 MiB).")] = None,
    max_in_flight: Annotated[Optional[int], typer.Option(
        help="Requests in progress per port; more: 503 / UNAVAILABLE at once (default: 1.5 times the largest "
        "batch, 96).")] = None,
    hang_timeout: Annotated[Optional[float], typer.Option(
        help="Seconds without an answer after which a model (or tritonserver) counts as hung (default 60).")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild the repository even if it exists.")] = False,
    log_verbose: Annotated[Optional[int], typer.Option(help="tritonserver verbose log level.")] = None,
    start_timeout: Annotated[Optional[float], typer.Option(help="Seconds to wait for readiness (default 300).")] = None,
    model_dir: ModelDir = None, cache_dir: CacheDir = None, runtime: Runtime = None, threads: Threads = None,
    max_batch_size: MaxBatchSize = None, queue_delay_us: QueueDelay = None, max_queue_size: MaxQueueSize = None,
    tower_instances: TowerInstances = None, preprocess_instances: PreprocessInstances = None,
    preprocess_threads: PreprocessThreads = None, precision: Precision = None, exact: Exact = False,
) -> None:
    """Serve the repository (building it first when missing): tritonserver behind a hardened front door, supervised.

    Clients reach nginx on --host (127.0.0.1 unless told otherwise); tritonserver listens on loopback only.
    A model process or tritonserver that dies or hangs is restarted, and readiness says not ready until it
    answers again. The admin APIs are closed unless --admin-key is given. Ctrl-C stops everything cleanly.
    The model and tuning options apply when it builds.
    """
    import logging

    from mmserve.serving.supervisor import Supervisor

    settings = _settings(
        **_build_values(max_batch_size, queue_delay_us, max_queue_size, tower_instances, preprocess_instances,
                        preprocess_threads, precision, exact),
        model_dir=model_dir, cache_dir=cache_dir, runtime=runtime, threads=threads, host=host, http_port=http_port,
        grpc_port=grpc_port, metrics_port=metrics_port, api_keys=tuple(api_key) if api_key else None,
        api_key_file=api_key_file, tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca,
        admin_key=admin_key, max_request_bytes=max_request_bytes, max_in_flight=max_in_flight,
        hang_timeout_s=hang_timeout, log_verbose=log_verbose, start_timeout_s=start_timeout,
    )
    keys = settings.api_keys_in_effect()
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not keys:
        err.print(f"warning: listening on {settings.host} without an API key: anyone who reaches these ports can "
                  "use the server (--api-key KEY or MMSERVE_API_KEYS)")
    if rebuild or not (repository / "embed_image" / "config.pbtxt").is_file():
        _build(settings, repository)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    supervisor = Supervisor(repository, settings, cache_dir=settings.cache_dir)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    t = time.perf_counter()
    out.print(f"starting tritonserver on {repository} ...")
    try:
        supervisor.start(stop)
    except Exception:
        if stop.is_set():
            out.print("interrupted while starting; stopped")
            return
        raise
    access = f"API keys: {len(keys)}" if keys else "no API key (open to whoever reaches the ports)"
    tls = (" with mutual TLS" if settings.tls_client_ca else " with TLS") if settings.tls_cert else ""
    out.print(f"ready in {time.perf_counter() - t:.1f} s{tls}; {access}\n"
              f"  gRPC     {supervisor.grpc_url}\n  HTTP     {supervisor.http_url}\n"
              f"  metrics  {supervisor.metrics_url}\n"
              "models: embed_image, embed_text (ensembles); image_tower, text_tower, image_preprocess, "
              "text_tokenize\nCtrl-C stops the server.")
    sys.stdout.flush()
    code = supervisor.run(stop)
    out.print("shutting down ...")
    out.print(f"tritonserver stopped (status {supervisor.stop()})")
    if code:
        raise typer.Exit(code)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the gallery, repository and log go.")] = Path("build/demo"),
    gallery_size: Annotated[int, typer.Option(help="Gallery images.")] = 300,
    in_process: Annotated[bool, typer.Option("--in-process", help="Skip Triton: embed in this process.")] = False,
    model_dir: ModelDir = None, cache_dir: CacheDir = None, runtime: Runtime = None, threads: Threads = None,
) -> None:
    """End-to-end demo: build the repository, start Triton on free ports, embed a gallery, run every query kind."""
    import mmserve
    from mmserve.dev.demo import run_demo
    from mmserve.dev.loadtest import batch_counts
    from mmserve.serving.server import free_port
    from mmserve.serving.supervisor import supervised
    from mmserve.config import ServeOptions

    settings = _settings(model_dir=model_dir, cache_dir=cache_dir, runtime=runtime, threads=threads)
    if in_process:
        from mmserve.embedder import LocalEmbedder

        out.print(f"model: {settings.model_dir} (in-process, runtime {settings.runtime})")
        run_demo(workdir, gallery_size, LocalEmbedder(settings), out=out.print)
        return
    repository = _build(settings, workdir / "model_repository")
    serve = ServeOptions(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                         triton_log=workdir / "tritonserver.log")
    t = time.perf_counter()
    with supervised(repository.resolve(), serve, cache_dir=settings.cache_dir) as stack, \
            mmserve.Client(stack.grpc_url, max_in_flight=4) as client:
        summary = client.model_summary()
        out.print(f"served as `mmserve serve` does (front door, supervised tritonserver), ready in "
                  f"{time.perf_counter() - t:.1f} s at {stack.grpc_url} (tritonserver's log: {serve.triton_log})")
        out.print(f"model: {settings.model_dir} (image {summary.image_size}px, context {summary.context_length}, "
                  f"dim {summary.embedding_dim}, runtime {settings.runtime})")
        run_demo(workdir, gallery_size, client, out=out.print)
        out.print("\n== what Triton saw (dynamic batching) ==")
        statistics = client.statistics()
        executions = batch_counts(statistics)
        for model in statistics["model_stats"]:
            sizes = executions[model["name"]]
            requests = int(model["inference_stats"]["success"]["count"])
            out.print(f"  {model['name']:<17} {requests:>5} requests in {sum(sizes.values()):>4} executions, "
                      f"largest batch {max(sizes, default=0)}")


# -- search ----------------------------------------------------------------------------------------------------


def _client(settings: Settings):
    import mmserve

    return mmserve.Client(settings.server, batch_size=settings.batch_size, **settings.client_options())


@app.command("index")
def index_command(
    paths: Annotated[list[Path], typer.Argument(help="Image files and folders (walked recursively).")],
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Tag every added image (repeatable).")] = None,
    index: IndexPath = None, server: ServerUrl = None, batch_size: BatchSize = None,
    storage: Annotated[str, typer.Option(help="Vector storage of a new index: f16 or i8.")] = "f16",
    api_key: ApiKey = None, ca_cert: CaCert = None, client_cert: ClientCert = None, client_key: ClientKey = None,
) -> None:
    """Embed images through the server and add them to the index.

    Files already indexed (same content hash) are skipped, so a re-run is incremental and an interrupted run
    resumes. Unreadable or refused files are listed at the end; they do not stop the run.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mmserve.index import Index
    from mmserve.indexing import find_images, index_files

    settings = _settings(index=index, server=server, batch_size=batch_size, api_key=api_key, ca_cert=ca_cert,
                         client_cert=client_cert, client_key=client_key)
    files = find_images(paths)
    with _client(settings) as client:
        summary = client.model_summary()
        store = Index.open_or_create(settings.index, summary.embedding_dim, storage=storage,
                                     model=_model_name(summary))
        with store, Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                             console=err, transient=True) as bar:
            task = bar.add_task("files", total=len(files))
            try:
                report = index_files(store, client, files, batch_size=settings.batch_size, tags=tag or (),
                                     progress=lambda n: bar.advance(task, n))
            except KeyboardInterrupt:
                store.save()
                err.print(f"interrupted: {len(store)} images are indexed and saved; run again to resume")
                raise
    out.print(f"{report.added} added, {report.skipped} already indexed, {len(report.failed)} failed; "
              f"{len(store)} images in {settings.index}")
    for path, reason in report.failed:
        err.print(f"  failed: {path}: {reason}")


def _model_name(summary) -> str:
    return f"dim {summary.embedding_dim}, image {summary.image_size}px"


@app.command()
def search(
    text: Annotated[Optional[str], typer.Argument(help="What to look for (text -> image).")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="Find images like this one instead.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 10,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Only images with this tag (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
    index: IndexPath = None, server: ServerUrl = None,
    api_key: ApiKey = None, ca_cert: CaCert = None, client_cert: ClientCert = None, client_key: ClientKey = None,
) -> None:
    """Search the index with a text or an image; best matches first."""
    from mmserve.index import Index
    from mmserve.search import Search

    if (text is None) == (image is None):
        raise typer.BadParameter("give a text or --image FILE (one of them)")
    settings = _settings(index=index, server=server, api_key=api_key, ca_cert=ca_cert, client_cert=client_cert,
                         client_key=client_key)
    with Index.open(settings.index, view=True) as store, _client(settings) as client:
        finder = Search(client, store)
        hits = finder.search_text(text, k, tags=tag) if text is not None else finder.search_image(image, k, tags=tag)
    if as_json:
        print(json.dumps([{"key": h.key, "score": round(h.score, 6), "uri": h.record.uri,
                           "caption": h.record.caption, "tags": h.record.tags} for h in hits], indent=2))
        return
    table = Table("rank", "score", "uri", "tags", title=f"{len(hits)} of {len(store)} images")
    for rank, hit in enumerate(hits, 1):
        table.add_row(str(rank), f"{hit.score:.3f}", hit.record.uri or str(hit.key), ",".join(hit.record.tags))
    out.print(table)


@app.command()
def classify(
    image: Annotated[Path, typer.Argument(help="Image file.")],
    labels: Annotated[str, typer.Option(help="Comma-separated labels, e.g. 'cat,dog,car'.")],
    template: Annotated[str, typer.Option(help="Prompt template for each label.")] = "{}",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    server: ServerUrl = None,
    api_key: ApiKey = None, ca_cert: CaCert = None, client_cert: ClientCert = None, client_key: ClientKey = None,
) -> None:
    """Zero-shot image -> text: score each label against the image (probabilities at CLIP's temperature)."""
    from mmserve.search import Search

    names = [label.strip() for label in labels.split(",") if label.strip()]
    settings = _settings(server=server, api_key=api_key, ca_cert=ca_cert, client_cert=client_cert,
                         client_key=client_key)
    with _client(settings) as client:
        results = Search(client).classify(image, names, template=template)
    if as_json:
        print(json.dumps([r.model_dump() for r in results], indent=2))
        return
    table = Table("label", "score", "probability")
    for result in results:
        table.add_row(result.label, f"{result.score:.3f}", f"{result.probability:.3f}")
    out.print(table)


@app.command()
def info(
    index: IndexPath = None, model_dir: ModelDir = None, cache_dir: CacheDir = None, runtime: Runtime = None,
) -> None:
    """Model facts, runtime, CPU features, and the index (size, dimensions, storage) if there is one."""
    from mmserve.cpu import cpu_features, resample_kernel
    from mmserve.models.export import is_current
    from mmserve.models.clip import ClipModelInfo

    settings = _settings(model_dir=model_dir, cache_dir=cache_dir, runtime=runtime, index=index)
    model = ClipModelInfo.from_dir(settings.model_dir)
    exported = is_current(settings.model_dir, settings.export_dir())
    rows = [
        ("model directory", str(model.path)),
        ("image size", f"{model.image_size} (resize shortest edge to {model.resize_shortest_edge}, "
                       f"{model.resample})"),
        ("mean / std", f"{model.image_mean} / {model.image_std}"),
        ("context length", str(model.context_length)),
        ("embedding dim", str(model.embedding_dim)),
        ("runtime", f"{settings.runtime} (precision {settings.precision})"),
        ("ONNX export", f"{settings.export_dir()} ({'current' if exported else 'missing: run mmserve export'})"),
        ("cpu features", " ".join(cpu_features())),
        ("resample kernels", resample_kernel()),
    ]
    rows += _index_rows(settings.index)
    for name, value in rows:
        out.print(f"{name:<17} {value}")


def _index_rows(path: Path) -> list[tuple[str, str]]:
    from mmserve.index import Index

    if not (path / "CURRENT").is_file():
        return [("index", f"{path} (none yet: mmserve index FOLDER)")]
    with Index.open(path, view=True) as store:
        return [("index", str(path)), ("index size", f"{len(store)} images"),
                ("index vectors", f"{store.dim} dimensions, {store.storage} storage"),
                ("index model", store.model or "unknown")]


@app.command("bench")
def bench_command(
    workload: Annotated[str, typer.Option(help="image (JPEG bytes), text (~8-word queries) or mixed.")] = "image",
    concurrency: Annotated[str, typer.Option(help="Closed-loop client counts, comma-separated.")] = "1,2,4,8,16,32,64",
    rate: Annotated[Optional[str], typer.Option(
        help="Open-loop Poisson arrival rates (requests/s), comma-separated; none by default.")] = None,
    seconds: Annotated[float, typer.Option(help="Duration of each step.")] = 5.0,
    images: Annotated[Optional[Path], typer.Option(help="Folder of JPEG/PNG files to send (default: generated "
                                                       "640x480 JPEGs).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results here (JSON).")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a throughput plot (PNG) here; with --rate also a "
                                                     "latency plot next to it.")] = None,
    server: ServerUrl = None,
    api_key: ApiKey = None, ca_cert: CaCert = None, client_cert: ClientCert = None, client_key: ClientKey = None,
) -> None:
    """Load-test a running server: one item per request, closed-loop sweep and optional open-loop rates."""
    import asyncio

    from mmserve.dev import loadtest

    if workload not in ("image", "text", "mixed"):
        raise typer.BadParameter("workload must be image, text or mixed")
    settings = _settings(server=server, api_key=api_key, ca_cert=ca_cert, client_cert=client_cert,
                         client_key=client_key)
    with _client(settings) as client:
        client.model_summary()  # fail fast, with a clear error, when the server is not there
    sample_images, texts = loadtest.sample_payloads()
    if images is not None:
        from mmserve.indexing import find_images

        sample_images = [path.read_bytes() for path in find_images([images])[:256]]
    payloads = loadtest.Payloads(workload, sample_images, texts)
    table = Table("mode", "load", "items/s", "p50 ms", "p90 ms", "p99 ms", "errors", "mean batch (tower)")

    def show(step) -> None:
        load = f"{step.concurrency} clients" if step.mode == "closed" else f"{step.offered_rate:g}/s"
        towers = ", ".join(f"{m.split('_')[0]} {b:.1f}" for m, b in step.mean_batch.items() if m.endswith("tower"))
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        table.add_row(step.mode, load, f"{step.throughput:.1f}", fmt(step.p50_ms), fmt(step.p90_ms),
                      fmt(step.p99_ms), str(step.errors), towers)
        err.print(f"  {step.mode} {load}: {step.throughput:.1f} items/s, p50 {fmt(step.p50_ms)} ms, "
                  f"{step.errors} errors")

    levels = [int(c) for c in concurrency.split(",") if c.strip()]
    results = asyncio.run(loadtest.sweep(loadtest.TritonTarget(settings.server, **settings.client_options()), payloads, workload, levels,
                                         seconds, show))
    if rate:
        offered = [float(r) for r in rate.split(",") if r.strip()]
        results += asyncio.run(loadtest.rates(loadtest.TritonTarget(settings.server, **settings.client_options()), payloads, workload, offered,
                                              seconds, show))
    out.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps([r.model_dump() for r in results], indent=2) + "\n")
    if plot is not None:
        loadtest.plot_closed(results, plot, f"{workload}: throughput vs concurrency")
        if rate:
            loadtest.plot_open(results, plot.with_name(plot.stem + "-latency.png"), f"{workload}: latency vs load")
    bad = sum(r.errors for r in results)
    if bad:
        err.print(f"{bad} requests failed; first: {next(r.first_error for r in results if r.errors)}")


# -- local (in-process) ----------------------------------------------------------------------------------------


@app.command()
def export(
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output directory (default: the cache).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Export even when a current export exists.")] = False,
    model_dir: ModelDir = None, cache_dir: CacheDir = None,
) -> None:
    """Export both towers to ONNX (needs the train extra: torch, transformers)."""
    import importlib.util

    from mmserve.models.export import export_towers

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        err.print("export needs torch and transformers: pip install 'mmserve[train]'")
        raise typer.Exit(2)
    settings = _settings(model_dir=model_dir, cache_dir=cache_dir)
    target = out_dir or settings.export_dir()
    t = time.perf_counter()
    export_towers(settings.model_dir, target, force=force)
    out.print(f"towers of {settings.model_dir} in {target} ({time.perf_counter() - t:.1f} s)")


@app.command()
def quality(
    per_combination: Annotated[int, typer.Option(help="Held-out images per attribute combination.")] = 5,
    model_dir: ModelDir = None, cache_dir: CacheDir = None, runtime: Runtime = None, threads: Threads = None,
) -> None:
    """Held-out zero-shot accuracy and text->image precision@5 of the model (in-process)."""
    from mmserve.embedder import LocalEmbedder
    from mmserve.dev.quality import evaluate

    embedder = LocalEmbedder(_settings(model_dir=model_dir, cache_dir=cache_dir, runtime=runtime, threads=threads))
    report = evaluate(embedder.embed_pixels, embedder.embed_texts, image_size=embedder.info.image_size,
                      per_combination=per_combination)
    out.print(f"held-out images: {report.images}")
    for line in report.lines():
        out.print(line)


@app.command("embed-text")
def embed_text(
    texts: Annotated[list[str], typer.Argument(help="Texts to embed.")],
    model_dir: ModelDir = None, cache_dir: CacheDir = None, runtime: Runtime = None, threads: Threads = None,
    batch_size: BatchSize = None,
) -> None:
    """Print text embeddings as JSON lines (in-process)."""
    from mmserve.embedder import LocalEmbedder

    embedder = LocalEmbedder(_settings(model_dir=model_dir, cache_dir=cache_dir, runtime=runtime, threads=threads,
                                       batch_size=batch_size))
    for text, vector in zip(texts, embedder.embed_texts(texts)):
        print(json.dumps({"text": text, "embedding": [round(float(v), 6) for v in vector]}))


@app.command("embed-image")
def embed_image(
    files: Annotated[list[Path], typer.Argument(help="Image files (JPEG or PNG).")],
    model_dir: ModelDir = None, cache_dir: CacheDir = None, runtime: Runtime = None, threads: Threads = None,
    batch_size: BatchSize = None,
) -> None:
    """Print image embeddings as JSON lines (in-process)."""
    from mmserve.embedder import LocalEmbedder

    embedder = LocalEmbedder(_settings(model_dir=model_dir, cache_dir=cache_dir, runtime=runtime, threads=threads,
                                       batch_size=batch_size))
    for path, vector in zip(files, embedder.embed_images(files)):
        print(json.dumps({"file": str(path), "embedding": [round(float(v), 6) for v in vector]}))


def main(argv: list[str] | None = None) -> int:
    from mmserve.client import MmserveError, ServerUnavailableError
    from mmserve.index import IndexLockedError

    # typer returns normally after a Ctrl-C it caught; remember the signal to exit 130 all the same.
    interrupted = threading.Event()

    def on_interrupt(signum, frame) -> None:
        interrupted.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        app(args=argv, prog_name="mmserve", standalone_mode=False)
    except KeyboardInterrupt:
        interrupted.set()
    except typer.Exit as done:
        return done.exit_code
    except (typer.Abort,):
        err.print("aborted")
        return 1
    except (FileNotFoundError, FileExistsError, ValueError, LookupError, PermissionError, MmserveError,
            IndexLockedError) as error:
        err.print(f"mmserve: error: {error}")
        if isinstance(error, ServerUnavailableError):
            err.print("is the server running? start one with `mmserve serve`, or point --server at it")
        return 1
    except Exception as error:
        # Usage errors (typer's click exceptions know how to print themselves).
        if hasattr(error, "show") and isinstance(getattr(error, "exit_code", None), int):
            error.show()
            return error.exit_code
        raise
    if interrupted.is_set():
        err.print("interrupted")
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
