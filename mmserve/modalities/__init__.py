"""One module per modality: how its items are checked, decoded and turned into a tower's input batch, with an
error per item that fails (`image`: JPEG/PNG bytes -> uint8 pixels; `text`: UTF-8 -> CLIP token ids).

Every modality offers the same `Modality` interface, which the Triton model
that hosts a tower (`mmserve.serving.triton.models.encoder`) and the
in-process `LocalEmbedder` drive without knowing which modality they serve.
Items travel as a `Rows` dict: arrays that share their first dimension, one
row per item (`{"pixels": [N, S, S, 3]}`, `{"token_ids": [N, L], "lengths":
[N]}`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from mmserve.errors import ItemError

Rows = dict[str, np.ndarray]


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
