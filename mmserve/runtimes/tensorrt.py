"""TensorRT engines for the exported towers, on NVIDIA GPUs (`mmserve build --runtime tensorrt`).

    engine = build_engine(onnx, cache, spec=tower_spec(onnx, max_batch_size=64, lengths=buckets), precision="fp16")

- **Profiles** (`profiles_for`): batch 1 to the max batch with the optimum at `opt_batch` (the max batch unless
  told: the throughput point), and for text towers one dynamic length profile (8 to the context length, optimum
  at the most common bucket) or one profile per length bucket (`profile_mode="buckets"`); `bench/gpu_check.py`
  measures which is faster.
- **Precisions**: fp16 (default), bf16, fp8, int8 where the GPU has them (`gpu_precisions`), each behind an
  accuracy gate against the f32 ONNX on sample inputs (`ACCURACY_GATES`: 0.999 for 16-bit, 0.995 for 8-bit);
  below it the build is refused with the figure.
- **Caches**: a timing cache per GPU and TensorRT version, and an engine cache keyed by the ONNX file's digest,
  the GPU's name and compute capability, the TensorRT version, the precision and the profiles (`EngineKey`):
  engines are not portable between any of them.

`TensorRtTower` runs an engine behind the `TowerRuntime` interface: one CUDA stream per instance, device
buffers preallocated for the largest profile, pinned host memory for the copies (through torch's CUDA
allocator, which the GPU host has). Nothing here is imported on the CPU serving path; on a host without
TensorRT or without a GPU every entry point fails with one clear error (`require_tensorrt`).

Not run on this project's CPU machines: see README, GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmserve.runtimes import InputSpec, RuntimeUnavailableError, numpy_type

TENSORRT_PRECISIONS = ("auto", "fp16", "bf16", "fp8", "int8", "f32")
ACCURACY_GATES = {"f32": 0.9999, "fp16": 0.999, "bf16": 0.999, "fp8": 0.995, "int8": 0.995}
# Compute capability from which each reduced precision runs natively (TensorRT's support matrix).
MIN_CAPABILITY = {"fp16": (6, 0), "int8": (6, 1), "bf16": (8, 0), "fp8": (8, 9)}
ENGINE_FILE = "model.plan"


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    name: str
    capability: tuple[int, int]

    @classmethod
    def current(cls, device: int = 0) -> GpuInfo:
        try:
            import torch
        except ImportError as error:
            raise RuntimeUnavailableError("the TensorRT runtime needs torch with CUDA on the GPU host") from error
        if not torch.cuda.is_available():
            raise RuntimeUnavailableError("no CUDA GPU on this host (torch.cuda.is_available() is False): the "
                                      "tensorrt runtime runs on NVIDIA GPUs; use openvino on CPUs")
        major, minor = torch.cuda.get_device_capability(device)
        return cls(torch.cuda.get_device_name(device), (major, minor))


def require_tensorrt():
    """The `tensorrt` module, or one clear error saying what is missing."""
    try:
        import tensorrt
    except ImportError as error:
        raise RuntimeUnavailableError("TensorRT is not installed: `pip install tensorrt` on an NVIDIA GPU host (it is "
                                  "not available on CPU-only machines; use --runtime openvino there)") from error
    return tensorrt


def gpu_precisions(gpu: GpuInfo) -> tuple[str, ...]:
    """Precisions this GPU computes natively (f32 always)."""
    return ("f32", *(p for p, minimum in MIN_CAPABILITY.items() if gpu.capability >= minimum))


def resolve_precision(precision: str, gpu: GpuInfo) -> str:
    chosen = "fp16" if precision == "auto" else precision
    if chosen not in TENSORRT_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(TENSORRT_PRECISIONS)}; got {precision!r}")
    if chosen not in gpu_precisions(gpu):
        raise ValueError(f"{gpu.name} (compute capability {gpu.capability[0]}.{gpu.capability[1]}) has no {chosen}; "
                         f"it has {', '.join(gpu_precisions(gpu))}")
    return chosen


@dataclasses.dataclass(frozen=True)
class Profile:
    """One optimization profile: min, opt and max shape of the input, batch first."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TowerSpec:
    """What a tower's engine must take: its ONNX input, the batch range, and (text) the length buckets."""

    input: InputSpec
    max_batch_size: int
    opt_batch: int | None = None
    lengths: tuple[int, ...] = ()  # the text tower's length buckets, ascending; () for images

    @property
    def is_text(self) -> bool:
        return -1 in self.input.shape


