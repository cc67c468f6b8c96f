"""Which CPU runtime should serve the towers? Measured, in one run, as ratios.

For each model (the bundled one; optionally a random-weight ViT-B/32 via
--vit-b32) and each tower, times PyTorch fp32 (the baseline: what a user of the
Hugging Face model would run), ONNX Runtime fp32, OpenVINO fp32, OpenVINO
with its automatic precision (bf16 on CPUs that have it) and OpenVINO int8
(uint8 weights, activations quantized on the fly), and reports
throughput and the ratio to PyTorch, plus the cosine of each runtime's output
against PyTorch. The text tower is timed at the full context length and
trimmed after the last end-of-text token (what mmserve sends).

    python bench/bench_runtimes.py [--vit-b32] [--batch 32] [--seconds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmserve.models.export import IMAGE_TOWER_FILE, TEXT_TOWER_FILE, export_towers
from mmserve.models.clip import ClipModelInfo, default_model_dir
from mmserve.runtimes import load_tower
from mmserve.modalities.text import ClipTokenizer, trim_padding
from mmserve.models.towers import load_clip, towers_for

CAPTIONS = ["a photo of a large red circle on the left", "a dog", "two cats sleeping on a sofa", "sunset"]


def throughput(fn, batch: int, seconds: float) -> float:
    fn()  # warm-up (compilation, allocations)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 3:
        fn()
        runs += 1
    return runs * batch / (time.perf_counter() - start)


def bench_model(model_dir: Path, batch: int, seconds: float, threads: int) -> list[tuple]:
    info = ClipModelInfo.from_dir(model_dir)
    onnx_dir = export_towers(model_dir, Path(tempfile.mkdtemp(prefix="mmserve-bench-")))
    clip = load_clip(model_dir)
    image_tower, text_tower = towers_for(clip, info)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, info.image_size, info.image_size, 3), dtype=np.uint8)
    tokens = ClipTokenizer.from_model_dir(model_dir)([CAPTIONS[i % len(CAPTIONS)] for i in range(batch)])
    inputs = {
        "image": (IMAGE_TOWER_FILE, image_tower, images),
        f"text L={tokens.shape[1]}": (TEXT_TOWER_FILE, text_tower, tokens),
        f"text trimmed L={trim_padding(tokens, info.eos_token_id).shape[1]}": (
            TEXT_TOWER_FILE, text_tower, trim_padding(tokens, info.eos_token_id)),
    }
    rows = []
    torch.set_num_threads(threads)
    for label, (file, module, array) in inputs.items():
        with torch.inference_mode():
            reference = module(torch.from_numpy(array)).numpy()
            base = throughput(lambda: module(torch.from_numpy(array)), batch, seconds)
        rows.append((model_dir.name, label, "pytorch fp32", base, 1.0, 1.0))
        for runtime, precision in (("onnxruntime", "f32"), ("openvino", "f32"), ("openvino", "auto"),
                                   ("openvino", "int8")):
            tower = load_tower(onnx_dir / file, runtime, threads, precision)
            cosine = float((tower(array) * reference).sum(1).min())
            rate = throughput(lambda: tower(array), batch, seconds)
            rows.append((model_dir.name, label, f"{runtime} {precision}", rate, rate / base, cosine))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per case")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vit-b32", action="store_true", help="also a random-weight ViT-B/32 (slow export)")
    args = parser.parse_args()

    models = [default_model_dir()]
    if args.vit_b32:
        from mmserve.models.towers import write_random_clip

        models.append(write_random_clip(Path(tempfile.mkdtemp(prefix="vit-b32-"))))

    print(f"batch {args.batch}, {args.threads} threads, {args.seconds:.0f} s per case; "
          "ratio = throughput / PyTorch fp32 throughput measured in this run")
    print(f"{'model':<22} {'input':<22} {'runtime':<18} {'items/s':>9} {'ratio':>7} {'min cos':>9}")
    for model_dir in models:
        for name, label, runtime, rate, ratio, cosine in bench_model(
            model_dir, args.batch, args.seconds, args.threads
        ):
            print(f"{name[:22]:<22} {label:<22} {runtime:<18} {rate:>9.1f} {ratio:>6.2f}x {cosine:>9.6f}")


if __name__ == "__main__":
    main()
