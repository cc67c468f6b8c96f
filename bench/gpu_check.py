"""The GPU check: one script for a lent NVIDIA machine (at most ~8 minutes), and a dry run anywhere.

    python bench/gpu_check.py              # on a GPU host: build, check parity, measure, print the table
    python bench/gpu_check.py --dry-run    # anywhere: what it would run here, and one line per skip

On a GPU host it
1. writes a full-size ViT-B/32 CLIP with random weights (speed does not depend on the values) and exports
   its towers to ONNX on the CPU;
2. builds TensorRT engines (fp16, `mmserve.runtimes.tensorrt`) if `tensorrt` imports, else loads the towers
   on the CUDA runtime (PyTorch, fp16 autocast, CUDA graphs per shape: `mmserve.runtimes.cuda`);
3. checks parity against the CPU f32 ONNX (ONNX Runtime): cosine at least 0.999 on images and texts;
4. measures images/s and texts/s in-process at batch 1, 8 and 64 (median of rounds);
5. where a tritonserver binary runs (nvidia-pytriton), serves a repository with that runtime and measures
   images/s (server-side JPEG decode on the CPU) and texts/s through the SDK at batch 64.

Anything it cannot run prints one `skip:` line saying why; it exits 0 unless a parity check fails.
Goals (issue 15, from published figures): image tower >= 5,000 images/s and text tower >= 20,000 texts/s at
batch 64 in fp16 on an H100/H200-class GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCHES = (1, 8, 64)
PARITY = 0.999


def host_facts() -> dict[str, object]:
    facts: dict[str, object] = {"python": sys.version.split()[0]}
    if importlib.util.find_spec("torch") is None:
        facts["cuda"] = "torch is not installed"
        return facts
    import torch

    facts["torch"] = torch.__version__
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    else:
        facts["cuda"] = "no CUDA device (torch.cuda.is_available() is False)"
    facts["tensorrt"] = _tensorrt_version()
    facts["tritonserver"] = "found" if _tritonserver() else "not found"
    return facts


def _tensorrt_version() -> str:
    try:
        import tensorrt
    except ImportError:
        return "not installed"
    return str(tensorrt.__version__)


def _tritonserver() -> Path | None:
    try:
        from mmserve.serving.server import pytriton_root
    except ImportError:
        return None
    try:
        binary = pytriton_root() / "bin" / "tritonserver"
    except (FileNotFoundError, RuntimeError):
        return None
    return binary if binary.is_file() else None


def plan(facts: dict[str, object]) -> tuple[str | None, list[str]]:
    """The runtime this host gets ("tensorrt", "cuda" or None) and a skip line for each part it cannot run."""
    skips = []
    if "gpu" not in facts:
        reason = str(facts.get("cuda"))
        skips += [f"skip: TensorRT engines and the CUDA runtime: {reason}",
                  f"skip: parity against CPU f32 and in-process speed: {reason}",
                  f"skip: through Triton: {reason}"]
        return None, skips
    runtime = "tensorrt" if facts["tensorrt"] != "not installed" else "cuda"
    if runtime == "cuda":
        skips.append("skip: TensorRT engines: TensorRT is not installed here; measuring the CUDA runtime instead")
    if facts.get("tritonserver") != "found":
        skips.append("skip: through Triton: no tritonserver binary (pip install nvidia-pytriton)")
    return runtime, skips


def rate(fn, batch: np.ndarray, seconds: float) -> float:
    """Items/s: median of 5 rounds of `seconds / 5` each, after two warm-up calls."""
    fn(batch)
    fn(batch)
    rounds = []
    for _ in range(5):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            fn(batch)
            count += len(batch)
        rounds.append(count / (time.perf_counter() - start))
    return statistics.median(rounds)


def inputs(info, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from mmserve.modalities.text import ClipTokenizer, trim_padding

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, info.image_size, info.image_size, 3), dtype=np.uint8)
    words = ["a", "photo", "of", "the", "red", "blue", "large", "small", "dog", "cat", "car", "tree", "house", "sunset", "beach", "on", "at", "near"]
    texts = [" ".join(rng.choice(words, size=12)) for _ in range(batch)]
    ids = trim_padding(ClipTokenizer.from_model_dir(info.path)(texts), info.eos_token_id)
    return images, ids


def load_towers(runtime: str, onnx_dir: Path, cache_dir: Path, info, max_batch: int):
    from mmserve.modalities.text import length_buckets
    from mmserve.models.export import IMAGE_TOWER_FILE, TEXT_TOWER_FILE
    from mmserve.runtimes import load_tower

    if runtime == "cuda":
        return tuple(load_tower(onnx_dir / name, "cuda", precision="fp16") for name in (IMAGE_TOWER_FILE, TEXT_TOWER_FILE))
    from mmserve.runtimes import tensorrt

    towers = []
    for name in (IMAGE_TOWER_FILE, TEXT_TOWER_FILE):
        lengths = length_buckets(info.context_length) if name == TEXT_TOWER_FILE else ()
        spec = tensorrt.tower_spec(onnx_dir / name, max_batch, lengths)
        started = time.perf_counter()
        plan_file = tensorrt.build_engine(onnx_dir / name, cache_dir, spec, "fp16")
        print(f"  built {name} engine in {time.perf_counter() - started:.0f} s: {plan_file}")
        towers.append(tensorrt.TensorRtTower(plan_file, precision="fp16"))
    return tuple(towers)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def through_triton(runtime: str, settings, seconds: float) -> dict[str, float]:
    import mmserve
    from mmserve.dev.loadtest import sample_payloads
    from mmserve.serving.server import TritonServer, free_port
    from mmserve.serving.triton.repository import build_repository

    repository = build_repository(settings.model_copy(update={"runtime": runtime, "precision": "fp16"}),
                                  settings.cache_dir / "gpu-repository")
    images, texts = sample_payloads(64, size=640)
    results = {}
    with TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                      cache_dir=settings.cache_dir) as server:
        server.start(timeout_s=240)
        with mmserve.Client(server.grpc_url, max_in_flight=4) as client:
            results["triton images/s (JPEG 640 px, batch 64)"] = rate(lambda b: client.embed_images(list(b)),
                                                                   np.array(images, dtype=object), seconds)
            results["triton texts/s (batch 64)"] = rate(lambda b: client.embed_texts(list(b)),
                                                     np.array(texts, dtype=object), seconds)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print what would run here and the skips; run nothing")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measured case")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    facts = host_facts()
    print("host: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    runtime, skips = plan(facts)
    for line in skips:
        print(line)
    if args.dry_run or runtime is None:
        print(f"dry run: would build and measure with runtime {runtime}" if runtime else "nothing to run here")
        return 0

    from mmserve.config import Settings
    from mmserve.models.export import IMAGE_TOWER_FILE, TEXT_TOWER_FILE, export_towers
    from mmserve.models.info import ModelInfo
    from mmserve.models.towers import write_random_clip
    from mmserve.runtimes import load_tower

    work = Path(tempfile.mkdtemp(prefix="mmserve-gpu-"))
    try:
        model_dir = write_random_clip(work / "vit-b32", seed=1)
        settings = Settings(model_dir=model_dir, cache_dir=work / "cache")
        onnx_dir = export_towers(model_dir, settings.export_dir())
        info = ModelInfo.from_dir(model_dir)
        image_tower, text_tower = load_towers(runtime, onnx_dir, settings.cache_dir, info, max(BATCHES))
        for tower, kind in ((image_tower, 0), (text_tower, 1)):  # CUDA graphs for the measured shapes
            tower.warm_up([inputs(info, batch)[kind] for batch in BATCHES])

        images, ids = inputs(info, 16, seed=5)
        reference = [load_tower(onnx_dir / name, "onnxruntime", precision="f32") for name in (IMAGE_TOWER_FILE, TEXT_TOWER_FILE)]
        parity = {"images": float(cosines(image_tower.run(images), reference[0].run(images)).min()),
                  "texts": float(cosines(text_tower.run(ids), reference[1].run(ids)).min())}
        results: dict[str, float] = {}
        for batch in BATCHES:
            batch_images, batch_ids = inputs(info, batch)
            results[f"in-process images/s, batch {batch}"] = rate(image_tower.run, batch_images, args.seconds)
            results[f"in-process texts/s, batch {batch}"] = rate(text_tower.run, batch_ids, args.seconds)
        if facts.get("tritonserver") == "found":
            try:
                results |= through_triton(runtime, settings, args.seconds)
            except Exception as error:  # noqa: BLE001 - reported as a skip, the in-process table stands
                print(f"skip: through Triton: {type(error).__name__}: {error}")

        print(f"\nViT-B/32 (random weights), runtime {runtime}, fp16, on {facts['gpu']}")
        print(f"  parity vs CPU f32 (cosine, lowest of 16): images {parity['images']:.5f}, texts {parity['texts']:.5f}"
              f" (gate {PARITY})")
        for name, value in results.items():
            print(f"  {name:<44} {value:>10,.0f}")
        if args.json:
            args.json.write_text(json.dumps({"facts": facts, "runtime": runtime, "parity": parity,
                                             "results": results}, indent=2) + "\n")
        return 0 if min(parity.values()) >= PARITY else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
