"""How many Triton model instances and runtime threads to use on this machine.

Builds one model repository per configuration, starts the real tritonserver
on it, and drives it with closed-loop clients (JPEG bytes in, embeddings out;
and short texts). Configurations run interleaved for several rounds; the table
shows the median throughput of each as a ratio to the default configuration.

    python bench/bench_instances.py [--seconds 6] [--rounds 3] [--vit-b32 DIR]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import mmserve
from mmserve.dev import synthetic as S
from mmserve.serving.triton.repository import build_repository
from mmserve.serving.server import TritonServer, free_port
from mmserve.config import Settings

CONFIGS = {
    "1 tower x all threads, 1 decode (default)": {},
    "2 towers x 1 thread, 1 decode": {"tower_instances": 2, "threads": 1},
    "1 tower x all threads, 2 decode x 1 thread": {"preprocess_instances": 2, "preprocess_threads": 1},
    "2 towers x 1 thread, 2 decode x 1 thread": {
        "tower_instances": 2, "threads": 1, "preprocess_instances": 2, "preprocess_threads": 1},
}


def jpeg_gallery(count: int, size: int) -> list[bytes]:
    from PIL import Image

    images = []
    for scene in S.gallery_scenes(count, seed=11):
        buffer = io.BytesIO()
        Image.fromarray(S.render_scene(scene, size)).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def closed_loop(call, clients: int, seconds: float) -> float:
    """Items per second with `clients` threads each calling `call()` back to back."""
    done = []
    stop = time.monotonic() + seconds

    def worker():
        count = 0
        while time.monotonic() < stop:
            count += call()
        done.append(count)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - start)


def measure(settings: Settings, options: dict, workdir: Path, images: list[bytes], texts: list[str],
            seconds: float) -> tuple[float, float]:
    repository = build_repository(settings.model_copy(update=options), workdir / "repository")
    server = TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                          cache_dir=settings.cache_dir, log_file=workdir / "tritonserver.log")
    with server, mmserve.Client(server.grpc_url, max_in_flight=1) as client:
        client.embed_images(images[:8])
        image_rate = closed_loop(lambda: len(client.embed_images(images[:8])), clients=8, seconds=seconds)
        text_rate = closed_loop(lambda: len(client.embed_texts(texts)), clients=8, seconds=seconds)
    return image_rate, text_rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="load per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, help="CLIP directory (default: the bundled model)")
    parser.add_argument("--image-size", type=int, default=512, help="side of the JPEGs sent (default 512)")
    args = parser.parse_args()
    settings = Settings(**({"model_dir": args.model_dir} if args.model_dir else {}))
    images = jpeg_gallery(8, args.image_size)
    texts = [f"a small {c} {s} on the left" for c in S.COLORS for s in S.SHAPES][:16]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for name, options in CONFIGS.items():
                rates = measure(settings, options, Path(tmp), images, texts, args.seconds)
                results[name].append(rates)
                print(f"round {round_index + 1} {name}: {rates[0]:.0f} images/s, {rates[1]:.0f} texts/s",
                      file=sys.stderr)
    base = [statistics.median(r[i] for r in results[next(iter(CONFIGS))]) for i in (0, 1)]
    print(f"\n{settings.model_dir.name}: {args.image_size}px JPEGs in requests of 8, 16 texts per request, "
          f"8 closed-loop clients over gRPC; medians of {args.rounds} rounds")
    print("| configuration | images/s | ratio | texts/s | ratio |\n|---|---:|---:|---:|---:|")
    for name in CONFIGS:
        image_rate, text_rate = (statistics.median(r[i] for r in results[name]) for i in (0, 1))
        print(f"| {name} | {image_rate:.0f} | {image_rate / base[0]:.2f} | {text_rate:.0f} | "
              f"{text_rate / base[1]:.2f} |")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
