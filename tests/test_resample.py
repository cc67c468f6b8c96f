"""The C++ resampler against Pillow: bit-identical resize + centre crop, every kernel."""

import numpy as np
import pytest
from PIL import Image

from mmserve import _C
from mmserve.cpu import cpu_features

FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
MODES = {1: "L", 3: "RGB", 4: "CMYK"}  # Pillow modes whose resize has no premultiplication


def available_kernels():
    features = set(cpu_features())
    kernels = ["scalar"]
    if "avx2" in features:
        kernels.append("avx2")
    if {"avx512f", "avx512bw", "avx512vl"} <= features:
        kernels.append("avx512")
    return kernels


KERNELS = available_kernels()


def pillow_resize_crop(array, size, crop, resample):
    h, w = array.shape[:2]
    image = Image.fromarray(array, MODES[1 if array.ndim == 2 else array.shape[2]])
    (rw, rh), (x, y, cw, ch) = _C.shortest_side_center_crop(w, h, size, crop)
    return np.asarray(image.resize((rw, rh), resample).crop((x, y, x + cw, y + ch))), (rw, rh), (x, y, cw, ch)


def random_image(rng, width, height, channels):
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("filter_name", sorted(FILTERS))
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_bit_identical_to_pillow_on_random_geometry(kernel, filter_name, channels):
    rng = np.random.default_rng(hash((kernel, filter_name, channels)) % 2**32)
    for _ in range(12):
        width, height = (int(v) for v in rng.integers(1, 420, 2))
        size = int(rng.integers(1, 260))
        crop = int(rng.integers(1, size + 1))
        image = random_image(rng, width, height, channels)
        want, resize, window = pillow_resize_crop(image, size, crop, FILTERS[filter_name])
        got = _C.resize_crop(image, resize, window, filter_name, kernel)
        assert np.array_equal(got, want), (width, height, size, crop)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    "width, height",
    [(1920, 1280), (1280, 1920), (300, 2000), (2000, 301), (224, 224), (225, 224), (100, 60), (7, 3)],
)
def test_typical_and_edge_geometries(kernel, width, height):
    # Tall images take Pillow's vertical-first order; 224x224 needs no pass; small ones upscale.
    rng = np.random.default_rng(width * 7 + height)
    image = random_image(rng, width, height, 3)
    want, resize, window = pillow_resize_crop(image, 224, 224, Image.Resampling.BICUBIC)
    assert np.array_equal(_C.resize_crop(image, resize, window, "bicubic", kernel), want)


@pytest.mark.parametrize("kernel", KERNELS)
def test_source_box_is_bit_identical_to_pillow_resize_with_box(kernel):
    # The JPEG fast path resizes the region a DCT-scaled image covers (a fractional box).
    rng = np.random.default_rng(11)
    for _ in range(16):
        width, height = (int(v) for v in rng.integers(8, 420, 2))
        box = (float(rng.uniform(0, width / 3)), float(rng.uniform(0, height / 3)),
               float(rng.uniform(2 * width / 3, width)), float(rng.uniform(2 * height / 3, height)))
        resize = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
        window = (0, 0, resize[0], resize[1])
        image = random_image(rng, width, height, 3)
        want = np.asarray(Image.fromarray(image).resize(resize, Image.Resampling.BICUBIC, box=box))
        got = _C.resize_crop(image, resize, window, "bicubic", kernel, box=box)
        assert np.array_equal(got, want), (width, height, box, resize)


def test_center_crop_rounds_half_to_even_like_python():
    # (337 - 224) / 2 = 56.5 -> 56, as Python's round() in torchvision's center_crop.
    (rw, rh), (x, y, w, h) = _C.shortest_side_center_crop(337 * 3, 224 * 3, 224, 224)
    assert (rw, rh) == (337, 224) and (x, y) == (int(round((337 - 224) / 2.0)), 0)


def test_writes_into_a_batch_slot_and_reads_strided_rows():
    rng = np.random.default_rng(3)
    padded = random_image(rng, 500, 300, 3)
    image = padded[:, 50:450]  # rows strided by 1500 bytes, pixels contiguous
    want, resize, window = pillow_resize_crop(np.ascontiguousarray(image), 64, 64, Image.Resampling.BICUBIC)
    batch = np.zeros((4, 64, 64, 3), dtype=np.uint8)
    result = _C.resize_crop(image, resize, window, "bicubic", "auto", batch[2])
    assert np.shares_memory(result, batch)
    assert np.array_equal(batch[2], want)
    assert not batch[[0, 1, 3]].any()


def test_bad_arguments_raise_precise_errors():
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        _C.resize_crop(image.astype(np.float32), (5, 5), (0, 0, 5, 5))
    with pytest.raises(ValueError, match="1 to 4 channels"):
        _C.resize_crop(np.zeros((10, 10, 5), dtype=np.uint8), (5, 5), (0, 0, 5, 5))
    with pytest.raises(ValueError, match="outside the resized image"):
        _C.resize_crop(image, (5, 5), (2, 2, 5, 5))
    with pytest.raises(ValueError, match="unknown resample filter"):
        _C.resize_crop(image, (5, 5), (0, 0, 5, 5), "cubic")
    with pytest.raises(ValueError, match="source box lies outside"):
        _C.resize_crop(image, (5, 5), (0, 0, 5, 5), box=(0, 0, 10.5, 10))
    with pytest.raises(ValueError, match="unknown kernel"):
        _C.resize_crop(image, (5, 5), (0, 0, 5, 5), "bicubic", "sse9")
    with pytest.raises(ValueError, match="out must be"):
        _C.resize_crop(image, (5, 5), (0, 0, 5, 5), out=np.zeros((4, 5, 3), dtype=np.uint8))


def test_unsupported_kernel_is_a_lookup_error():
    if "avx512" in KERNELS:
        pytest.skip("every kernel runs on this CPU")
    with pytest.raises(LookupError):
        _C.resize_crop(np.zeros((10, 10, 3), dtype=np.uint8), (5, 5), (0, 0, 5, 5), "bicubic", "avx512")


def test_active_kernel_is_the_best_available():
    assert _C.active_resample_kernel() == KERNELS[-1]
