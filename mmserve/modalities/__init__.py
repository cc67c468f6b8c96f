"""One module per modality: how its items are checked, decoded and turned into a tower's input batch, with an
error per item that fails (`image`: JPEG/PNG bytes -> uint8 pixels; `text`: UTF-8 -> token ids; `video`:
MP4/WebM -> one frame per segment, for the image tower; `audio`: WAV/FLAC/OGG/MP3 -> log-mel windows).

Every modality offers the same `Modality` interface, which the Triton model
that hosts a tower (`mmserve.serving.triton.models.encoder`) and the
in-process `LocalEmbedder` drive without knowing which modality they serve.
Items travel as a `Rows` dict: arrays that share their first dimension, one
row per item (`{"pixels": [N, S, S, 3]}`, `{"token_ids": [N, L], "lengths":
[N]}`).

Video and audio are segmented: one item gives several tower rows (a video's
sampled frames, a sound's windows). Their `decode` returns rows per segment
with two more arrays, `item` (the item each segment belongs to) and `times`
(its [start, end] seconds); the item's vector is the mean of its segments',
renormalised (`pool_segments`: CLIP4Clip's meanP for video, the mean over
every window for sound).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from mmserve.errors import ErrorCode, InvalidInputError, ItemError

Rows = dict[str, np.ndarray]
MediaInput = str | Path | bytes  # a video or a sound: a file path or the file's bytes


class Modality(Protocol):
    kind: str  # "image", "text": how errors name an item
    encoded_input: str  # the wire input that carries encoded items, BYTES, one per row ("image", "text")
    tensor_inputs: tuple[str, ...]  # what a caller may send instead, ready for the tower; the first is required

    def decode(self, items: Sequence[bytes]) -> tuple[Rows, list[ItemError]]:
        """Encoded items (all of a batch at once, in parallel where it helps) -> rows, and those refused (their
        rows are placeholders)."""

    def accept(self, tensors: Mapping[str, np.ndarray]) -> tuple[Rows, list[ItemError]]:
        """One request's tensor inputs, checked: the rows, or the errors (an index None faults the request)."""

    def batch(self, parts: Sequence[Rows]) -> np.ndarray:
        """The tower's input for these rows, in order."""

    def warm_up_batches(self, max_batch_size: int) -> list[np.ndarray]:
        """Tower inputs covering the shapes the tower will see (so none compiles on a live request)."""


def count(rows: Rows) -> int:
    return len(next(iter(rows.values())))


def take(rows: Rows, start: int, end: int) -> Rows:
    return {name: array[start:end] for name, array in rows.items()}


@dataclasses.dataclass(frozen=True)
class SegmentedEmbedding:
    """A video's or a sound's vectors: the whole (the mean of its segments', renormalised) and each segment's
    (a video's sampled moments, a sound's windows) with its start and end in seconds."""

    embedding: np.ndarray  # float32 [D]
    segments: np.ndarray  # float32 [S, D]
    times: np.ndarray  # float32 [S, 2]


SEGMENTED = ("video", "audio")


def encode_file(item: MediaInput, index: int, kind: str) -> bytes:
    """The bytes to send for one video or sound (a path is read); `InvalidInputError` naming it otherwise."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, (str, Path)):
        try:
            return Path(item).read_bytes()
        except OSError as error:
            refusal = ItemError(index, ErrorCode.UNREADABLE, f"cannot read {item}: {error.strerror}")
    else:
        refusal = ItemError(index, ErrorCode.WRONG_TYPE, f"expected a path or bytes, got {type(item).__name__}")
    raise InvalidInputError.for_items(kind, [refusal], {index: item})


def pool_segments(embeddings: np.ndarray, item: np.ndarray, count: int) -> np.ndarray:
    """Each item's vector: the mean of its segments' `embeddings` (rows owned per `item`), L2-normalised."""
    pooled = np.zeros((count, embeddings.shape[1]), dtype=np.float64)
    np.add.at(pooled, item, embeddings.astype(np.float64))
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.where(norms == 0, 1.0, norms)).astype(np.float32)
