"""CLIP BPE tokenizer: open_clip's `SimpleTokenizer` pipeline, in C++ (`csrc/tokenizer/`).

Reproduces the reference: html unescape (twice), whitespace collapse,
`str.lower` (with its final-sigma rule), the CLIP split pattern as the `regex`
module applies it, byte-to-unicode, rank-ordered BPE with `</w>`, start/end
tokens, zero padding, and truncation that keeps the end-of-text token. Batches
run on a thread pool with the GIL released.

`ftfy.fix_text`, which the reference applies first, is not reproduced: text
that ftfy would change (mojibake, ligatures such as "ǅ", odd quotes) can
tokenize differently. `strict=True` applies ftfy first when it is installed.

The vocabulary and the context length come from the model directory
(`ClipModelInfo`), so a model with another context length tokenizes to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mmserve import _C
from mmserve.errors import ErrorCode, InvalidInputError, ItemError
from mmserve.models.clip import BpeVocabulary, ClipModelInfo, load_vocabulary


class ClipTokenizer:
    def __init__(
        self,
        vocabulary: BpeVocabulary,
        context_length: int,
        start_token_id: int,
        eos_token_id: int,
        *,
        strict: bool = False,
        threads: int = 0,
    ) -> None:
        if context_length < 2:
            raise ValueError(f"context length must be at least 2, got {context_length}")
        self.context_length = context_length
        self.start_token_id = start_token_id
        self.eos_token_id = eos_token_id
        self.threads = threads
        self._fix_text = _ftfy_fix_text() if strict else None
        self._core = _C.ClipTokenizer(vocabulary.encoder, vocabulary.merges, start_token_id, eos_token_id)

    @classmethod
    def from_model_dir(cls, path: str | Path, **options) -> ClipTokenizer:
        info = ClipModelInfo.from_dir(path)
        return cls(load_vocabulary(path), info.context_length, info.start_token_id, info.eos_token_id, **options)

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text`, without start/end tokens or padding."""
        return list(self._core.encode(self._prepare(text)))

    def tokenize(self, texts: list[str] | str, context_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """int32 ids `[N, L]` and each row's length up to and including end-of-text."""
        if isinstance(texts, str):
            texts = [texts]
        prepared = [self._prepare(t) for t in texts]
        return self._core.encode_batch(prepared, context_length or self.context_length, self.threads)

    def __call__(self, texts: list[str] | str, context_length: int | None = None) -> np.ndarray:
        """int32 `[N, context_length]`: start, ids, end, zero padding."""
        return self.tokenize(texts, context_length)[0]

    def _prepare(self, text: str) -> str:
        return self._fix_text(text) if self._fix_text is not None else text


def _ftfy_fix_text():
    try:
        import ftfy
    except ImportError as error:
        raise ImportError("strict=True needs ftfy installed (pip install ftfy)") from error
    return ftfy.fix_text


def trim_padding(token_ids: np.ndarray, eos_token_id: int) -> np.ndarray:
    """Cut columns after the last end-of-text token of the batch.

    The text tower is causal and pools at the end-of-text position, so the
    result is identical and short queries cost a fraction of a full pass.
    """
    is_eos = token_ids == eos_token_id
    if not is_eos.any(axis=1).all():
        raise ValueError("every row needs an end-of-text token")
    last = int((token_ids.shape[1] - 1 - np.argmax(is_eos[:, ::-1], axis=1)).max())
    return np.ascontiguousarray(token_ids[:, : last + 1])


def decode_utf8(items: Iterable[bytes | str], max_bytes: int) -> tuple[list[str], list[ItemError]]:
    """Texts from the wire's UTF-8 bytes ("" in the place of each refused one) and the refused ones."""
    texts: list[str] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        text = ""
        if len(item) > max_bytes:
            errors.append(ItemError(index, ErrorCode.TOO_LARGE,
                                    f"{len(item)} bytes exceeds the limit of {max_bytes} bytes"))
        elif isinstance(item, bytes):
            try:
                text = item.decode("utf-8")
            except UnicodeDecodeError as error:
                errors.append(ItemError(index, ErrorCode.INVALID_UTF8,
                                        f"invalid UTF-8 at byte {error.start} ({error.reason})"))
        else:
            text = str(item)
        texts.append(text)
    return texts, errors


def check_texts(texts: Sequence[object]) -> None:
    """`InvalidInputError` naming every item that is not a str."""
    errors = [ItemError(i, ErrorCode.WRONG_TYPE, f"expected str, got {type(t).__name__}")
              for i, t in enumerate(texts) if not isinstance(t, str)]
    if errors:
        raise InvalidInputError.for_items("text", errors, texts)


def encode_texts(texts: Sequence[str]) -> list[bytes]:
    """The wire's UTF-8 bytes of each text (after `check_texts`)."""
    check_texts(texts)
    return [t.encode("utf-8") for t in texts]
