"""atheris fuzz target for the C++ image decoders (`make fuzz`).

Feeds bytes to the whole preprocessing path (format detection, JPEG/PNG
decode, EXIF parsing, fast path, resize) and to the plain decoder. Anything but
a clean ValueError is a bug: a crash, a hang, or another exception.

The extension is not built with coverage instrumentation, so libFuzzer alone
would see one Python path and mutate blindly. Each input therefore also picks
one of the seed files (a small valid image of every kind) and applies the
input's edits to it: byte overwrites, truncation and splices, so most runs get
deep into the decoders with near-valid data. Raw inputs are tried as-is too.
"""

import io
import sys
from pathlib import Path

import atheris
import numpy as np

with atheris.instrument_imports():
    from mmserve import _C

# Small limits keep each run fast; the limit checks themselves are exercised too.
MAX_PIXELS = 4_000_000


def seed_corpus(directory: Path) -> None:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    wide = Image.fromarray(rng.integers(0, 256, (40, 200, 3), dtype=np.uint8))
    rotated = Image.Exif()
    rotated[0x0112] = 6
    variants = {
        "rgb.jpg": (rgb, "JPEG", {}),
        "progressive.jpg": (rgb, "JPEG", {"progressive": True}),
        "gray.jpg": (rgb.convert("L"), "JPEG", {}),
        "cmyk.jpg": (rgb.convert("CMYK"), "JPEG", {}),
        "rgb.png": (rgb, "PNG", {}),
        "rgba.png": (rgb.convert("RGBA"), "PNG", {}),
        "palette.png": (rgb.convert("P"), "PNG", {}),
        "bilevel.png": (rgb.convert("1"), "PNG", {}),
        "gray16.png": (rgb.convert("I;16"), "PNG", {}),
        # Wider than the target: the preprocessing decodes only a window (crop and skip).
        "wide.jpg": (wide, "JPEG", {}),
        "wide-rotated-progressive.jpg": (wide, "JPEG", {"progressive": True, "exif": rotated.tobytes()}),
    }
    for name, (image, fmt, options) in variants.items():
        if (directory / name).exists():
            continue
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        (directory / name).write_bytes(buffer.getvalue())


SEEDS: list[bytes] = []


def mutate(data: bytes) -> bytes:
    fdp = atheris.FuzzedDataProvider(data)
    seed = bytearray(SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)])
    for _ in range(fdp.ConsumeIntInRange(1, 16)):
        action = fdp.ConsumeIntInRange(0, 3)
        at = fdp.ConsumeIntInRange(0, len(seed) - 1)
        if action == 0:
            seed[at] = fdp.ConsumeInt(1) & 0xFF
        elif action == 1:
            seed[at : at + 4] = fdp.ConsumeBytes(4)
        elif action == 2:
            del seed[at : at + fdp.ConsumeIntInRange(1, 64)]
        else:
            seed[at:at] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 32))
        if not seed:
            break
    return bytes(seed)


def check(data: bytes, variant: int) -> None:
    try:
        _C.decode(data, scale=(1, 2, 4, 8)[variant % 4], max_pixels=MAX_PIXELS)
    except ValueError:
        pass
    _, errors = _C.preprocess_batch([data], 32, 32, exact=variant % 2 == 0, max_pixels=MAX_PIXELS, threads=1)
    # Any bytes: an image or a decode failure with its code, never "internal" (an exception the decoder did not
    # mean to throw).
    assert errors[0] is None or (errors[0][0] != "internal" and isinstance(errors[0][1], str)), errors[0]


def test_one_input(data: bytes) -> None:
    check(data, len(data))
    if SEEDS and data:
        check(mutate(data), data[0])


def main() -> None:
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    for directory in corpus:
        seed_corpus(Path(directory))
        SEEDS.extend(p.read_bytes() for p in sorted(Path(directory).iterdir()) if p.suffix in (".jpg", ".png"))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
