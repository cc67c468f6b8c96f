"""Triton models `embed_video` and `embed_audio`: a segmented modality and its tower in one process.

A request carries encoded items (`video` or `audio`, BYTES, one per row).
Every item of the dynamic batch is decoded together (a thread pool), each
into its segments (a video's sampled frames, a sound's windows); the segments
of every accepted request run through the tower in batches of at most
`tower_batch_size`, and each item gets

    embedding            [D]      the mean of its segment vectors, renormalised
    segment_embeddings   [S, D]   each segment's vector (rows past segment_count are zeros)
    segment_times        [S, 2]   each segment's start and end, seconds
    segment_count        [1]      how many segments the item has

where S is the largest segment count in that request. A request with a
refused item gets an error that names it while the rest of the batch is
served (the same wire format as `embed_image`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import triton_python_backend_utils as pb_utils

from mmserve.errors import ErrorCode, ItemError
from mmserve.modalities import pool_segments
from mmserve.serving.triton.models import ModelArgs, invalid_input, load_modality_and_tower


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        model = ModelArgs(args)
        self.tower_batch_size = model.int_parameter("tower_batch_size", 32)
        self.modality, self.tower = load_modality_and_tower(model, self.tower_batch_size)

    def execute(self, requests):
        modality = self.modality
        responses: list = [None] * len(requests)
        items: list[bytes] = []
        spans: dict[int, tuple[int, int]] = {}  # request -> its items' [start, end) in `items`
        for index, request in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(request, modality.encoded_input)
            if tensor is None:
                responses[index] = invalid_input(pb_utils, [ItemError(None, ErrorCode.INVALID, (
                    f"send {modality.encoded_input!r} (encoded files, BYTES)"))])
                continue
            values = tensor.as_numpy().reshape(-1)
            spans[index] = (len(items), len(items) + len(values))
            items.extend(values)
        rows, errors = modality.decode(items)
        accepted = np.zeros(len(items), dtype=bool)
        for index, (start, end) in spans.items():
            failed = [dataclasses.replace(e, index=e.index - start) for e in errors
                      if e.index is not None and start <= e.index < end]
            if failed:
                responses[index] = invalid_input(pb_utils, failed)
            else:
                accepted[start:end] = True
        keep = accepted[rows["item"]]
        segments = self._embed(modality.batch([{name: array[keep] for name, array in rows.items()}]))
        owners, times = rows["item"][keep], rows["times"][keep]
        for index, (start, end) in spans.items():
            if responses[index] is None:
                mine = (owners >= start) & (owners < end)
                responses[index] = self._response(segments[mine], owners[mine] - start, times[mine], end - start)
        return responses

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        size = self.tower_batch_size
        parts = [self.tower.run(np.ascontiguousarray(batch[start : start + size]))
                 for start in range(0, len(batch), size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def _response(self, segments: np.ndarray, owners: np.ndarray, times: np.ndarray, count: int):
        counts = np.bincount(owners, minlength=count)
        width = int(counts.max())
        dim = segments.shape[1]
        padded = np.zeros((count, width, dim), dtype=np.float32)
        padded_times = np.zeros((count, width, 2), dtype=np.float32)
        slot = np.arange(len(owners)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[owners]
        padded[owners, slot] = segments
        padded_times[owners, slot] = times
        return pb_utils.InferenceResponse([
            pb_utils.Tensor("embedding", pool_segments(segments, owners, count)),
            pb_utils.Tensor("segment_embeddings", padded),
            pb_utils.Tensor("segment_times", padded_times),
            pb_utils.Tensor("segment_count", counts.astype(np.int32).reshape(count, 1)),
        ])
