"""The towers on a CUDA GPU through PyTorch (`runtime="cuda"`): for GPU hosts without TensorRT.

The ONNX file names the tower; its export's `manifest.json` names the model directory, whose PyTorch towers
(`mmserve.models.towers`, the very modules the ONNX was traced from) run on the GPU under autocast in fp16 or
bf16 (or f32). Shapes seen in `warm_up` are captured as CUDA graphs: a batch of one of those shapes replays its
graph (one launch instead of hundreds); any other shape runs eagerly. Imports torch: GPU hosts only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mmserve.runtimes import InputSpec, RuntimeUnavailableError

CUDA_PRECISIONS = ("auto", "fp16", "bf16", "f32")


class CudaTower:
    name = "cuda"
    max_batch_size: int | None = None

    def __init__(self, onnx_path: str | Path, threads: int | None = None, precision: str = "auto") -> None:
        del threads
        import torch

        from mmserve.models.export import IMAGE_TOWER_FILE, MANIFEST_FILE
        from mmserve.models.info import ModelInfo
        from mmserve.models.towers import load_model, towers_for
        from mmserve.runtimes.tensorrt import GpuInfo

        if precision not in CUDA_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(CUDA_PRECISIONS)}; got {precision!r}")
        try:
            GpuInfo.current()
        except RuntimeUnavailableError as error:
            raise RuntimeUnavailableError(str(error).replace("tensorrt runtime", "cuda runtime")) from None
        onnx_path = Path(onnx_path)
        manifest = json.loads((onnx_path.parent / MANIFEST_FILE).read_text())
        info = ModelInfo.from_dir(manifest["model_dir"])
        image_tower, text_tower = towers_for(load_model(info), info)
        image = onnx_path.name == IMAGE_TOWER_FILE
        self._module = (image_tower if image else text_tower).cuda().eval()
        self._torch = torch
        self._dtype = {"auto": torch.float16, "fp16": torch.float16, "bf16": torch.bfloat16, "f32": None}[precision]
        self._precision = "fp16" if precision == "auto" else precision
        self.input = (InputSpec("images", np.uint8, (info.image_size, info.image_size, 3)) if image
                      else InputSpec("token_ids", np.int32, (-1,)))
        self._graphs: dict[tuple[int, ...], tuple[object, object, object]] = {}

    @property
    def precision(self) -> str:
        return self._precision

    def _forward(self, batch):
        torch = self._torch
        with torch.inference_mode(), torch.autocast("cuda", dtype=self._dtype or torch.float32,
                                                    enabled=self._dtype is not None):
            return self._module(batch).float()

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        graph = self._graphs.get(tuple(batch.shape))
        if graph is None:
            out = self._forward(torch.from_numpy(np.ascontiguousarray(batch)).cuda(non_blocking=True))
            return out.cpu().numpy()
        cuda_graph, static_in, static_out = graph
        static_in.copy_(torch.from_numpy(np.ascontiguousarray(batch)), non_blocking=True)  # type: ignore[attr-defined]
        cuda_graph.replay()  # type: ignore[attr-defined]
        return static_out.cpu().numpy()  # type: ignore[attr-defined]

    __call__ = run

    def warm_up(self, batches: Iterable[np.ndarray]) -> None:
        """Capture a CUDA graph per shape (after eager runs on a side stream, as capture requires)."""
        torch = self._torch
        for batch in batches:
            shape = tuple(batch.shape)
            if shape in self._graphs:
                continue
            static_in = torch.from_numpy(np.ascontiguousarray(batch)).cuda()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            self._graphs[shape] = (graph, static_in, static_out)
