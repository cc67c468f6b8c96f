"""Type stub for the compiled core. Private: use the mmserve package API."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__version__: str

def cpu_features() -> list[str]:
    """Instruction-set extensions usable on this CPU (CPUID + OS XCR0 check)."""

def build_info() -> dict[str, object]:
    """Compiler and whether the baseline ISA was raised beyond the default (never for wheels)."""

def resize_crop(
    image: npt.NDArray[np.uint8],
    resize: tuple[int, int],
    crop: tuple[int, int, int, int],
    filter: str = "bicubic",
    kernel: str = "auto",
    out: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.uint8]:
    """Pillow-exact resize to `resize` (w, h), keeping the `crop` window (x, y, w, h)."""

def shortest_side_center_crop(
    width: int, height: int, size: int, crop: int
) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The reference geometry: shortest side to `size`, centred `crop` square."""

def active_resample_kernel() -> str:
    """Resampling kernels chosen for this CPU: "avx512", "avx2" or "scalar"."""

class UnsupportedKernelError(LookupError):
    """A forced kernel set (kernel=...) that this CPU or build cannot run."""

def top_k(
    queries: npt.NDArray[np.float32],
    database: npt.NDArray[np.float32] | npt.NDArray[np.float16] | npt.NDArray[np.int8],
    k: int,
    *,
    scales: npt.NDArray[np.float32] | None = None,
    kernel: str = "auto",
    threads: int = 0,
    out_scores: npt.NDArray[np.float32] | None = None,
    out_indices: npt.NDArray[np.int64] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Exact inner-product top-k: float32 [Q, min(k, N)] scores and int64 row indices, best first,
    ties to the lower row (GIL released, threads over rows)."""

def active_similarity_kernel() -> str:
    """Similarity kernels chosen for this CPU: "avx512", "avx2", "neon" or "scalar"."""

def available_similarity_kernels() -> list[str]:
    """Every similarity kernel set this CPU can run, "scalar" first."""

class DecodeError(ValueError):
    """An image that cannot be decoded (bad data, limits, unsupported format)."""

DEFAULT_MAX_ENCODED_BYTES: int
DEFAULT_MAX_PIXELS: int

def preprocess_batch(
    images: Sequence[bytes | bytearray | memoryview],
    size: int,
    crop: int,
    filter: str = "bicubic",
    resize_mode: str = "crop",
    exact: bool = False,
    max_encoded_bytes: int = ...,
    max_pixels: int = ...,
    background: tuple[int, int, int] = (255, 255, 255),
    exif_orientation: bool = True,
    threads: int = 0,
    out: npt.NDArray[np.uint8] | None = None,
) -> tuple[npt.NDArray[np.uint8], list[tuple[str, str] | None]]:
    """Decode, resize, centre-crop into uint8 [N, crop, crop, 3]; per image None or (code, message)."""

def decode(
    data: bytes | bytearray | memoryview,
    scale: int = 1,
    exif_orientation: bool = True,
    background: tuple[int, int, int] = (255, 255, 255),
    max_encoded_bytes: int = ...,
    max_pixels: int = ...,
) -> tuple[npt.NDArray[np.uint8], dict[str, object]]:
    """Decode one JPEG/PNG to uint8 [H, W(, C)] plus {cmyk, nearest, orientation}."""

def fast_path_denominator(width: int, height: int, target: int) -> int:
    """JPEG DCT scale denominator the fast path uses (1 = full decode)."""

class ClipTokenizer:
    """open_clip's SimpleTokenizer pipeline (without ftfy) in C++."""

    def __init__(
        self, vocabulary: dict[str, int], merges: list[tuple[str, str]], start_id: int, end_id: int
    ) -> None: ...
    def encode(self, text: str) -> list[int]:
        """BPE ids of one text (no start/end tokens)."""
    def clean(self, text: str) -> str:
        """The text after html unescape, whitespace collapse and lowercase."""
    def encode_batch(
        self, texts: Sequence[str | bytes], context_length: int, threads: int = 0
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """ids [N, context_length] and lengths up to and including end-of-text (GIL released)."""

def thread_budget() -> int: ...
def set_thread_budget(threads: int) -> None: ...
def detected_cpus() -> int: ...
def cpus_from_cgroup_max(text: str) -> int: ...
