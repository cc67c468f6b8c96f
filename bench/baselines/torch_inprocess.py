"""The in-process PyTorch ceiling: `transformers` CLIPModel in fp32 with batching, no server.

End to end per item: images are PIL-decoded from JPEG bytes, run through CLIPImageProcessor and
`get_image_features`; texts are tokenized (padded to the longest in the batch) and run through
`get_text_features`. Each measurement warms up with one batch, then runs whole batches for about
`seconds` and returns items/s.

    python bench/baselines/torch_inprocess.py --model-dir DIR [--seconds 10] [--threads N]
"""

from __future__ import annotations

import argparse
import io
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

WORDS = (
    "a photo of the small red dog cat car house tree river mountain city street beach bicycle "
    "with two old new bright dark blue green on in near under at night morning sunny snowy painting"
).split()


def sample_jpegs(count: int, *, width: int = 640, height: int = 480, quality: int = 90,
                 seed: int = 0) -> list[bytes]:
    """`count` JPEGs of random filled shapes on a random background."""
    rng = random.Random(seed)
    jpegs = []
    for _ in range(count):
        image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x0, x1 = sorted(rng.randrange(width) for _ in range(2))
            y0, y1 = sorted(rng.randrange(height) for _ in range(2))
            shape = rng.choice((draw.rectangle, draw.ellipse))
            shape((x0, y0, x1, y1), fill=tuple(rng.randrange(256) for _ in range(3)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        jpegs.append(buffer.getvalue())
    return jpegs


def sample_texts(count: int, *, words: int = 8, seed: int = 0) -> list[str]:
    """`count` strings of `words` words drawn from a small caption vocabulary."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=words)) for _ in range(count)]


def image_throughput(model_dir: str | Path, jpegs: list[bytes], batch_size: int = 32, seconds: float = 10,
                     threads: int | None = None) -> float:
    """Images/s: PIL decode + CLIPImageProcessor + get_image_features, `batch_size` images per call."""
    model = _load_model(model_dir)
    processor = CLIPImageProcessor.from_pretrained(model_dir)

    def run(batch: Sequence[bytes]) -> None:
        images = [Image.open(io.BytesIO(jpeg)).convert("RGB") for jpeg in batch]
        pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
        model.get_image_features(pixel_values=pixel_values)

    return _throughput(run, jpegs, batch_size, seconds, threads)


def text_throughput(model_dir: str | Path, texts: list[str], batch_size: int = 64, seconds: float = 10,
                    threads: int | None = None) -> float:
    """Texts/s: tokenizer (padded to the batch's longest) + get_text_features, `batch_size` texts per call."""
    model = _load_model(model_dir)
    tokenizer = CLIPTokenizerFast.from_pretrained(model_dir)

    def run(batch: Sequence[str]) -> None:
        inputs = tokenizer(list(batch), padding=True, truncation=True, return_tensors="pt")
        model.get_text_features(**inputs)

    return _throughput(run, texts, batch_size, seconds, threads)


def _load_model(model_dir: str | Path) -> CLIPModel:
    # dtype is explicit: a checkpoint saved in fp16 (the bundled one) would otherwise load in fp16.
    return CLIPModel.from_pretrained(model_dir, dtype=torch.float32).eval()


def _throughput(run: Callable[[Sequence], None], items: Sequence, batch_size: int, seconds: float,
                threads: int | None) -> float:
    if not items:
        raise ValueError("need at least one item to measure")
    # Cycle through the items so every batch is full, whatever len(items) is.
    batches = [[items[(start + k) % len(items)] for k in range(batch_size)]
               for start in range(0, len(items), batch_size)]
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            run(batches[0])
            done = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                run(batches[(done // batch_size) % len(batches)])
                done += batch_size
            elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous_threads)
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="A Hugging Face CLIPModel directory.")
    parser.add_argument("--seconds", type=float, default=10, help="Measured time per case.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads; default: all.")
    parser.add_argument("--image-batch", type=int, default=32)
    parser.add_argument("--text-batch", type=int, default=64)
    args = parser.parse_args()
    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, model {args.model_dir}")
    images_per_s = image_throughput(args.model_dir, sample_jpegs(64), args.image_batch, args.seconds,
                                    args.threads)
    print(f"images/s  {images_per_s:9.1f}   (640x480 JPEG q90, batch {args.image_batch})")
    texts_per_s = text_throughput(args.model_dir, sample_texts(256), args.text_batch, args.seconds,
                                  args.threads)
    print(f"texts/s   {texts_per_s:9.1f}   (8 words, batch {args.text_batch})")


if __name__ == "__main__":
    main()
