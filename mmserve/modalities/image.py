"""Image preprocessing to the image tower's uint8 NHWC input.

The reference pipeline of OpenAI CLIP / open_clip: resize the shortest side to
the model's size with Pillow's antialiased bicubic, centre-crop, convert to RGB
(after the resize and crop). SigLIP's (`resize_mode="squash"`): both sides to
the size, aspect ratio not kept, no crop, with the model's resample filter. `ImagePreprocessor` does exactly that in C++
(`csrc/image/`); `reference_preprocess` is the Pillow original, kept for the
parity tests and benchmarks. Scaling and mean/std live inside the exported
image tower, so the wire carries uint8.

Policies where the reference is silent or odd (see README, Image input):
EXIF orientation is applied (like Hugging Face's loader, unlike open_clip);
alpha is composited over white (the reference drops it).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmserve import _C
from mmserve.errors import ErrorCode, InvalidInputError, ItemError
from mmserve.modalities import Rows
from mmserve.models.info import ModelInfo

ImageInput = Any  # str | Path | bytes | PIL.Image.Image | numpy uint8 [H, W, 3] or [H, W]

_RESAMPLE = {
    "nearest": 0,
    "lanczos": 1,
    "bilinear": 2,
    "bicubic": 3,
    "box": 4,
    "hamming": 5,
}


def reference_preprocess(image, size: int, crop: int | None = None, resample: str = "bicubic",
                         resize_mode: str = "crop") -> np.ndarray:
    """A Pillow image to uint8 `[crop, crop, 3]`, exactly as open_clip (or, squashed, SigLIP's processor) does."""
    from PIL import Image

    crop = size if crop is None else crop
    if resize_mode == "squash":
        return np.asarray(image.resize((crop, crop), Image.Resampling(_RESAMPLE[resample])).convert("RGB"))
    width, height = image.size
    # open_clip/torchvision: the short side becomes exactly `size`, the long side int(size * ratio).
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    resized = image.resize(new_size, Image.Resampling(_RESAMPLE[resample]))
    left = round((new_size[0] - crop) / 2.0)
    top = round((new_size[1] - crop) / 2.0)
    cropped = resized.crop((left, top, left + crop, top + crop))
    return np.asarray(cropped.convert("RGB"))


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """Per-image limits, checked before any large allocation."""

    max_encoded_bytes: int = _C.DEFAULT_MAX_ENCODED_BYTES  # 64 MiB
    max_pixels: int = _C.DEFAULT_MAX_PIXELS  # 100 megapixels decoded
    # Alpha (RGBA, gray+alpha, PNG tRNS) is composited over this colour.
    background: tuple[int, int, int] = (255, 255, 255)


@dataclasses.dataclass(frozen=True)
class ImageGeometry:
    """The part of a model's preprocessing config the preprocessor needs (a `ModelInfo` also fits)."""

    image_size: int  # side of the square the tower takes
    resize_shortest_edge: int  # == image_size for "squash"
    resample: str = "bicubic"
    resize_mode: str = "crop"  # "crop": shortest side + centre crop; "squash": both sides to image_size


class ImagePreprocessor:
    """Encoded images (bytes or paths) to one uint8 `[B, H, W, 3]` batch, in C++.

    Decoding (JPEG, PNG), EXIF orientation, the resize and the centre crop run
    on a thread pool with the GIL released. With `exact=False` (the default),
    JPEGs at least twice the target size are decoded at 1/2, 1/4 or 1/8 scale
    in the DCT domain first (the largest that still covers the target) and the
    region that scaled image covers is resized; `exact=True` reproduces the
    Pillow reference pipeline to the bit.
    """

    def __init__(
        self,
        info: ModelInfo | ImageGeometry,
        *,
        exact: bool = False,
        limits: ImageLimits = ImageLimits(),
        exif_orientation: bool = True,
        threads: int = 0,
    ) -> None:
        if info.resample not in _RESAMPLE:
            raise ValueError(f"unsupported resample mode {info.resample!r}")
        self.size = info.resize_shortest_edge
        self.crop = info.image_size
        self.resample = info.resample
        self.resize_mode = info.resize_mode
        self.exact = exact
        self.limits = limits
        self.exif_orientation = exif_orientation
        self.threads = threads

    def preprocess_lenient(
        self, images: Sequence[bytes | str | Path], out: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[ItemError]]:
        """The batch and the images that failed (index in `images`, code, message; their slots are zeros)."""
        data = [Path(item).read_bytes() if isinstance(item, (str, Path)) else item for item in images]
        batch, failures = _C.preprocess_batch(
            data,
            self.size,
            self.crop,
            filter=self.resample,
            resize_mode=self.resize_mode,
            exact=self.exact,
            max_encoded_bytes=self.limits.max_encoded_bytes,
            max_pixels=self.limits.max_pixels,
            background=self.limits.background,
            exif_orientation=self.exif_orientation,
            threads=self.threads,
            out=out,
        )
        return batch, [ItemError(i, ErrorCode(f[0]), f[1]) for i, f in enumerate(failures) if f is not None]

    def __call__(self, images: Sequence[bytes | str | Path], out: np.ndarray | None = None) -> np.ndarray:
        """The batch; raises `InvalidInputError` (a ValueError) naming every image that failed."""
        batch, errors = self.preprocess_lenient(images, out)
        if errors:
            raise InvalidInputError.for_items("image", errors, images)
        return batch



class ImageModality:
    """Images for an image tower: encoded JPEG/PNG -> uint8 pixels `[S, S, 3]` (the `Modality` interface)."""

    kind, encoded_input = "image", "image"
    tensor_inputs: tuple[str, ...] = ("pixels",)

    def __init__(self, preprocessor: ImagePreprocessor) -> None:
        self.preprocessor = preprocessor
        self.shape = (preprocessor.crop, preprocessor.crop, 3)

    def decode(self, items: Sequence[bytes]) -> tuple[Rows, list[ItemError]]:
        # Only bytes: a str would be read as a file path by the preprocessor.
        data = [item if isinstance(item, bytes) else b"" for item in items]
        pixels, errors = self.preprocessor.preprocess_lenient(data, np.empty((len(data), *self.shape), np.uint8))
        return {"pixels": pixels}, errors

    def accept(self, tensors: Mapping[str, np.ndarray]) -> tuple[Rows, list[ItemError]]:
        return {"pixels": tensors["pixels"]}, []  # Triton has checked dtype and shape against the config

    def batch(self, parts: Sequence[Rows]) -> np.ndarray:
        arrays = [part["pixels"] for part in parts]
        return np.ascontiguousarray(arrays[0] if len(arrays) == 1 else np.concatenate(arrays))

    def warm_up_batches(self, max_batch_size: int) -> list[np.ndarray]:
        return [np.zeros((size, *self.shape), dtype=np.uint8) for size in sorted({1, max_batch_size})]


def encode_image(image: ImageInput, index: int = 0) -> bytes:
    """Bytes to send for one image: file contents, given bytes, or a lossless PNG of a PIL image / array.

    `index` (the image's place in the caller's list) names it in the `InvalidInputError` of one it cannot take.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        try:
            return Path(image).read_bytes()
        except OSError as error:
            raise _refused(index, image, ErrorCode.UNREADABLE, f"cannot read {image}: {error.strerror}") from error
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise _refused(index, image, ErrorCode.WRONG_TYPE, "arrays must be uint8 [H, W], [H, W, 3] or "
                           f"[H, W, 4], got {image.dtype} {list(image.shape)}")
        from PIL import Image

        image = Image.fromarray(image)
    if hasattr(image, "save") and hasattr(image, "mode"):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    raise _refused(index, image, ErrorCode.WRONG_TYPE,
                   f"expected a path, bytes, PIL image or uint8 array, got {type(image).__name__}")


def _refused(index: int, item: object, code: ErrorCode, message: str) -> InvalidInputError:
    return InvalidInputError.for_items("image", [ItemError(index, code, message)], {index: item})