def profiles_for(spec: TowerSpec, mode: str = "dynamic") -> list[Profile]:
    """The engine's optimization profiles. Images: one, batch 1..max. Text: one dynamic in length (mode
    "dynamic"), or one per length bucket (mode "buckets", each fixed in length)."""
    if spec.max_batch_size < 1:
        raise ValueError(f"max batch size must be at least 1, got {spec.max_batch_size}")
    opt_batch = min(spec.opt_batch or spec.max_batch_size, spec.max_batch_size)
    if not spec.is_text:
        shape = spec.input.shape
        return [Profile((1, *shape), (opt_batch, *shape), (spec.max_batch_size, *shape))]
    if not spec.lengths:
        raise ValueError("a text tower's profiles need its length buckets")
    if mode == "buckets":
        return [Profile((1, n), (opt_batch, n), (spec.max_batch_size, n)) for n in spec.lengths]
    if mode != "dynamic":
        raise ValueError(f"profile mode must be dynamic or buckets, got {mode!r}")
    # Captions and queries fall in the short buckets: optimise a quarter of the way up, allow all.
    typical = spec.lengths[len(spec.lengths) // 4] if len(spec.lengths) > 1 else spec.lengths[0]
    return [Profile((1, spec.lengths[0]), (opt_batch, typical), (spec.max_batch_size, spec.lengths[-1]))]


def tower_spec(onnx_path: str | Path, max_batch_size: int, lengths: Sequence[int] = (),
               opt_batch: int | None = None) -> TowerSpec:
    """The spec of an exported tower, read from its ONNX graph."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    (tensor,) = graph.input
    dims = tuple(d.dim_value if d.dim_value else -1 for d in tensor.type.tensor_type.shape.dim[1:])
    dtypes: dict[int, type[np.generic]] = {onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT32: np.int32}
    dtype = dtypes[tensor.type.tensor_type.elem_type]
    return TowerSpec(InputSpec(tensor.name, dtype, dims), max_batch_size, opt_batch,
                     tuple(lengths) if -1 in dims else ())


@dataclasses.dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; engines are not portable across any of it."""

    onnx_digest: str
    gpu_name: str
    capability: tuple[int, int]
    tensorrt_version: str
    precision: str
    profiles: tuple[Profile, ...]

    @classmethod
    def for_build(cls, onnx_path: str | Path, gpu: GpuInfo, tensorrt_version: str, precision: str,
                  profiles: Iterable[Profile]) -> EngineKey:
        digest = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()
        return cls(digest, gpu.name, gpu.capability, tensorrt_version, precision, tuple(profiles))

    def digest(self) -> str:
        payload = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:24]

    def directory(self, cache_dir: str | Path) -> Path:
        """Where the engine of this key lives: `<cache>/engines/<tower>-<digest>`, with the key beside it."""
        return Path(cache_dir) / "engines" / self.digest()


def timing_cache_file(cache_dir: str | Path, gpu: GpuInfo, tensorrt_version: str) -> Path:
    name = f"{gpu.name.replace(' ', '_')}-sm{gpu.capability[0]}{gpu.capability[1]}-trt{tensorrt_version}.cache"
    return Path(cache_dir) / "engines" / "timing" / name


