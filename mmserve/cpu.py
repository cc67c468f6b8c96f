"""What the compiled core knows about this CPU and how it was built."""

from __future__ import annotations

from mmserve import _C


def cpu_features() -> list[str]:
    """Instruction-set extensions usable here (CPUID plus the OS's XCR0 state check)."""
    return list(_C.cpu_features())


def build_info() -> dict[str, object]:
    return dict(_C.build_info())


def resample_kernel() -> str:
    """The image resampling kernels chosen for this CPU: "avx512", "avx2" or "scalar"."""
    return str(_C.active_resample_kernel())


def similarity_kernel() -> str:
    """The similarity (top-k) kernels chosen for this CPU: "avx512", "avx2", "neon" or "scalar"."""
    return str(_C.active_similarity_kernel())
