"""A capacity model: how many Triton replicas a target request rate needs, and how much memory an index takes
per million vectors for each storage type, from costs measured on this host.

    python bench/capacity.py --rate 2000 --workload text [--p99-ms 100] [--model-dir DIR] [--seconds 4]

Replicas. One served stack (`mmserve serve`'s front door and supervised
tritonserver, the bundled model or `--model-dir`) is swept with closed loops of
one-item requests at rising concurrency. A replica's capacity is the highest
throughput of a step with no errors and a p99 within `--p99-ms`. Then

    replicas = ceil(rate / (capacity x utilisation)) + spare

with `--utilisation` (0.7: headroom for bursts; queueing delay grows fast past
it) and `--spare` replicas (1: the client retries on another replica when one
dies, so the others must carry its share meanwhile). Assumptions: replicas on
machines like this one (same CPU, cores and runtime; the client's cost is not
on them), one-item requests as interactive users send them (batched clients
get more per replica), and the load balanced evenly (the SDK's least-outstanding
balancing does this within 20%: tests/test_replicas.py).

Index memory. `--vectors` random unit vectors (default 20,000) of each
dimension (the model's, and 512 / 768 for ViT-B/32- and L/14-class
models) are indexed by the embedded backend in f16 and i8 storage; what it
holds is measured from the saved generation (the usearch graph with its
vectors, which a view memory-maps; the exact matrix; the metadata store per
item with a 60-byte URI and two tags, which a writer loads into memory)
and scaled linearly to one million. Milvus rows are given by formula, not
measured (no Milvus cluster here): FLOAT_VECTOR is 4 bytes x dim, FLOAT16_VECTOR
2 x dim, its HNSW graph about M x 2 x 4 bytes per vector at level 0 (M = 16,
connectivity) plus the scalar fields.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIMS = (512, 768)
CONNECTIVITY = 16


def measure_replica(model_dir: Path | None, workload: str, seconds: float, concurrencies: list[int],
                    cache_dir: Path) -> list:
    """Closed-loop steps against one served stack of `model_dir`."""
    from mmserve.config import ServeOptions, Settings
    from mmserve.dev import loadtest
    from mmserve.models.export import export_towers
    from mmserve.serving.server import free_port
    from mmserve.serving.supervisor import supervised
    from mmserve.serving.triton.repository import build_repository

    settings = Settings(cache_dir=cache_dir, **({"model_dir": model_dir} if model_dir else {}))
    export_towers(settings.model_dir, settings.export_dir())
    with tempfile.TemporaryDirectory(prefix="mmserve-capacity-") as work:
        repository = build_repository(settings, Path(work) / "repository")
        ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
        with supervised(repository, ServeOptions(**ports, triton_log=Path(work) / "tritonserver.log"),
                        cache_dir=settings.cache_dir) as stack:
            images, texts = loadtest.sample_payloads()
            payloads = loadtest.Payloads(workload, images, texts)  # type: ignore[arg-type]
            target = loadtest.TritonTarget(stack.grpc_url, "replica")
            return asyncio.run(loadtest.sweep(target, payloads, workload, concurrencies, seconds,
                                              on_step=lambda r: print(f"  {r.concurrency:>4} in flight: "
                                                                      f"{r.throughput:8.1f} items/s  p50 {r.p50_ms or 0:6.1f} ms  p99 "
                                                                      f"{r.p99_ms or 0:7.1f} ms  errors {r.errors}",
                                                                      flush=True)))


def replica_capacity(steps: list, p99_ms: float) -> tuple[float, int | None]:
    """(items/s, concurrency) of the best error-free step within the p99 bound."""
    good = [s for s in steps if s.errors == 0 and s.p99_ms is not None and s.p99_ms <= p99_ms]
    if not good:
        return 0.0, None
    best = max(good, key=lambda s: s.throughput)
    return best.throughput, best.concurrency


def replicas_needed(rate: float, capacity: float, utilisation: float, spare: int) -> int | None:
    if capacity <= 0:
        return None
    return math.ceil(rate / (capacity * utilisation)) + spare


def index_memory(dim: int, count: int, storage: str, work: Path) -> dict[str, float]:
    """Bytes per vector the embedded index holds for `count` vectors of `dim`, by part."""
    from mmserve.index import Index

    rng = np.random.default_rng(dim)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    metadata = [{"uri": f"/photos/2026/holiday/IMG_{i:08d}_with_a_longer_name.jpg", "tags": ["beach", "2026"],
                 "content_hash": f"{i:032x}"} for i in range(count)]
    path = work / f"index-{dim}-{storage}"
    with Index.create(path, dim, storage=storage) as index:  # type: ignore[arg-type]
        for start in range(0, count, 20_000):
            index.add(vectors[start : start + 20_000], metadata[start : start + 20_000])
        index.save()
        generation = next(path.glob("gen-*"))
        graph = float((generation / "hnsw.usearch").stat().st_size)  # what a view maps; a writer holds about it
        matrix = sum(f.stat().st_size for f in generation.glob("*.npy"))
        sqlite = (generation / "metadata.sqlite").stat().st_size
    vector_bytes = dim * (2 if storage == "f16" else 1)
    return {"graph links": (graph - count * vector_bytes) / count, "graph vectors": vector_bytes,
            "exact matrix": matrix / count, "metadata": sqlite / count}


def milvus_row(dim: int, vector_type: str) -> dict[str, float]:
    scalar = 60 + 32 + 2 * 8 + 4 * 8  # uri, content hash, two short tags, modality/space/times/created/updated
    vector = dim * (4 if vector_type == "FLOAT_VECTOR" else 2)
    return {"vector": vector, "hnsw links": CONNECTIVITY * 2 * 4 * 1.07, "scalar fields": scalar}


def main() -> None:
    from mmserve.cpu import cpu_features
    from mmserve.models.info import ModelInfo

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0, help="Target requests/s (one item each).")
    parser.add_argument("--workload", choices=("text", "image", "mixed"), default="text")
    parser.add_argument("--p99-ms", type=float, default=100.0, help="The latency bound a replica must keep.")
    parser.add_argument("--utilisation", type=float, default=0.7, help="Fraction of capacity to plan for.")
    parser.add_argument("--spare", type=int, default=1, help="Replicas beyond the need (failover).")
    parser.add_argument("--model-dir", type=Path, default=None, help="Model to serve (default: bundled).")
    parser.add_argument("--seconds", type=float, default=4.0, help="Per load step.")
    parser.add_argument("--concurrency", default="1,4,16,32,64,128", help="Load steps (requests in flight).")
    parser.add_argument("--vectors", type=int, default=20_000, help="Vectors per index memory measurement (graph links per vector do not depend on it).")
    parser.add_argument("--skip-replicas", action="store_true", help="Only the index memory.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()

    report: dict = {"host": " ".join(cpu_features())}
    print(f"host features: {report['host']}")
    with tempfile.TemporaryDirectory(prefix="mmserve-capacity-cache-") as cache:
        if not args.skip_replicas:
            print(f"\n== replicas for {args.rate:g} {args.workload} requests/s (p99 <= {args.p99_ms:g} ms) ==")
            t = time.perf_counter()
            steps = measure_replica(args.model_dir, args.workload, args.seconds,
                                    [int(c) for c in args.concurrency.split(",")], Path(cache))
            capacity, at = replica_capacity(steps, args.p99_ms)
            needed = replicas_needed(args.rate, capacity, args.utilisation, args.spare)
            print(f"one replica: {capacity:.1f} items/s within the bound (at {at} in flight; measured in "
                  f"{time.perf_counter() - t:.0f} s)")
            if needed is None:
                print("no step kept the p99 bound: raise --p99-ms or use a smaller model")
            else:
                print(f"replicas needed: ceil({args.rate:g} / ({capacity:.1f} x {args.utilisation:g})) + "
                      f"{args.spare} = {needed}")
            report["replicas"] = {"rate": args.rate, "workload": args.workload, "p99_ms": args.p99_ms,
                                  "capacity_per_replica": capacity, "at_concurrency": at, "needed": needed,
                                  "steps": [s.model_dump() for s in steps]}

    model_dim = ModelInfo.from_dir(args.model_dir).embedding_dim if args.model_dir else None
    if model_dim is None:
        from mmserve.models.clip import default_model_dir

        model_dim = ModelInfo.from_dir(default_model_dir()).embedding_dim
    dims = sorted({model_dim, *DIMS})
    print(f"\n== index memory per million vectors ({args.vectors:,} indexed and scaled) ==")
    print(f"{'dim':>5}  {'backend / storage':<26} {'GiB per 1M':>10}  parts (bytes per vector)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmserve-capacity-index-") as work:
        for dim in dims:
            for storage in ("f16", "i8"):
                parts = index_memory(dim, args.vectors, storage, Path(work))
                rows.append(("embedded " + storage, dim, parts))
            for vector_type in ("FLOAT_VECTOR", "FLOAT16_VECTOR"):
                rows.append((f"milvus {vector_type} (formula)", dim, milvus_row(dim, vector_type)))
    for name, dim, parts in rows:
        total = sum(parts.values()) * 1_000_000 / 2**30
        print(f"{dim:>5}  {name:<26} {total:10.2f}  " + ", ".join(f"{k} {v:.0f}" for k, v in parts.items()))
    report["index_memory"] = [{"backend": n, "dim": d, "bytes_per_vector": p,
                               "gib_per_million": sum(p.values()) * 1e6 / 2**30} for n, d, p in rows]
    print("\nThe embedded index keeps the graph and the exact matrix in memory while open for writing (a read-only "
          "view memory-maps them: the page cache holds what searches touch); metadata stays in SQLite on disk.")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
