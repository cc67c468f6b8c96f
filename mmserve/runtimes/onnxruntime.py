"""ONNX Runtime on CPUs: the portable alternative tower runtime."""

from __future__ import annotations

import os
from pathlib import Path


class OnnxRuntimeTower:
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: int | None = None, precision: str = "auto") -> None:
        import onnxruntime as ort

        if precision == "int8":
            raise ValueError("precision 'int8' needs the openvino runtime")

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: inputs})[0]
