"""Type stub for the compiled core. Private: use the mmserve package API."""

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
