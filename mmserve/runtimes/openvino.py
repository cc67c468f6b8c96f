"""OpenVINO on CPUs: the default tower runtime (measured fastest here, README Benchmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Activations are quantized on the fly per group of this many input channels
# (OpenVINO's CPU default, set explicitly so the choice is ours).
DYNAMIC_QUANTIZATION_GROUP = 32


class OpenVinoTower:
    name = "openvino"

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
        self._compiled = core.compile_model(model, "CPU", config)
        self._output = self._compiled.output(0)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        request = self._compiled.create_infer_request()
        result = request.infer([inputs])[self._output]
        return np.array(result, dtype=np.float32, copy=True)


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
