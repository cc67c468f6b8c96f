"""Triton models `image_tower` and `text_tower`: an exported tower on a CPU runtime.

The tensors of all requests in the dynamic batch run as one batch. The text
tower cuts the batch after its longest end-of-text position, rounded up to one
of a few lengths (the `length_buckets` parameter, so the runtime sees few
shapes): the tower is causal and pools at end-of-text, so the embeddings are
identical and a batch of short queries costs a fraction of 77 positions.
Warm-up runs every shape class before the model reports ready.
"""

from __future__ import annotations

import bisect

import numpy as np
import triton_python_backend_utils as pb_utils

from mmserve.errors import ErrorCode, ItemError
from mmserve.runtimes import load_tower
from mmserve.serving.triton.models import ModelArgs, invalid_input


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        model = ModelArgs(args)
        self.kind = model.parameter("tower")
        self.input_name = model.config["input"][0]["name"]
        self.tower = load_tower(
            model.version_dir / model.parameter("onnx_file"),
            model.parameter("runtime"),
            model.int_parameter("threads", 0) or None,
            model.parameter("precision"),
        )
        self.max_batch_size = model.max_batch_size
        if self.kind == "text":
            self.context_length = model.int_parameter("context_length")
            self.eos_token_id = model.int_parameter("eos_token_id")
            self.vocab_size = model.int_parameter("vocab_size")
            self.buckets = [int(b) for b in model.parameter("length_buckets").split(",")]
        else:
            self.pixel_shape = tuple(int(d) for d in model.config["input"][0]["dims"])
        self._warm_up()

    def execute(self, requests):
        responses: list = [None] * len(requests)
        accepted: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        for index, request in enumerate(requests):
            values = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            lengths = None
            if self.kind == "text":
                tensor = pb_utils.get_input_tensor_by_name(request, "lengths")
                lengths = None if tensor is None else tensor.as_numpy().reshape(-1)
                problem = self._check_tokens(values, lengths)
                if problem:
                    responses[index] = invalid_input(pb_utils, problem)
                    continue
            accepted.append((index, values, lengths))
        if accepted:
            run = self._run_text if self.kind == "text" else self._run_image
            embeddings = run([values for _, values, _ in accepted], [lengths for _, _, lengths in accepted])
            offset = 0
            for index, values, _ in accepted:
                rows = embeddings[offset : offset + len(values)]
                offset += len(values)
                responses[index] = pb_utils.InferenceResponse([pb_utils.Tensor("embedding", rows)])
        return responses

    def _run_image(self, arrays: list[np.ndarray], _lengths) -> np.ndarray:
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        return self.tower(np.ascontiguousarray(batch))

    def _run_text(self, arrays: list[np.ndarray], lengths: list[np.ndarray | None]) -> np.ndarray:
        ends = [self._row_ends(ids, n) for ids, n in zip(arrays, lengths)]
        needed = max(int(e.max()) for e in ends)
        width = self.buckets[bisect.bisect_left(self.buckets, needed)]
        batch = np.zeros((sum(len(a) for a in arrays), width), dtype=np.int32)
        row = 0
        for ids in arrays:
            keep = min(width, ids.shape[1])
            batch[row : row + len(ids), :keep] = ids[:, :keep]
            row += len(ids)
        return self.tower(batch)

    def _row_ends(self, ids: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        """Positions needed per row: through end-of-text, or the whole row if it has none."""
        if lengths is not None:
            return lengths
        is_eos = ids == self.eos_token_id
        return np.where(is_eos.any(axis=1), np.argmax(is_eos, axis=1) + 1, ids.shape[1])

    def _check_tokens(self, ids: np.ndarray, lengths: np.ndarray | None) -> list[ItemError]:
        """The rows (or, index None, the request) that the tower cannot take."""
        if ids.shape[1] == 0 or ids.shape[1] > self.context_length:
            return [ItemError(None, ErrorCode.INVALID_TOKENS,
                              f"token_ids has {ids.shape[1]} positions; this model takes 1 to {self.context_length}")]
        if lengths is not None and len(lengths) != len(ids):
            return [ItemError(None, ErrorCode.INVALID_TOKENS,
                              f"lengths has {len(lengths)} values for {len(ids)} rows of token_ids")]
        errors = []
        bad = (ids < 0) | (ids >= self.vocab_size)
        for row in np.flatnonzero(bad.any(axis=1)):
            values = ids[row][bad[row]]
            errors.append(ItemError(int(row), ErrorCode.INVALID_TOKENS,
                                    f"token ids must be in [0, {self.vocab_size}); got {values[0]}"))
        if lengths is not None:
            for row in np.flatnonzero((lengths < 1) | (lengths > ids.shape[1])):
                errors.append(ItemError(int(row), ErrorCode.INVALID_TOKENS,
                                        f"length {lengths[row]} is outside [1, {ids.shape[1]}]"))
        return sorted(errors, key=lambda e: e.index)

    def _warm_up(self) -> None:
        """Every length at batch 1, and the largest batch at the longest length (the largest buffers)."""
        if self.kind == "text":
            for batch_size, widths in ((1, self.buckets), (self.max_batch_size, self.buckets[-1:])):
                for width in widths:
                    ids = np.zeros((batch_size, width), dtype=np.int32)
                    ids[:, width - 1] = self.eos_token_id
                    self.tower(ids)
        else:
            for batch_size in sorted({1, self.max_batch_size}):
                self.tower(np.zeros((batch_size, *self.pixel_shape), dtype=np.uint8))
