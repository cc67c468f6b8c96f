"""Type stub for the compiled core. Private: use the mmserve package API."""

__version__: str

def cpu_features() -> list[str]:
    """Instruction-set extensions usable on this CPU (CPUID + OS XCR0 check)."""

def build_info() -> dict[str, object]:
    """Compiler and whether the baseline ISA was raised beyond the default (never for wheels)."""
