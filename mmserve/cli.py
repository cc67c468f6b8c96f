"""`mmserve` command line.

    mmserve info                 what model, runtime and CPU features are in use
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


def cmd_demo(args: argparse.Namespace) -> int:
    from mmserve.demo import run_demo
    from mmserve.embedder import LocalEmbedder

    run_demo(Path(args.workdir), args.gallery_size, LocalEmbedder(_settings(args)))
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
    p = sub.add_parser("demo", parents=[common], help="end-to-end demo on a synthetic gallery")
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
