"""Triton model `text_tokenize`: UTF-8 bytes -> CLIP token ids `[context length]` and lengths.

Texts longer than the context are truncated (the end-of-text token is kept),
as CLIP does. Bytes that are not valid UTF-8, or a text over the
`max_text_bytes` parameter, fail their own request.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from mmserve.errors import ItemError
from mmserve.modalities.text import ClipTokenizer, decode_utf8
from mmserve.serving.triton.models import ModelArgs, invalid_input


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        model = ModelArgs(args)
        self.tokenizer = ClipTokenizer.from_model_dir(model.version_dir / "clip")
        self.max_text_bytes = model.int_parameter("max_text_bytes", 64 << 10)

    def execute(self, requests):
        texts: list[str] = []
        spans: list[tuple[int, int] | list[ItemError]] = []
        for request in requests:
            items = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            decoded, errors = decode_utf8(items, self.max_text_bytes)
            if errors:
                spans.append(errors)
                continue
            spans.append((len(texts), len(texts) + len(decoded)))
            texts.extend(decoded)
        ids, lengths = self.tokenizer.tokenize(texts) if texts else (None, None)
        responses = []
        for span in spans:
            if isinstance(span, list):
                responses.append(invalid_input(pb_utils, span))
                continue
            start, end = span
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("token_ids", ids[start:end]),
                pb_utils.Tensor("lengths", np.ascontiguousarray(lengths[start:end].reshape(-1, 1))),
            ]))
        return responses
