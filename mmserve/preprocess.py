"""Image preprocessing to the image tower's uint8 NHWC input.

The reference pipeline of OpenAI CLIP / open_clip: resize the shortest side to
the model's size with Pillow's antialiased bicubic, centre-crop, convert to RGB
(after the resize and crop, as the reference does). Scaling and mean/std live
inside the exported image tower, so the wire carries uint8.

EXIF orientation is not applied, like the reference (documented in README).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmserve.model import ClipModelInfo

_RESAMPLE = {
    "nearest": 0,
    "lanczos": 1,
    "bilinear": 2,
    "bicubic": 3,
    "box": 4,
    "hamming": 5,
}


def reference_preprocess(image, size: int, crop: int | None = None, resample: str = "bicubic") -> np.ndarray:
    """A Pillow image to uint8 `[crop, crop, 3]`, exactly as open_clip does it."""
    from PIL import Image

    crop = size if crop is None else crop
    width, height = image.size
    # open_clip/torchvision: the short side becomes exactly `size`, the long side int(size * ratio).
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    resized = image.resize(new_size, Image.Resampling(_RESAMPLE[resample]))
    left = int(round((new_size[0] - crop) / 2.0))
    top = int(round((new_size[1] - crop) / 2.0))
    cropped = resized.crop((left, top, left + crop, top + crop))
    return np.asarray(cropped.convert("RGB"))


class ImagePreprocessor:
    """Encoded images (bytes or paths) to one uint8 `[B, H, W, 3]` batch."""

    def __init__(self, info: ClipModelInfo) -> None:
        self.size = info.resize_shortest_edge
        self.crop = info.image_size
        self.resample = info.resample

    def __call__(self, images: Sequence[bytes | str | Path]) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        out = np.empty((len(images), self.crop, self.crop, 3), dtype=np.uint8)
        for i, item in enumerate(images):
            data = Path(item).read_bytes() if isinstance(item, (str, Path)) else item
            try:
                with Image.open(io.BytesIO(data)) as picture:
                    out[i] = reference_preprocess(picture, self.size, self.crop, self.resample)
            except (UnidentifiedImageError, OSError, SyntaxError) as error:
                raise ValueError(f"image {i}: cannot decode ({error})") from error
        return out
