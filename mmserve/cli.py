"""`mmserve` command line.

    mmserve info                 what model, runtime and CPU features are in use
    mmserve build [MODEL_DIR]    write the Triton model repository
    mmserve serve                start Triton on the repository (building it first if missing)
    mmserve export               export the model's towers to ONNX (needs the train extra)
    mmserve demo                 end-to-end demo on a synthetic gallery
    mmserve quality              held-out quality figures of the model
    mmserve embed-text TEXT...   print text embeddings (JSON lines)
    mmserve embed-image FILE...  print image embeddings (JSON lines)

Options common to all commands may also be set as MMSERVE_* environment
variables (see README, Configuration).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

from mmserve.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        key: value
        for key, value in (
            ("model_dir", args.model_dir),
            ("cache_dir", args.cache_dir),
            ("runtime", args.runtime),
            ("threads", args.threads),
            ("batch_size", args.batch_size),
        )
        if value is not None
    }
    return Settings(**overrides)


def cmd_info(args: argparse.Namespace) -> int:
    from mmserve.cpu import cpu_features, resample_kernel
    from mmserve.export import is_current
    from mmserve.model import ClipModelInfo

    settings = _settings(args)
    info = ClipModelInfo.from_dir(settings.model_dir)
    print(f"model directory   {info.path}")
    print(f"image size        {info.image_size} (resize shortest edge to {info.resize_shortest_edge}, "
          f"{info.resample})")
    print(f"mean / std        {info.image_mean} / {info.image_std}")
    print(f"context length    {info.context_length}")
    print(f"embedding dim     {info.embedding_dim}")
    print(f"runtime           {settings.runtime} (precision {settings.precision})")
    exported = is_current(settings.model_dir, settings.export_dir())
    print(f"ONNX export       {settings.export_dir()} ({'current' if exported else 'missing: run mmserve export'})")
    print(f"cpu features      {' '.join(cpu_features())}")
    print(f"resample kernels  {resample_kernel()}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import importlib.util

    from mmserve.export import export_towers

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        print("export needs torch and transformers: pip install 'mmserve[train]'", file=sys.stderr)
        return 2
    settings = _settings(args)
    out = Path(args.out) if args.out else settings.export_dir()
    t = time.perf_counter()
    export_towers(settings.model_dir, out, force=args.force)
    print(f"towers of {settings.model_dir} in {out} ({time.perf_counter() - t:.1f} s)")
    return 0


def _repository_options(args: argparse.Namespace, settings: Settings):
    from mmserve.serving.repository import RepositoryOptions

    return RepositoryOptions.from_settings(
        settings,
        max_batch_size=args.max_batch_size,
        tower_queue_delay_us=args.queue_delay_us,
        max_queue_size=args.max_queue_size,
        tower_instances=args.tower_instances,
        preprocess_instances=args.preprocess_instances,
        preprocess_threads=args.preprocess_threads,
        precision=args.precision,
        exact_preprocessing=True if args.exact else None,
    )


def _build(args: argparse.Namespace, settings: Settings, repository: Path | None = None) -> Path:
    from mmserve.serving.repository import build_repository

    t = time.perf_counter()
    out = build_repository(settings, repository or args.repository, _repository_options(args, settings))
    print(f"model repository for {settings.model_dir} written to {out} ({time.perf_counter() - t:.1f} s)")
    return out


def cmd_build(args: argparse.Namespace) -> int:
    if args.model:
        args.model_dir = args.model
    _build(args, _settings(args))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from mmserve.serving.server import TritonServer

    settings = _settings(args)
    if args.rebuild or not (args.repository / "embed_image" / "config.pbtxt").is_file():
        _build(args, settings)
    server = TritonServer(
        repository=args.repository.resolve(), host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, admin_key=args.admin_key, cache_dir=settings.cache_dir,
        log_verbose=args.log_verbose,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    t = time.perf_counter()
    print(f"starting tritonserver on {args.repository} ...", flush=True)
    server.start(timeout_s=args.start_timeout)
    print(f"ready in {time.perf_counter() - t:.1f} s\n"
          f"  gRPC     {server.grpc_url}\n  HTTP     {server.http_url}\n  metrics  {server.metrics_url}\n"
          f"models: embed_image, embed_text (ensembles); image_tower, text_tower, image_preprocess, text_tokenize\n"
          "Ctrl-C stops the server.", flush=True)
    while not stop.wait(0.5):
        if server.process is None or server.process.poll() is not None:
            code = server.stop()
            print(f"tritonserver exited with status {code}", file=sys.stderr)
            return 1
    print("shutting down ...", flush=True)
    code = server.stop()
    print(f"tritonserver stopped (status {code})", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mmserve.demo import run_demo

    settings = _settings(args)
    if args.in_process:
        from mmserve.embedder import LocalEmbedder

        embedder = LocalEmbedder(settings)
        print(f"model: {settings.model_dir} (in-process, runtime {settings.runtime})")
        run_demo(Path(args.workdir), args.gallery_size, embedder)
        return 0

    import mmserve
    from mmserve.serving.server import TritonServer, free_port

    repository = Path(args.workdir) / "model_repository"
    _build(args, settings, repository)
    server = TritonServer(
        repository=repository.resolve(), http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
        cache_dir=settings.cache_dir, log_file=Path(args.workdir) / "tritonserver.log",
    )
    t = time.perf_counter()
    with server, mmserve.Client(server.grpc_url, max_in_flight=4) as client:
        summary = client.model_summary()
        print(f"tritonserver ready in {time.perf_counter() - t:.1f} s at {server.grpc_url} "
              f"(log: {server.log_file})")
        print(f"model: {settings.model_dir} (image {summary.image_size}px, context {summary.context_length}, "
              f"dim {summary.embedding_dim}, runtime {settings.runtime})")
        run_demo(Path(args.workdir), args.gallery_size, client)
        print("\n== what Triton saw (dynamic batching) ==")
        for model in client.statistics()["model_stats"]:
            sizes = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in model.get("batch_stats", [])}
            requests = int(model["inference_stats"]["success"]["count"])
            print(f"  {model['name']:<17} {requests:>5} requests in {sum(sizes.values()):>4} executions, "
                  f"largest batch {max(sizes, default=0)}")
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from mmserve.embedder import LocalEmbedder
    from mmserve.quality import evaluate

    embedder = LocalEmbedder(_settings(args))
    report = evaluate(
        embedder.embed_pixels, embedder.embed_texts, image_size=embedder.info.image_size,
        per_combination=args.per_combination,
    )
    print(f"held-out images: {report.images}")
    for line in report.lines():
        print(line)
    return 0


def cmd_embed_text(args: argparse.Namespace) -> int:
    from mmserve.embedder import LocalEmbedder

    embedder = LocalEmbedder(_settings(args))
    for text, vector in zip(args.texts, embedder.embed_texts(args.texts)):
        print(json.dumps({"text": text, "embedding": [round(float(v), 6) for v in vector]}))
    return 0


def cmd_embed_image(args: argparse.Namespace) -> int:
    from mmserve.embedder import LocalEmbedder

    embedder = LocalEmbedder(_settings(args))
    for path, vector in zip(args.files, embedder.embed_images(args.files)):
        print(json.dumps({"file": str(path), "embedding": [round(float(v), 6) for v in vector]}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmserve", description="Multimodal (CLIP) embedding server and search.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model-dir", type=Path, help="local Hugging Face CLIP directory "
                        "(default: the bundled model; env MMSERVE_MODEL_DIR)")
    common.add_argument("--cache-dir", type=Path, help="where ONNX exports live (default ~/.cache/mmserve)")
    common.add_argument("--runtime", choices=("openvino", "onnxruntime"), help="CPU runtime (default openvino)")
    common.add_argument("--threads", type=int, help="inference threads per tower (default: all cores)")
    common.add_argument("--batch-size", type=int, help="items per tower call (default 64)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("info", parents=[common], help="show model, runtime and CPU features").set_defaults(
        func=cmd_info)
    p = sub.add_parser("export", parents=[common], help="export both towers to ONNX")
    p.add_argument("--out", help="output directory (default: the cache, keyed by the weights)")
    p.add_argument("--force", action="store_true", help="export even when a current export exists")
    p.set_defaults(func=cmd_export)
    build = argparse.ArgumentParser(add_help=False)
    build.add_argument("--max-batch-size", type=int, help="largest batch per model (default 64)")
    build.add_argument("--queue-delay-us", type=int,
                       help="dynamic batching: how long a tower waits to fill a batch (default 2000)")
    build.add_argument("--max-queue-size", type=int,
                       help="requests queued per model before new ones are refused (default 256)")
    build.add_argument("--tower-instances", type=int, help="processes per tower (default 1)")
    build.add_argument("--preprocess-instances", type=int, help="image_preprocess processes (default 1)")
    build.add_argument("--preprocess-threads", type=int, help="decode threads per instance (default: all cores)")
    build.add_argument("--precision", choices=("auto", "f32"), help="tower precision (default auto)")
    build.add_argument("--exact", action="store_true",
                       help="bit-exact Pillow preprocessing (no reduced-scale JPEG decode)")
    p = sub.add_parser("build", parents=[common, build], help="write the Triton model repository",
                       description="Export the model's towers (if needed) and write a Triton model repository. "
                       "--threads sets the runtime threads per tower instance.")
    p.add_argument("model", nargs="?", type=Path, help="CLIP model directory (default: the bundled model)")
    p.add_argument("--repository", type=Path, default=Path("model_repository"),
                   help="model repository directory to write (default ./model_repository)")
    p.set_defaults(func=cmd_build)
    p = sub.add_parser("serve", parents=[common, build], help="start Triton on the model repository",
                       description="Start tritonserver on the repository, building it first when it does not "
                       "exist. Binds 127.0.0.1 unless --host says otherwise. Admin APIs (model repository, "
                       "shared memory, logging, trace) are closed unless --admin-key is given.")
    p.add_argument("--repository", type=Path, default=Path("model_repository"),
                   help="model repository directory (default ./model_repository)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port (default 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002)")
    p.add_argument("--admin-key", help="open the admin APIs to requests with header "
                   "'mmserve-admin-key: KEY' (default: closed)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the repository even if it exists")
    p.add_argument("--log-verbose", type=int, default=0, help="tritonserver verbose log level (default 0)")
    p.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for readiness (default 300)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("demo", parents=[common, build], help="end-to-end demo on a synthetic gallery",
                       description="Build the model repository in WORKDIR, start tritonserver on free loopback "
                       "ports, embed a generated gallery through it and run every query kind.")
    p.add_argument("--in-process", action="store_true", help="skip Triton: embed in this process")
    p.add_argument("--workdir", default="build/demo", help="where the gallery is written (default build/demo)")
    p.add_argument("--gallery-size", type=int, default=300, help="gallery images (default 300)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("quality", parents=[common], help="held-out zero-shot and retrieval figures")
    p.add_argument("--per-combination", type=int, default=5, help="held-out images per attribute combination")
    p.set_defaults(func=cmd_quality)
    p = sub.add_parser("embed-text", parents=[common], help="embed texts, print JSON lines")
    p.add_argument("texts", nargs="+")
    p.set_defaults(func=cmd_embed_text)
    p = sub.add_parser("embed-image", parents=[common], help="embed image files, print JSON lines")
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(func=cmd_embed_image)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Ctrl-C: stop quietly with the conventional status instead of a traceback.
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except (FileNotFoundError, ValueError, LookupError) as error:
        print(f"mmserve: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
