"""OpenVINO on CPUs: the default tower runtime (measured fastest here, README Benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mmserve.runtimes import InputSpec, numpy_type

# Activations are quantized on the fly per group of this many input channels
# (OpenVINO's CPU default, set explicitly so the choice is ours).
DYNAMIC_QUANTIZATION_GROUP = 32


class OpenVinoTower:
    name = "openvino"
    max_batch_size: int | None = None

    def __init__(self, onnx_path: str | Path, threads: int | None = None, precision: str = "auto") -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(onnx_path))
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if precision == "f32":
            # "auto" lets OpenVINO pick bf16 on CPUs with AMX/AVX512-BF16.
            config["INFERENCE_PRECISION_HINT"] = "f32"
        elif precision == "int8":
            compress_matmul_weights(model)
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = DYNAMIC_QUANTIZATION_GROUP
        self._requested = precision
        self._compiled = core.compile_model(model, "CPU", config)
        self._output = self._compiled.output(0)
        port = self._compiled.input(0)
        shape = port.get_partial_shape()
        # The ONNX input name (OpenVINO also attaches the names of internal tensors, which start with "/").
        name = min(port.get_names(), key=lambda n: (n.startswith("/"), n))
        self.input = InputSpec(name, numpy_type(port.get_element_type().get_type_name()),
                               tuple(d.get_length() if d.is_static else -1 for d in list(shape)[1:]))

    @property
    def precision(self) -> str:
        """The precision OpenVINO chose for compute on this CPU (bf16 on AMX / AVX512-BF16 hosts under "auto")."""
        compute = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        return f"int8 weights, {compute} activations" if self._requested == "int8" else compute

    def run(self, batch: np.ndarray) -> np.ndarray:
        request = self._compiled.create_infer_request()
        result = request.infer([batch])[self._output]
        return np.array(result, dtype=np.float32, copy=True)

    __call__ = run

    def warm_up(self, batches: Iterable[np.ndarray]) -> None:
        for batch in batches:
            self.run(batch)


def compress_matmul_weights(model) -> int:
    """Stores every constant f32 MatMul weight as uint8, in place; returns how many.

    Asymmetric, one scale and zero point per output channel, decompressed
    through f16 (the pattern OpenVINO's CPU plugin runs as an int8 matmul with
    dynamically quantized activations on VNNI/AMX). Data-free: no calibration
    set, so it works the same on any checkpoint; fidelity is measured in tests
    and benchmarks (embedding cosine against f32).
    """
    import openvino.opset13 as ops
    from openvino import Type

    count = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        source = op.input_value(1).get_node()
        if source.get_type_name() != "Constant" or source.get_output_element_type(0) != Type.f32:
            continue
        weights = source.get_data()
        if weights.ndim != 2:
            continue
        reduce_axis = 1 if op.get_attributes()["transpose_b"] else 0  # the input channels
        low = np.minimum(weights.min(axis=reduce_axis, keepdims=True), 0)
        high = np.maximum(weights.max(axis=reduce_axis, keepdims=True), 0)
        scale = (high - low) / 255.0
        scale[scale == 0] = 1.0
        zero = np.clip(np.round(-low / scale), 0, 255)
        quantized = np.clip(np.round(weights / scale + zero), 0, 255).astype(np.uint8)
        decompressed = ops.multiply(
            ops.subtract(
                ops.convert(ops.constant(quantized, Type.u8), Type.f16),
                ops.convert(ops.constant(zero.astype(np.uint8), Type.u8), Type.f16),
            ),
            ops.constant(scale.astype(np.float16), Type.f16),
        )
        op.input(1).replace_source_output(ops.convert(decompressed, Type.f32).output(0))
        count += 1
    return count
