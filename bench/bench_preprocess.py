"""Image preprocessing throughput, one thread, as ratios against baselines measured in the same run.

Cases (each: decode + shortest-side resize + centre crop to uint8 RGB):
  mmserve exact        C++ pipeline, bit-identical to the Pillow reference
  mmserve fast         C++ pipeline with the JPEG DCT-domain downscale
  Pillow reference     Image.open + resize(BICUBIC) + crop + convert, the OpenAI/open_clip order
  HF CLIPImageProcessor (PIL)          Pillow decode + transformers' PIL/numpy backend
  HF CLIPImageProcessor (torchvision)  Pillow decode + transformers' torchvision backend (its
                       default; measured only where torchvision is installed, one torch thread)
  libjpeg-turbo alone  the same scaled decode the fast path does, nothing else (its ceiling)

Inputs: >= 2 MP JPEGs (real photos from installed packages, enlarged to 1920x1280) and
the small PNG photos those packages ship.

    python bench/bench_preprocess.py [--size 224] [--seconds 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mmserve import _C
from mmserve.modalities.image import reference_preprocess


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not installed (make setup installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / relative


def large_jpegs() -> list[bytes]:
    sources = [package_file("sklearn", "datasets/images/china.jpg"), package_file("sklearn", "datasets/images/flower.jpg"),
               package_file("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")]
    out = []
    for path in sources:
        image = Image.open(path).convert("RGB").resize((1920, 1280), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def small_pngs() -> list[bytes]:
    names = ["coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg"]
    return [package_file("skimage", f"data/{n}").read_bytes() for n in names if n.endswith(".png")]


def measure(cases: dict, items: list[bytes], seconds: float, rounds: int) -> dict[str, float]:
    """images/s per case: the median over `rounds` interleaved rounds (this machine is shared and noisy)."""
    for fn in cases.values():
        for item in items:
            fn(item)  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / rounds:
                for item in items:
                    fn(item)
                count += len(items)
            samples[name].append(count / (time.perf_counter() - start))
    return {name: float(np.median(values)) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per case, over all rounds")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (the median is reported)")
    args = parser.parse_args()
    size = args.size

    from transformers import CLIPImageProcessorPil

    geometry = {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}
    hf_slow = CLIPImageProcessorPil(**geometry)
    hf_fast = None
    if importlib.util.find_spec("torchvision") is not None:
        import torch
        from transformers import CLIPImageProcessor

        torch.set_num_threads(1)
        hf_fast = CLIPImageProcessor(**geometry)

    def mmserve(exact: bool):
        return lambda data: _C.preprocess_batch([data], size, size, exact=exact, threads=1)

    def pillow(data: bytes):
        return reference_preprocess(Image.open(io.BytesIO(data)), size)

    def hf(data: bytes):
        return hf_slow(Image.open(io.BytesIO(data)), return_tensors="np")["pixel_values"]

    def hf_torchvision(data: bytes):
        return hf_fast(Image.open(io.BytesIO(data)), return_tensors="pt")["pixel_values"]

    scales: dict[bytes, int] = {}

    def libjpeg_alone(data: bytes):
        if data not in scales:
            scales[data] = _C.fast_path_denominator(*Image.open(io.BytesIO(data)).size, size)
        return _C.decode(data, scale=scales[data], exif_orientation=False)

    print(f"one thread, target {size}x{size}, median of {args.rounds} interleaved rounds; "
          "ratio = images/s over the baseline measured in this run\n")
    for label, items in (("JPEG 1920x1280 (2.46 MP)", large_jpegs()), ("PNG photos (0.1-0.3 MP)", small_pngs())):
        cases = {"Pillow reference": pillow, "HF CLIPImageProcessor (PIL)": hf}
        if hf_fast is not None:
            cases["HF CLIPImageProcessor (torchvision)"] = hf_torchvision
        cases |= {"mmserve exact": mmserve(True), "mmserve fast": mmserve(False)}
        if label.startswith("JPEG"):
            cases["libjpeg-turbo scaled decode alone"] = libjpeg_alone
        rates = measure(cases, items, args.seconds, args.rounds)
        base = rates["Pillow reference"]
        # "vs HF": over the faster of the processor's backends measured here.
        hf_rate = max(v for k, v in rates.items() if k.startswith("HF "))
        print(f"{label}")
        print(f"  {'pipeline':<37} {'images/s':>9} {'ms/image':>9} {'vs Pillow':>10} {'vs HF':>7}")
        for name, value in rates.items():
            print(f"  {name:<37} {value:>9.1f} {1000 / value:>9.2f} {value / base:>9.2f}x {value / hf_rate:>6.2f}x")
        if "libjpeg-turbo scaled decode alone" in rates:
            ceiling = rates["libjpeg-turbo scaled decode alone"] / rates["mmserve fast"]
            print(f"  mmserve fast takes {ceiling:.2f}x the time of the bare scaled decode (ceiling 1.00x)")
        print()
    if hf_fast is None:
        print("HF CLIPImageProcessor's torchvision backend (its default) was not measured: torchvision is not "
              "installed in this environment.")


if __name__ == "__main__":
    main()
