"""Triton models `embed_image` and `embed_text`: a modality and its tower in one process.

A request carries either encoded items (`image` / `text`, BYTES, one per row)
or tower-ready tensors (`pixels`; `token_ids` and optionally `lengths`: the
`image_tower` and `text_tower` ensembles send those). All encoded items of the
dynamic batch are decoded together (the C++ thread pool), the rows of every
accepted request run through the tower as one batch, and a request with a
refused item gets an error that names it (index, code, message) while the
rest of the batch is served. Warm-up runs every shape class before the model
reports ready.

One process for decoding and the tower saves a Python-backend hop per request
and lets decoding and the tower take turns on the cores instead of competing
for them (bench/bench_hops.py prices the hops).
"""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from mmserve.errors import ErrorCode, ItemError
from mmserve.modalities import Rows, count
from mmserve.serving.triton.models import ModelArgs, decode_requests, invalid_input, load_modality_and_tower


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.modality, self.tower = load_modality_and_tower(ModelArgs(args))

    def execute(self, requests):
        modality = self.modality
        responses: list = [None] * len(requests)
        parts: dict[int, Rows] = {}
        encoded: list[int] = []  # the requests that carry encoded items
        for index, request in enumerate(requests):
            has_encoded = pb_utils.get_input_tensor_by_name(request, modality.encoded_input) is not None
            tensors = {name: t.as_numpy() for name in modality.tensor_inputs
                       if (t := pb_utils.get_input_tensor_by_name(request, name)) is not None}
            if has_encoded == (modality.tensor_inputs[0] in tensors):
                responses[index] = invalid_input(pb_utils, [ItemError(None, ErrorCode.INVALID, (
                    f"send either {modality.encoded_input!r} or {modality.tensor_inputs[0]!r}, not both or neither"))])
            elif has_encoded:
                encoded.append(index)
            else:
                rows, errors = modality.accept(tensors)
                if errors:
                    responses[index] = invalid_input(pb_utils, errors)
                else:
                    parts[index] = rows
        if encoded:
            decoded = decode_requests(pb_utils, modality, [requests[index] for index in encoded])
            for index, (rows, errors) in zip(encoded, decoded):
                if errors:
                    responses[index] = invalid_input(pb_utils, errors)
                else:
                    parts[index] = rows
        if parts:
            order = sorted(parts)
            embeddings = self.tower.run(modality.batch([parts[index] for index in order]))
            offset = 0
            for index in order:
                size = count(parts[index])
                responses[index] = pb_utils.InferenceResponse(
                    [pb_utils.Tensor("embedding", embeddings[offset : offset + size])])
                offset += size
        return responses
