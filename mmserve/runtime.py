"""CPU runtimes for an exported tower, behind one small interface.

A `TowerRuntime` takes the tower's single input array and returns its
`embedding [B, D]`. OpenVINO is the default on CPUs (measured faster than ONNX
Runtime here: see README, Benchmarks); ONNX Runtime is the portable fallback.
TensorRT engines are served by Triton itself on GPU hosts and are not loaded
in-process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

RUNTIMES = ("openvino", "onnxruntime")


class TowerRuntime(Protocol):
    name: str

    def __call__(self, inputs: np.ndarray) -> np.ndarray: ...


class OpenVinoTower:
    name = "openvino"

    def __init__(self, onnx_path: str | Path, threads: int | None = None, precision: str = "auto") -> None:
        import openvino as ov

        core = ov.Core()
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if precision == "f32":
            # "auto" lets OpenVINO pick bf16 on CPUs with AMX/AVX512-BF16.
            config["INFERENCE_PRECISION_HINT"] = "f32"
        self._compiled = core.compile_model(str(onnx_path), "CPU", config)
        self._output = self._compiled.output(0)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        request = self._compiled.create_infer_request()
        result = request.infer([inputs])[self._output]
        return np.array(result, dtype=np.float32, copy=True)


class OnnxRuntimeTower:
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: int | None = None, precision: str = "auto") -> None:
        import onnxruntime as ort

        del precision  # always float32 on the CPU execution provider

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: inputs})[0]


def load_tower(
    onnx_path: str | Path, runtime: str = "openvino", threads: int | None = None, precision: str = "auto"
) -> TowerRuntime:
    """`precision`: "auto" (the runtime's fastest accurate mode) or "f32"."""
    if precision not in ("auto", "f32"):
        raise ValueError(f"precision must be 'auto' or 'f32', got {precision!r}")
    if runtime == "openvino":
        return OpenVinoTower(onnx_path, threads, precision)
    if runtime == "onnxruntime":
        return OnnxRuntimeTower(onnx_path, threads, precision)
    raise LookupError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
