"""ONNX Runtime on CPUs: the portable alternative tower runtime."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mmserve.runtimes import InputSpec, numpy_type


class OnnxRuntimeTower:
    name = "onnxruntime"
    max_batch_size: int | None = None

    def __init__(self, onnx_path: str | Path, threads: int | None = None, precision: str = "auto") -> None:
        import onnxruntime as ort

        if precision == "int8":
            raise ValueError("precision 'int8' needs the openvino runtime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        spec = self._session.get_inputs()[0]
        self.input = InputSpec(spec.name, numpy_type(spec.type),
                               tuple(d if isinstance(d, int) else -1 for d in spec.shape[1:]))

    @property
    def precision(self) -> str:
        return "f32"

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self.input.name: batch})[0]

    __call__ = run

    def warm_up(self, batches: Iterable[np.ndarray]) -> None:
        for batch in batches:
            self.run(batch)
