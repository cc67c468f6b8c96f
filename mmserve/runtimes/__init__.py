"""Tower runtimes: the protocol every runtime implements, and the registry Triton's repository builder reads.

A tower is an exported model with one input (uint8 pixels `[B, S, S, 3]`, or
int32 token ids `[B, L]`) and one output, L2-normalised `embedding [B, D]`.
A `TowerRuntime` runs one in this process: `run(batch)`, what input it takes
(`input`), the largest batch it accepts, what it warms up with and what
precision it actually computes in.

How Triton hosts a tower depends on the runtime (`Runtime.triton_backend`):

- "python": the runtime is a library mmserve loads inside its own Triton Python models (OpenVINO, ONNX
  Runtime on CPUs), so decoding or tokenizing and the tower share one process and one request hop;
- TensorRT engines and the CUDA runtime also run inside those Python models on today's tritonserver;
  for NVIDIA's Triton container (`--target ngc`) the repository builder writes native `tensorrt_plan` towers
  instead, which mmserve's Python models feed through ensembles (they then only decode or tokenize).

OpenVINO is the default on CPUs (measured faster than ONNX Runtime here: see README, Benchmarks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

PRECISIONS = ("auto", "f32", "int8")  # OpenVINO's


class RuntimeUnavailableError(RuntimeError):
    """A runtime's library or device is missing on this host (TensorRT, a CUDA GPU)."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """A tower's input: name, dtype and shape without the batch dimension (-1: any length)."""

    name: str
    dtype: type[np.generic]
    shape: tuple[int, ...]


class TowerRuntime(Protocol):
    name: str  # the runtime ("openvino", ...)
    input: InputSpec
    max_batch_size: int | None  # the largest batch `run` takes (None: any)

    @property
    def precision(self) -> str:
        """What the tower computes in on this host ("f32", "bf16", "int8 weights, bf16 activations", ...)."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 `embedding [B, D]` of one batch of `input`."""

    def warm_up(self, batches: Iterable[np.ndarray]) -> None:
        """Run these batches once so later calls of their shapes pay no compilation or allocation."""


@dataclasses.dataclass(frozen=True)
class Runtime:
    """A runtime mmserve knows: how to load a tower in this process, and how Triton hosts it."""

    name: str
    triton_backend: str  # "python": loaded by mmserve's Python models; else a native Triton backend
    precisions: tuple[str, ...]
    load: Callable[[Path, int | None, str], TowerRuntime]
    devices: str = "cpu"


def _openvino(path: Path, threads: int | None, precision: str) -> TowerRuntime:
    from mmserve.runtimes.openvino import OpenVinoTower

    return OpenVinoTower(path, threads, precision)


def _onnxruntime(path: Path, threads: int | None, precision: str) -> TowerRuntime:
    from mmserve.runtimes.onnxruntime import OnnxRuntimeTower

    return OnnxRuntimeTower(path, threads, precision)


def _tensorrt(path: Path, threads: int | None, precision: str) -> TowerRuntime:
    from mmserve.runtimes.tensorrt import TensorRtTower

    return TensorRtTower(path, threads, precision)


def _cuda(path: Path, threads: int | None, precision: str) -> TowerRuntime:
    from mmserve.runtimes.cuda import CudaTower

    return CudaTower(path, threads, precision)


REGISTRY: dict[str, Runtime] = {
    "openvino": Runtime("openvino", "python", PRECISIONS, _openvino),
    "onnxruntime": Runtime("onnxruntime", "python", ("auto", "f32"), _onnxruntime),
    # On today's tritonserver a TensorRT engine runs inside mmserve's Python models too; NVIDIA's Triton
    # container serves it natively (`--target ngc`: platform tensorrt_plan).
    "tensorrt": Runtime("tensorrt", "python", ("auto", "fp16", "bf16", "fp8", "int8", "f32"), _tensorrt, "gpu"),
    "cuda": Runtime("cuda", "python", ("auto", "fp16", "bf16", "f32"), _cuda, "gpu"),
}
RUNTIMES = tuple(REGISTRY)


def runtime(name: str) -> Runtime:
    try:
        return REGISTRY[name]
    except KeyError:
        raise LookupError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}") from None


def load_tower(
    onnx_path: str | Path, runtime_name: str = "openvino", threads: int | None = None, precision: str = "auto"
) -> TowerRuntime:
    """A tower in this process. `precision`: "auto" (the runtime's default: bf16 where the CPU has it),
    "f32", or "int8" (OpenVINO: uint8 weights, activations quantized on the fly)."""
    chosen = runtime(runtime_name)
    if precision not in chosen.precisions:
        raise ValueError(f"precision {precision!r} needs the openvino runtime" if precision == "int8" else
                         f"runtime {runtime_name} supports precision {', '.join(chosen.precisions)}; got {precision!r}")
    return chosen.load(Path(onnx_path), threads, precision)


_NUMPY_TYPES: dict[str, type[np.generic]] = {"tensor(uint8)": np.uint8, "tensor(int32)": np.int32, "tensor(float)": np.float32,
                "u8": np.uint8, "i32": np.int32, "f32": np.float32}


def numpy_type(name: str) -> type[np.generic]:
    """numpy type of an ONNX ("tensor(uint8)") or OpenVINO ("u8") element type name."""
    return _NUMPY_TYPES[name]
