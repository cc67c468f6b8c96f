"""build, serve, demo."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from mmserve.cli import app, err, out
from mmserve.cli.options import BUILD, MODEL, SERVE, config_options
from mmserve.config import Settings

Repository = Annotated[Path, typer.Option(help="Model repository directory.")]


def build_repository(settings: Settings, repository: Path, *, build_engines: bool = True) -> Path:
    from mmserve.serving.triton.repository import build_repository as write
    from mmserve.serving.triton.validate import check_repository

    t = time.perf_counter()
    built = write(settings, repository, build_engines=build_engines)
    problems = check_repository(built, settings.export_dir())
    if problems:
        raise ValueError(f"the repository written to {built} does not check out: " + "; ".join(problems))
    out.print(f"model repository for {settings.model_dir} written to {built} ({time.perf_counter() - t:.1f} s; "
              "configs checked against Triton's schema and the exported graphs)")
    return built


@app.command()
@config_options(*MODEL, *BUILD)
def build(
    model: Annotated[Optional[Path], typer.Argument(help="Model directory (default: the bundled model).")] = None,
    repository: Repository = Path("model_repository"),
    configs_only: Annotated[bool, typer.Option(
        "--configs-only", help="With --runtime tensorrt: write and check the configs without building engines "
        "(for a host without a GPU).")] = False,
    *, settings: Settings,
) -> None:
    """Export the model's towers (if needed) and write a Triton model repository.

    --runtime tensorrt builds TensorRT engines on this host's GPU (cached by model, GPU and TensorRT version);
    --target ngc writes it for NVIDIA's Triton container (README, GPU)."""
    if model is not None:
        settings = settings.model_copy(update={"model_dir": model})
    build_repository(settings, repository, build_engines=not configs_only)


@app.command()
@config_options(*SERVE, *MODEL, *BUILD)
def serve(
    repository: Repository = Path("model_repository"),
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild the repository even if it exists.")] = False,
    api_port: Annotated[Optional[int], typer.Option(
        "--api-port", help="Also serve the HTTP API and search page here (`mmserve api`, on the configured index; "
        "same host and keys).")] = None,
    *, settings: Settings,
) -> None:
    """Serve the repository (building it first when missing): tritonserver behind a hardened front door, supervised.

    Clients reach nginx on --host (127.0.0.1 unless told otherwise); tritonserver listens on loopback only.
    A model process or tritonserver that dies or hangs is restarted, and readiness says not ready until it
    answers again. The admin APIs are closed unless --admin-key is given. Ctrl-C stops everything cleanly.
    The model and tuning options apply when it builds.
    """
    import logging

    from mmserve.serving.supervisor import Supervisor

    keys = settings.api_keys_in_effect()
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not keys:
        err.print(f"warning: listening on {settings.host} without an API key: anyone who reaches these ports can "
                  "use the server (--api-key KEY or MMSERVE_API_KEYS)")
    if rebuild or not (repository / "embed_image" / "config.pbtxt").is_file():
        build_repository(settings, repository)
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
    api = _start_api(settings, supervisor.grpc_url, keys, api_port) if api_port else None
    access = f"API keys: {len(keys)}" if keys else "no API key (open to whoever reaches the ports)"
    tls = (" with mutual TLS" if settings.tls_client_ca else " with TLS") if settings.tls_cert else ""
    out.print(f"ready in {time.perf_counter() - t:.1f} s{tls}; {access}\n"
              f"  gRPC     {supervisor.grpc_url}\n  HTTP     {supervisor.http_url}\n"
              f"  metrics  {supervisor.metrics_url}\n"
              "models: embed_image, embed_text (decode + tower); image_tower, text_tower (the towers alone); "
              "image_preprocess, text_tokenize\nCtrl-C stops the server.")
    sys.stdout.flush()
    code = supervisor.run(stop)
    out.print("shutting down ...")
    if api is not None:
        api.should_exit = True
    out.print(f"tritonserver stopped (status {supervisor.stop()})")
    if code:
        raise typer.Exit(code)


def _start_api(settings: Settings, server_url: str, keys: tuple[str, ...], port: int):
    """The HTTP API in a thread of this process, in front of the front door just started."""
    import uvicorn

    from mmserve.api import ApiSettings, create_app

    api_settings = ApiSettings(
        server=server_url, indexes={"default": settings.index}, api_keys=keys, server_api_key=keys[0] if keys else None,
        client_options={k: v for k, v in settings.client_options().items() if k != "api_key" and v is not None})
    server = uvicorn.Server(uvicorn.Config(create_app(api_settings), host=settings.host, port=port,
                                           log_level="warning", access_log=False))
    # In a thread, uvicorn leaves signals alone: the supervisor owns Ctrl-C and stops it.
    threading.Thread(target=server.run, name="mmserve-api", daemon=True).start()
    out.print(f"  API      http://{settings.host}:{port} (OpenAI-compatible /v1/embeddings, search, the page at /)")
    return server


@app.command()
@config_options(*MODEL)
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the gallery, repository and log go.")] = Path("build/demo"),
    gallery_size: Annotated[int, typer.Option(help="Gallery images.")] = 300,
    in_process: Annotated[bool, typer.Option("--in-process", help="Skip Triton: embed in this process.")] = False,
    *, settings: Settings,
) -> None:
    """End-to-end demo: serve the model as `mmserve serve` does, embed a gallery, run every query kind."""
    import mmserve
    from mmserve.config import ServeOptions
    from mmserve.dev.demo import run_demo
    from mmserve.dev.loadtest import batch_counts
    from mmserve.serving.server import free_port
    from mmserve.serving.supervisor import supervised

    if in_process:
        from mmserve.embedder import LocalEmbedder

        out.print(f"model: {settings.model_dir} (in-process, runtime {settings.runtime})")
        run_demo(workdir, gallery_size, LocalEmbedder(settings), out=out.print)
        return
    repository = build_repository(settings, workdir / "model_repository")
    serve_options = ServeOptions(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                                 triton_log=workdir / "tritonserver.log")
    t = time.perf_counter()
    with supervised(repository.resolve(), serve_options, cache_dir=settings.cache_dir) as stack, \
            mmserve.Client(stack.grpc_url, max_in_flight=4) as client:
        summary = client.model_summary()
        out.print(f"served as `mmserve serve` does (front door, supervised tritonserver), ready in "
                  f"{time.perf_counter() - t:.1f} s at {stack.grpc_url} (tritonserver's log: "
                  f"{serve_options.triton_log})")
        out.print(f"model: {settings.model_dir} (image {summary.image_size}px, context {summary.context_length}, "
                  f"dim {summary.embedding_dim}, runtime {settings.runtime})")
        run_demo(workdir, gallery_size, client, out=out.print)
        out.print("\n== what Triton saw (dynamic batching) ==")
        statistics = client.statistics()
        executions = batch_counts(statistics)
        for model in statistics["model_stats"]:
            sizes = executions[model["name"]]
            requests = int(model.get("inference_stats", {}).get("success", {}).get("count", 0))  # 0s are omitted
            if not requests:
                continue
            out.print(f"  {model['name']:<17} {requests:>5} requests in {sum(sizes.values()):>4} executions, "
                      f"largest batch {max(sizes, default=0)}")
