"""C++ decode + resize + crop against the Pillow reference pipeline, and bad input."""

import importlib.util
import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from mmserve import _C
from mmserve.errors import ErrorCode
from mmserve.models.clip import ClipModelInfo
from mmserve.modalities.image import ImageLimits, ImagePreprocessor, reference_preprocess

SIZE = 224


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(width=523, height=347, seed=0) -> Image.Image:
    """A smooth random picture (JPEG-friendly), odd sizes for SIMD tails."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8))
    return small.resize((width, height), Image.Resampling.BICUBIC)


def composite_white(image: Image.Image) -> Image.Image:
    """The documented alpha policy: (c * a + 255 * (255 - a) + 127) // 255."""
    rgba = np.asarray(image.convert("RGBA")).astype(np.int32)
    alpha = rgba[..., 3:4]
    rgb = (rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def reference(data: bytes, size=SIZE, *, alpha=False, exif=True) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    if exif:
        image = ImageOps.exif_transpose(image)
    if alpha:
        image = composite_white(image)
    return reference_preprocess(image, size)


def mmserve_exact(data: bytes, size=SIZE) -> np.ndarray:
    batch, errors = _C.preprocess_batch([data], size, size, exact=True)
    assert errors == [None]
    return batch[0]


def max_diff(a, b) -> int:
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def png_16bit(image: Image.Image) -> bytes:
    """An RGB PNG with 16-bit samples (Pillow cannot write one), via raw chunks."""
    pixels = np.asarray(image.convert("RGB")).astype(">u2") * 257
    pixels[..., 0] += 3  # low bytes that truncation must drop
    height, width = pixels.shape[:2]
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


base = photo()
transparent = base.convert("RGBA")
transparent.putalpha(Image.linear_gradient("L").resize(base.size))

GENERATED = {
    "jpeg baseline 4:2:0": (encode(base, "JPEG", quality=90), False),
    "jpeg baseline 4:4:4": (encode(base, "JPEG", quality=90, subsampling=0), False),
    "jpeg baseline 4:2:2": (encode(base, "JPEG", quality=90, subsampling=1), False),
    "jpeg progressive": (encode(base, "JPEG", quality=80, progressive=True), False),
    "jpeg grayscale": (encode(base.convert("L"), "JPEG"), False),
    "jpeg cmyk": (encode(base.convert("CMYK"), "JPEG"), False),
    "png rgb": (encode(base, "PNG"), False),
    "png gray": (encode(base.convert("L"), "PNG"), False),
    "png gray 4-bit": (encode(base.convert("L").point(lambda v: v // 17 * 17), "PNG", bits=4), False),
    "png 1-bit": (encode(base.convert("1"), "PNG"), False),
    "png palette": (encode(base.convert("P"), "PNG"), False),
    "png palette 4-bit": (encode(base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG", bits=4),
                          False),
    "png rgb 16-bit": (png_16bit(base), False),
    "png rgba": (encode(transparent, "PNG"), True),
    "png gray+alpha": (encode(transparent.convert("LA"), "PNG"), True),
    "png interlaced rgba": (encode(transparent, "PNG"), True),
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_exact_path_matches_pillow_on_every_format(name):
    data, alpha = GENERATED[name]
    want = reference(data, alpha=alpha)  # 16-bit RGB: Pillow and mmserve both keep the high byte
    assert max_diff(mmserve_exact(data), want) <= 1


def test_interlaced_png_is_really_interlaced():
    data = GENERATED["png interlaced rgba"][0]
    # Pillow writes Adam7 only through its own encoder flag; craft it from the raw rows instead.
    interlaced = _reencode_interlaced(Image.open(io.BytesIO(data)))
    assert interlaced[28] == 1  # IHDR interlace method byte
    assert max_diff(mmserve_exact(interlaced), reference(interlaced, alpha=True)) <= 1


def _reencode_interlaced(image: Image.Image) -> bytes:
    pixels = np.asarray(image.convert("RGBA"))
    height, width = pixels.shape[:2]
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def sample_photos() -> list[Path]:
    found = []
    for package, folder in (("sklearn", "datasets/images"), ("matplotlib", "mpl-data/sample_data"),
                            ("skimage", "data")):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0]) / folder
        found += sorted(p for p in root.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return found


PHOTOS = sample_photos()


def test_sample_photos_are_installed():
    names = {p.name for p in PHOTOS}
    assert {"china.jpg", "flower.jpg", "grace_hopper.jpg", "astronaut.png", "coffee.png"} <= names


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_exact_path_matches_pillow_on_real_photos(path):
    data = path.read_bytes()
    mode = Image.open(io.BytesIO(data)).mode
    if mode in ("I;16", "I;16B", "I"):
        pytest.skip("16-bit grayscale: mmserve keeps the high byte where Pillow clips (see README)")
    alpha = mode in ("RGBA", "LA", "PA") or "transparency" in Image.open(io.BytesIO(data)).info
    assert max_diff(mmserve_exact(data), reference(data, alpha=alpha)) <= 1


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exact_path_is_bit_identical_to_pillow_without_alpha(orientation):
    # The JPEG is decoded only where the resize reads; Pillow decodes it whole.
    exif = Image.Exif()
    exif[0x0112] = orientation
    opaque = [p.read_bytes() for p in PHOTOS if Image.open(p).mode in ("RGB", "L", "CMYK")]
    oriented = [encode(photo(w, h, seed=orientation), "JPEG", quality=95, exif=exif.tobytes())
                for w, h in ((1001, 667), (667, 1001))]
    for data in opaque + oriented:
        for size in (64, 224):
            assert max_diff(mmserve_exact(data, size), reference(data, size)) == 0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_exif_transpose(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo(301, 199, seed=orientation), "JPEG", quality=95, exif=exif.tobytes())
    pixels, info = _C.decode(data)
    assert info["orientation"] == orientation
    transposed = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    assert pixels.shape == transposed.shape
    assert max_diff(pixels, transposed) == 0
    assert max_diff(mmserve_exact(data), reference(data)) <= 1


def test_exif_orientation_can_be_turned_off():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(photo(300, 200), "JPEG", exif=exif.tobytes())
    assert _C.decode(data, exif_orientation=False)[0].shape == (200, 300, 3)
    assert _C.decode(data)[0].shape == (300, 200, 3)


def test_format_comes_from_the_bytes_not_the_name(tmp_path):
    png = GENERATED["png rgb"][0]
    misnamed = tmp_path / "actually_png.jpg"
    misnamed.write_bytes(png)
    info = ClipModelInfo.from_dir(Path(__file__).resolve().parents[1] / "mmserve/models/default")
    batch = ImagePreprocessor(info, exact=True)([misnamed])
    assert max_diff(batch[0], reference(png, info.image_size)) <= 1


def test_fast_path_picks_the_largest_dct_scale_that_still_covers_the_target():
    assert _C.fast_path_denominator(1920, 1280, 224) == 4   # 320 >= 224; 1280 / 8 = 160 is not
    assert _C.fast_path_denominator(4000, 3000, 224) == 8   # 375
    assert _C.fast_path_denominator(1792, 1792, 224) == 8   # exactly 224: no upsampling
    assert _C.fast_path_denominator(447, 447, 224) == 1     # 223.5 < 224
    assert _C.fast_path_denominator(900, 448, 224) == 2


@pytest.mark.parametrize("orientation", range(1, 9))
def test_fast_path_samples_the_same_region_as_the_exact_path(orientation):
    # 1001 x 667 at 1/4 or 1/8 leaves a padded partial column and row, which EXIF
    # orientation can move to the first edge; the resize must skip it either way
    # (with photo()'s 16-pixel detail, a region off by that padding measured a
    # mean difference of 5 to 35 here).
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo(1001, 667, seed=orientation), "JPEG", quality=95, exif=exif.tobytes())
    for size, denominator, bound in ((64, 8, 3.5), (160, 4, 1.5)):
        assert _C.fast_path_denominator(1001, 667, size) == denominator
        exact, _ = _C.preprocess_batch([data], size, size, exact=True)
        fast, _ = _C.preprocess_batch([data], size, size, exact=False)
        mean = np.abs(exact.astype(np.int32) - fast.astype(np.int32)).mean()
        assert mean < bound, (size, mean)


JPEG_VARIANTS = {  # (mode, encoder options) of the generated JPEG cases
    "4:2:0": ("RGB", {}),
    "4:4:4": ("RGB", {"subsampling": 0}),
    "4:2:2": ("RGB", {"subsampling": 1}),
    "progressive": ("RGB", {"progressive": True}),
    "grayscale": ("L", {}),
    "cmyk": ("CMYK", {}),
}


@pytest.mark.parametrize("variant", JPEG_VARIANTS)
def test_a_decoded_window_equals_the_same_pixels_of_the_whole_decode(variant):
    # The preprocessing decodes a JPEG only where the resize reads; those pixels
    # must be the full decode's, whatever the subsampling, scale and orientation.
    mode, options = JPEG_VARIANTS[variant]
    rng = np.random.default_rng(len(variant))
    smaller = 0
    for orientation in (1, 3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = encode(base.convert(mode), "JPEG", quality=90, exif=exif.tobytes(), **options)
        for scale in (1, 2, 4, 8):
            whole, info = _C.decode(data, scale=scale)
            assert info["offset"] == (0, 0) and info["frame"] == (whole.shape[1], whole.shape[0])
            height, width = whole.shape[:2]
            for _ in range(3):
                x0, x1 = sorted(int(v) for v in rng.integers(0, width, 2))
                y0, y1 = sorted(int(v) for v in rng.integers(0, height, 2))
                x1, y1 = x1 + 1, y1 + 1
                part, where = _C.decode(data, scale=scale, window=(x0, y0, x1, y1))
                ox, oy = where["offset"]
                assert where["frame"] == info["frame"]
                assert ox <= x0 and oy <= y0 and ox + part.shape[1] >= x1 and oy + part.shape[0] >= y1
                got = part[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
                assert np.array_equal(got, whole[y0:y1, x0:x1]), (orientation, scale, (x0, y0, x1, y1))
                smaller += part.size < whole.size
    assert smaller >= 12  # the windows really were decoded alone


def large_jpegs() -> list[bytes]:
    """Real photos at sizes that take each DCT scale, odd sizes included."""
    found = []
    for path in PHOTOS:
        image = Image.open(path)
        if image.mode not in ("RGB", "L") or min(image.size) < 128:
            continue
        found.append(encode(image.convert("RGB"), "JPEG", quality=92))
    return found + [encode(photo(1601, 1067, seed=s), "JPEG", quality=90) for s in range(2)]


def test_fast_path_embeddings_match_the_exact_path(bundled_settings):
    from mmserve.embedder import LocalEmbedder

    embedder = LocalEmbedder(bundled_settings)
    data = large_jpegs()
    info = embedder.info
    sizes = [Image.open(io.BytesIO(d)).size for d in data]
    scales = {_C.fast_path_denominator(w, h, info.image_size) for w, h in sizes}
    assert {2, 4, 8} <= scales  # every DCT scale is exercised
    exact = ImagePreprocessor(info, exact=True)(data)
    fast = ImagePreprocessor(info, exact=False)(data)
    assert not np.array_equal(exact, fast)  # the fast path really ran
    cosine = (embedder.embed_pixels(exact) * embedder.embed_pixels(fast)).sum(1)
    assert cosine.min() >= 0.995, dict(zip(sizes, cosine.round(4)))


def test_batch_reports_each_failure_and_keeps_the_rest():
    good = GENERATED["jpeg baseline 4:2:0"][0]
    batch, errors = _C.preprocess_batch([good, b"not an image", good[: len(good) // 2], good], 64, 64)
    assert errors[0] is None and errors[3] is None
    assert errors[1][0] == "unsupported_format" and "unsupported format" in errors[1][1]
    assert errors[2][0] == "corrupt" and "corrupt" in errors[2][1]
    assert np.array_equal(batch[0], batch[3]) and not batch[1].any() and not batch[2].any()
    info = ClipModelInfo.from_dir(Path(__file__).resolve().parents[1] / "mmserve/models/default")
    with pytest.raises(ValueError, match=r"image 1: unsupported format.*image 2: ") as caught:
        ImagePreprocessor(info)([good, b"not an image", good[: len(good) // 2]])
    assert [(e.index, e.code) for e in caught.value.errors] == [(1, ErrorCode.UNSUPPORTED_FORMAT),
                                                                 (2, ErrorCode.CORRUPT)]
    assert caught.value.index == 1 and caught.value.item == b"not an image"


def test_results_do_not_depend_on_the_thread_count():
    data = [GENERATED[name][0] for name in sorted(GENERATED)] * 3
    one, _ = _C.preprocess_batch(data, 96, 96, threads=1)
    many, _ = _C.preprocess_batch(data, 96, 96, threads=4)
    assert np.array_equal(one, many)


def test_writes_into_a_caller_batch():
    data = [GENERATED["png rgb"][0]] * 2
    out = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    result, _ = _C.preprocess_batch(data, 64, 64, out=out)
    assert result is out or np.shares_memory(result, out)
    assert out.any()
    with pytest.raises(ValueError, match="out must be"):
        _C.preprocess_batch(data, 64, 64, out=np.zeros((3, 64, 64, 3), dtype=np.uint8))


def _png_header_only(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    ihdr = struct.pack(">I", 13) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return b"\x89PNG\r\n\x1a\n" + ihdr


@pytest.mark.parametrize(
    "data, message, codes",
    [
        (b"", "empty input", {"empty"}),
        (b"hello world, not an image", "unsupported format", {"unsupported_format"}),
        (b"GIF89a" + b"\x00" * 20, "unsupported format: GIF", {"unsupported_format"}),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "unsupported format: WebP", {"unsupported_format"}),
        (_png_header_only(50_000, 50_000), "decompression bomb: 50000x50000", {"too_many_pixels"}),
        (_png_header_only(70_000, 10), "exceeds user limit|absurd dimensions", {"too_many_pixels", "invalid"}),
        (_png_header_only(0, 10), "invalid PNG|zero width", {"invalid"}),
        (b"\xff\xd8\xff" + b"\x00" * 50, "invalid JPEG", {"invalid"}),
        (GENERATED["png rgb"][0][:200], "truncated|corrupt|invalid", {"invalid", "corrupt"}),
        (GENERATED["jpeg progressive"][0][:400], "truncated|corrupt|invalid", {"invalid", "corrupt"}),
    ],
    ids=["zero-bytes", "text", "gif", "webp", "bomb", "absurd", "zero-width", "jpeg-garbage", "png-truncated",
         "jpeg-truncated"],
)
def test_bad_input_raises_value_error_naming_the_problem(data, message, codes):
    with pytest.raises(ValueError, match=message):
        _C.decode(data)
    _, errors = _C.preprocess_batch([data], 32, 32)
    assert errors[0][0] in codes and re.search(message, errors[0][1]), errors[0]


def test_corrupted_bytes_in_the_middle_are_an_error_or_an_image_never_a_crash():
    data = bytearray(GENERATED["jpeg baseline 4:2:0"][0])
    rng = np.random.default_rng(1)
    for _ in range(200):
        broken = bytearray(data)
        for i in rng.integers(0, len(broken), 8):
            broken[i] = rng.integers(0, 256)
        _, errors = _C.preprocess_batch([bytes(broken)], 32, 32)
        assert errors[0] is None or (errors[0][0] in {"invalid", "corrupt", "too_many_pixels"}
                                     and isinstance(errors[0][1], str)), errors[0]


def test_limits_are_settable_and_checked_before_decoding():
    data = GENERATED["png rgb"][0]
    with pytest.raises(ValueError, match="exceeds the limit of 1000 bytes"):
        _C.decode(data, max_encoded_bytes=1000)
    with pytest.raises(ValueError, match="decompression bomb"):
        _C.decode(data, max_pixels=1000)
    info = ClipModelInfo.from_dir(Path(__file__).resolve().parents[1] / "mmserve/models/default")
    with pytest.raises(ValueError, match="decompression bomb"):
        ImagePreprocessor(info, limits=ImageLimits(max_pixels=1000))([data])


def test_non_bytes_input_is_a_type_error():
    with pytest.raises(TypeError, match="image 1: expected bytes-like data, got int"):
        _C.preprocess_batch([GENERATED["png rgb"][0], 5], 32, 32)
