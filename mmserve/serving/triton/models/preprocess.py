"""Triton models `image_preprocess` and `text_tokenize`: a modality's decoding alone, for clients that want the
tower's input themselves (`embed_image` and `embed_text` decode in their own process).

    image_preprocess   encoded JPEG/PNG bytes -> uint8 pixels [S, S, 3]
    text_tokenize      UTF-8 bytes -> CLIP token ids [context length] (zero padded) and lengths [1]

All items of all requests in the dynamic batch are decoded together (the C++
thread pool); an item that fails fails only its own request, with its index
there and a code (`mmserve.errors`).
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from mmserve.serving.triton.models import ModelArgs, decode_requests, invalid_input, load_modality


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        model = ModelArgs(args)
        self.modality = load_modality(model)
        self.outputs = [output["name"] for output in model.config["output"]]

    def execute(self, requests):
        responses = []
        for rows, errors in decode_requests(pb_utils, self.modality, requests):
            if errors:
                responses.append(invalid_input(pb_utils, errors))
                continue
            tensors = [np.ascontiguousarray(rows[name].reshape(-1, 1) if rows[name].ndim == 1 else rows[name])
                       for name in self.outputs]
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, tensor) for name, tensor in zip(self.outputs, tensors)]))
        return responses
