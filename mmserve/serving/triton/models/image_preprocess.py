"""Triton model `image_preprocess`: encoded image bytes -> uint8 pixels `[S, S, 3]`.

All images of all requests in the dynamic batch are decoded together on the
C++ thread pool. An image that fails (corrupt, truncated, unsupported, over a
limit) fails only its own request, with its index there and a code
(`mmserve.errors`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import triton_python_backend_utils as pb_utils

from mmserve.models.clip import ClipModelInfo
from mmserve.modalities.image import ImageLimits, ImagePreprocessor
from mmserve.serving.triton.models import ModelArgs, invalid_input


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        model = ModelArgs(args)
        info = ClipModelInfo.from_dir(model.version_dir / "clip")
        limits = ImageLimits(
            max_encoded_bytes=model.int_parameter("max_image_bytes"),
            max_pixels=model.int_parameter("max_image_pixels"),
        )
        self.preprocessor = ImagePreprocessor(
            info, exact=model.parameter("exact") == "true", limits=limits, threads=model.int_parameter("threads", 0)
        )
        self.shape = (info.image_size, info.image_size, 3)

    def execute(self, requests):
        images: list[bytes] = []
        spans = []
        for request in requests:
            items = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
            spans.append((len(images), len(images) + len(items)))
            # Only bytes: a str would be read as a file path by the preprocessor.
            images.extend(item if isinstance(item, bytes) else b"" for item in items)
        pixels, errors = self.preprocessor.preprocess_lenient(images, np.empty((len(images), *self.shape), np.uint8))
        responses = []
        for start, end in spans:
            failed = [dataclasses.replace(e, index=e.index - start) for e in errors if start <= e.index < end]
            if failed:
                responses.append(invalid_input(pb_utils, failed))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("pixels", pixels[start:end])]))
        return responses
