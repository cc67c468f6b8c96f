"""The HTTP API's cost, measured side by side: OpenAI-style `POST /v1/embeddings` through `mmserve api` against
the same requests sent straight to the server over gRPC, in one run; and `/v1/search` latency over 100,000 and
1,000,000 vectors.

    python bench/bench_api.py [--vit-b32] [--seconds 5] [--concurrency 8,16,32,64] [--sizes 100000,1000000]
                              [--update BENCHMARKS.md]

- One `mmserve serve` (the bundled model, or a full-size ViT-B/32 with random weights) and one `mmserve api`
  process in front of it, each in its own process as in production, on this host's cores.
- Closed-loop sweeps, one text (or JPEG data URI) per request, the two targets interleaved at each
  concurrency; the figure is each target's best items/s over the steps without errors and the ratio of the bests
  (goal: the API at least 85% of direct gRPC for texts), and the ratio at equal concurrency.
- Search: random unit vectors (the model's dimension) in an index per size (kept in --index-dir between runs:
  building 1,000,000 takes minutes), 300 sequential queries each by vector (the index alone) and by text
  (embedding + index), p50/p99 through the API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmserve.cpu import cpu_features  # noqa: E402
from mmserve.dev import loadtest  # noqa: E402
from mmserve.dev.soak import ServeProcess  # noqa: E402


def build_index(directory: Path, size: int, dim: int) -> Path:
    from mmserve.index import Index, index_exists

    path = directory / f"random-{size}-{dim}.index"
    if index_exists(path):
        return path
    rng = np.random.default_rng(size)
    started = time.perf_counter()
    with Index.create(path, dim=dim) as index:
        for start in range(0, size, 100_000):
            count = min(100_000, size - start)
            vectors = rng.standard_normal((count, dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            index.add(vectors, [{"uri": f"item-{start + i}.jpg", "tags": ["even" if i % 2 else "odd"]}
                                for i in range(count)])
        index.save()
    print(f"built a {size:,}-vector index in {time.perf_counter() - started:.0f} s: {path}", flush=True)
    return path


class ApiProcess:
    """`mmserve api` (uvicorn), or the same app under granian (`http_server="granian"`), in its own process."""

    def __init__(self, server: str, indexes: dict[str, Path], log: Path, http_server: str = "uvicorn") -> None:
        from mmserve.api import ApiSettings
        from mmserve.serving.server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        if http_server == "granian":
            self.env["MMSERVE_API_SETTINGS"] = ApiSettings(server=server, indexes=indexes).model_dump_json()
            self.command = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--loop", "uvloop",
                            "--host", "127.0.0.1", "--port", str(self.port), "mmserve.api.app:app_from_environment"]
        else:
            self.command = [sys.executable, "-m", "mmserve.cli", "api", "--server", server, "--port", str(self.port),
                            *[arg for name, path in indexes.items() for arg in ("--index", f"{name}={path}")]]
        self.log = log

    def __enter__(self) -> ApiProcess:
        self.process = subprocess.Popen(self.command, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                        env=self.env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"mmserve api did not become healthy; see {self.log}")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())


async def sweep(direct, api, payloads, workload: str, levels: list[int], seconds: float):
    best = {"grpc": 0.0, "api": 0.0}
    rows = []
    for level in levels:
        for name, target in (("grpc", direct()), ("api", api())):
            (step,) = await loadtest.sweep(target, payloads, workload, [level], seconds, lambda s: None)
            if step.errors == 0:  # a step with refused requests does not count as throughput
                best[name] = max(best[name], step.throughput)
            rows.append((workload, name, level, step.throughput, step.p50_ms, step.p99_ms, step.errors))
            print(f"  {workload} {name:>4} x{level:<3} {step.throughput:8.1f} items/s  p50 {step.p50_ms or 0:6.1f} ms  "
                  f"p99 {step.p99_ms or 0:6.1f} ms  errors {step.errors}", flush=True)
    return best, rows


def search_latency(api: ApiProcess, index: str, dim: int, queries: int = 300) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(7)
    results = {}
    for kind in ("vector", "text"):
        times = []
        for i in range(queries):
            if kind == "vector":
                vector = rng.standard_normal(dim)
                body = {"vector": (vector / np.linalg.norm(vector)).tolist(), "k": 10, "index": index}
            else:
                body = {"query": f"a photo of a red circle number {i}", "k": 10, "index": index}
            started = time.perf_counter()
            api.post("/v1/search", body)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        results[kind] = (statistics.median(times), times[int(0.99 * (len(times) - 1))])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vit-b32", action="store_true", help="a full-size ViT-B/32 (random weights)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="8,16,32,64")
    parser.add_argument("--workloads", default="text,image")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--index-dir", type=Path, default=Path.home() / ".cache" / "mmserve" / "bench-indexes")
    parser.add_argument("--update", type=Path, help="replace the API section of this Markdown file")
    parser.add_argument("--http-server", default="uvicorn", choices=("uvicorn", "granian"),
                        help="the ASGI server under the API (granian: pip install granian)")
    args = parser.parse_args()

    from mmserve.config import Settings
    from mmserve.models.export import export_towers
    from mmserve.models.info import ModelInfo
    from mmserve.serving.triton.repository import build_repository

    work = Path(tempfile.mkdtemp(prefix="mmserve-bench-api-"))
    settings = Settings()
    if args.vit_b32:
        from mmserve.models.towers import write_random_clip

        settings = settings.model_copy(update={"model_dir": write_random_clip(work / "vit-b32", seed=1)})
    export_towers(settings.model_dir, settings.export_dir())
    dim = ModelInfo.from_dir(settings.model_dir).embedding_dim
    repository = build_repository(settings, work / "repository")
    args.index_dir.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    indexes = {f"n{size}": build_index(args.index_dir, size, dim) for size in sizes}
    env = dict(os.environ, MMSERVE_CACHE_DIR=str(settings.cache_dir), MMSERVE_MODEL_DIR=str(settings.model_dir))
    model = ("ViT-B/32 (random weights)" if args.vit_b32 else "the bundled model") + f", API on {args.http_server}"
    lines = [f"{model}; host: {os.cpu_count()} cores, {' '.join(cpu_features())}; "
             f"{time.strftime('%Y-%m-%d')}; {args.seconds:g} s per step", ""]
    images, texts = loadtest.sample_payloads()
    with ServeProcess(repository, env=env, log=work / "serve.log") as served, \
            ApiProcess(served.urls["grpc"], indexes, work / "api.log", args.http_server) as api:
        levels = [int(c) for c in args.concurrency.split(",")]
        table = ["| workload | direct gRPC items/s (best) | API items/s (best) | API / direct (bests) | API / direct "
                 "(same concurrency, lowest) |", "|---|---|---|---|---|"]
        for workload in args.workloads.split(","):
            payloads = loadtest.Payloads(workload, images, texts)  # type: ignore[arg-type]
            best, rows = asyncio.run(sweep(lambda: loadtest.TritonTarget(served.urls["grpc"]),
                                           lambda: loadtest.OpenAiTarget(api.url), payloads, workload, levels,
                                           args.seconds))
            paired = {}
            for _, name, level, rate, _, _, errors in rows:
                paired.setdefault(level, {})[name] = rate if errors == 0 else None
            same = [p["api"] / p["grpc"] for p in paired.values() if p.get("api") and p.get("grpc")]
            table.append(f"| {workload} | {best['grpc']:,.0f} | {best['api']:,.0f} | "
                         f"{best['api'] / best['grpc']:.0%} | {min(same):.0%} |")
        search = ["", "| index size | search by vector p50 / p99 ms | search by text p50 / p99 ms |", "|---|---|---|"]
        for size in sizes:
            figures = search_latency(api, f"n{size}", dim)
            search.append(f"| {size:,} | {figures['vector'][0]:.1f} / {figures['vector'][1]:.1f} | "
                          f"{figures['text'][0]:.1f} / {figures['text'][1]:.1f} |")
            print(search[-1], flush=True)
    lines += table + search
    report = "\n".join(lines)
    print("\n" + report)
    if args.update:
        start, end = "<!-- api: bench/bench_api.py -->", "<!-- /api -->"
        text = args.update.read_text() if args.update.exists() else ""
        block = f"{start}\n{report}\n{end}"
        if start in text and end in text:
            text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
        else:
            text += f"\n## HTTP API: overhead against direct gRPC, search latency\n\n{block}\n"
        args.update.write_text(text)


if __name__ == "__main__":
    main()
