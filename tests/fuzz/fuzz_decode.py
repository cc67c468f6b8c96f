"""atheris fuzz target for the C++ image decoders (`make fuzz`).

Feeds arbitrary bytes to the whole preprocessing path (format detection,
JPEG/PNG decode, EXIF parsing, fast path, resize) and to the plain decoder.
Anything but a clean ValueError is a bug: a crash, a hang, or another exception.
The corpus directory is seeded with small valid files of every kind on the first run.
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
    if any(directory.iterdir()):
        return
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
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
    }
    for name, (image, fmt, options) in variants.items():
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        (directory / name).write_bytes(buffer.getvalue())


def test_one_input(data: bytes) -> None:
    try:
        _C.decode(data, scale=1 + (len(data) % 4 == 0), max_pixels=MAX_PIXELS)
    except ValueError:
        pass
    _, errors = _C.preprocess_batch([data], 32, 32, exact=len(data) % 2 == 0, max_pixels=MAX_PIXELS, threads=1)
    assert errors[0] is None or isinstance(errors[0], str)


def main() -> None:
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    for directory in corpus:
        seed_corpus(Path(directory))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
