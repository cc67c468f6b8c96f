"""CPU runtimes for an exported tower, behind one small interface.

A `TowerRuntime` takes the tower's single input array and returns its
`embedding [B, D]`. OpenVINO is the default on CPUs (measured faster than ONNX
Runtime here: see README, Benchmarks); ONNX Runtime is the portable fallback.
TensorRT engines are served by Triton itself on GPU hosts and are not loaded
in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

RUNTIMES = ("openvino", "onnxruntime")


class TowerRuntime(Protocol):
    name: str

    def __call__(self, inputs: np.ndarray) -> np.ndarray: ...


PRECISIONS = ("auto", "f32", "int8")


def load_tower(
    onnx_path: str | Path, runtime: str = "openvino", threads: int | None = None, precision: str = "auto"
) -> TowerRuntime:
    """`precision`: "auto" (the runtime's default: bf16 where the CPU has it), "f32",
    or "int8" (OpenVINO: uint8 weights, activations quantized on the fly)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if runtime == "openvino":
        from mmserve.runtimes.openvino import OpenVinoTower

        return OpenVinoTower(onnx_path, threads, precision)
    if runtime == "onnxruntime":
        from mmserve.runtimes.onnxruntime import OnnxRuntimeTower

        return OnnxRuntimeTower(onnx_path, threads, precision)
    raise LookupError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