def build_engine(onnx_path: str | Path, cache_dir: str | Path, spec: TowerSpec, precision: str = "auto", *,
                 profile_mode: str = "dynamic", samples: Sequence[np.ndarray] = (), force: bool = False,
                 workspace_gib: float = 4.0) -> Path:
    """Build (or find in the cache) the engine of one tower; returns the `.plan` file.

    With `samples` (batches of the tower's input), the engine is checked against the f32 ONNX on them and
    refused below `ACCURACY_GATES[precision]`, with the figure."""
    trt = require_tensorrt()
    gpu = GpuInfo.current()
    chosen = resolve_precision(precision, gpu)
    if chosen in ("fp8", "int8") and not is_quantized(onnx_path):
        raise ValueError(f"{chosen} engines need a quantized ONNX (QuantizeLinear/DequantizeLinear nodes, e.g. from "
                         f"NVIDIA ModelOpt); {Path(onnx_path).name} has none, and without them TensorRT would run "
                         "those layers in fp16: use fp16 or bf16")
    profiles = profiles_for(spec, profile_mode)
    key = EngineKey.for_build(onnx_path, gpu, trt.__version__, chosen, profiles)
    directory = key.directory(cache_dir)
    plan = directory / ENGINE_FILE
    if plan.is_file() and not force:
        return plan
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch always
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    flags = {"fp16": ["FP16"], "bf16": ["BF16"], "fp8": ["FP8", "FP16"], "int8": ["INT8", "FP16"], "f32": []}
    for flag in flags[chosen]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for profile in profiles:
        optimization = builder.create_optimization_profile()
        optimization.set_shape(spec.input.name, profile.min, profile.opt, profile.max)
        config.add_optimization_profile(optimization)
    timing_file = timing_cache_file(cache_dir, gpu, trt.__version__)
    timing_file.parent.mkdir(parents=True, exist_ok=True)
    timing = config.create_timing_cache(timing_file.read_bytes() if timing_file.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine for {onnx_path} at {chosen}")
    timing_file.write_bytes(memoryview(config.get_timing_cache().serialize()))
    directory.mkdir(parents=True, exist_ok=True)
    partial = plan.with_suffix(".partial")
    partial.write_bytes(memoryview(serialized))
    if samples:
        figure = accuracy(partial, onnx_path, samples)
        if figure < ACCURACY_GATES[chosen]:
            partial.unlink()
            raise ValueError(f"{chosen} engine of {Path(onnx_path).name} reaches cosine {figure:.5f} against the f32 "
                             f"ONNX on the sample inputs, below the gate {ACCURACY_GATES[chosen]}: refused")
    (directory / "key.json").write_text(json.dumps(dataclasses.asdict(key), indent=2) + "\n")
    partial.rename(plan)
    return plan


def is_quantized(onnx_path: str | Path) -> bool:
    """Whether the graph carries explicit quantization (Q/DQ nodes), which 8-bit TensorRT engines need."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


def accuracy(plan: str | Path, onnx_path: str | Path, samples: Sequence[np.ndarray]) -> float:
    """Lowest cosine between the engine's and the f32 ONNX's embeddings over the sample batches."""
    from mmserve.runtimes.onnxruntime import OnnxRuntimeTower

    reference = OnnxRuntimeTower(onnx_path, precision="f32")
    tower = TensorRtTower(plan)
    lowest = 1.0
    for batch in samples:
        got, want = tower.run(batch), reference.run(batch)
        cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        lowest = min(lowest, float(cosine.min()))
    return lowest


class TensorRtTower:
    """A TensorRT engine behind the `TowerRuntime` interface."""

    name = "tensorrt"
    max_batch_size: int | None

    def __init__(self, plan: str | Path, threads: int | None = None, precision: str = "auto") -> None:
        del threads  # the GPU's
        trt = require_tensorrt()
        import torch

        GpuInfo.current()
        self._torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine(Path(plan).read_bytes())
        if self._engine is None:
            raise RuntimeError(f"{plan}: not an engine for this GPU and TensorRT version (rebuild it)")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        (self._input_name,) = inputs
        (self._output_name,) = [n for n in names if n not in inputs]
        # Every profile's (min, max) input shape: a batch runs under the first profile that holds it.
        self._profiles = [tuple(tuple(int(d) for d in shape) for shape in
                                self._engine.get_tensor_profile_shape(self._input_name, index)[::2])
                          for index in range(self._engine.num_optimization_profiles)]
        largest = max((high for _, high in self._profiles), key=lambda shape: int(np.prod(shape)))
        self._profile = 0
        shape = tuple(self._engine.get_tensor_shape(self._input_name))
        dtype = numpy_type({"UINT8": "u8", "INT32": "i32"}[self._engine.get_tensor_dtype(self._input_name).name])
        self.input = InputSpec(self._input_name, dtype, tuple(int(d) for d in shape[1:]))
        self.max_batch_size = self._max_rows = int(largest[0])
        self._precision = precision
        # One stream per instance; buffers for the largest shape, reused (pinned host memory for the copies).
        self._stream = torch.cuda.Stream()
        torch_dtype = {np.uint8: torch.uint8, np.int32: torch.int32}[dtype]
        self._device_in = torch.empty(tuple(int(d) for d in largest), dtype=torch_dtype, device="cuda")
        dim = int(self._engine.get_tensor_shape(self._output_name)[-1])
        self._device_out = torch.empty((self._max_rows, dim), dtype=torch.float32, device="cuda")
        self._host_in = torch.empty(self._device_in.shape, dtype=torch_dtype, pin_memory=True)
        self._host_out = torch.empty(self._device_out.shape, dtype=torch.float32, pin_memory=True)

    @property
    def precision(self) -> str:
        return self._precision

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        rows = len(batch)
        if rows > self._max_rows:
            raise ValueError(f"batch of {rows} exceeds the engine's largest profile ({self._max_rows})")
        host_in = self._host_in.view(-1)[: batch.size].view(batch.shape)
        host_in.numpy()[...] = batch
        device_in = self._device_in.view(-1)[: batch.size].view(batch.shape)
        profile = next((i for i, (low, high) in enumerate(self._profiles)
                        if all(lo <= d <= hi for lo, d, hi in zip(low, batch.shape, high))), None)
        if profile is None:
            raise ValueError(f"input shape {list(batch.shape)} is outside every profile of the engine {self._profiles}")
        with torch.cuda.stream(self._stream):
            if profile != self._profile:
                self._context.set_optimization_profile_async(profile, self._stream.cuda_stream)
                self._profile = profile
            device_in.copy_(host_in, non_blocking=True)
            self._context.set_input_shape(self._input_name, tuple(batch.shape))
            self._context.set_tensor_address(self._input_name, device_in.data_ptr())
            self._context.set_tensor_address(self._output_name, self._device_out.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            self._host_out[:rows].copy_(self._device_out[:rows], non_blocking=True)
        self._stream.synchronize()
        return self._host_out[:rows].numpy().copy()

    __call__ = run

    def warm_up(self, batches: Iterable[np.ndarray]) -> None:
        for batch in batches:
            self.run(batch)


def engine_summary(plan: str | Path) -> dict[str, Any]:
    """The key an engine was built for (read from beside it, without TensorRT)."""
    return json.loads((Path(plan).parent / "key.json").read_text())
