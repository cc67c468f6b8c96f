"""CLIP BPE tokenizer: open_clip's `SimpleTokenizer` pipeline, in C++ (`csrc/tokenizer/`).

Reproduces the reference: html unescape (twice), whitespace collapse,
`str.lower` (with its final-sigma rule), the CLIP split pattern as the `regex`
module applies it, byte-to-unicode, rank-ordered BPE with `</w>`, start/end
tokens, zero padding, and truncation that keeps the end-of-text token. Batches
run on a thread pool with the GIL released.

`ftfy.fix_text`, which the reference applies first, runs first here too (by
default; `fix_text=False` skips it): it uncurls the quotes phone keyboards
type ("don’t"), splits ligatures ("ﬁ"), narrows fullwidth forms, composes
combining marks (NFC), repairs mojibake and drops control characters. Texts
it provably leaves alone (printable ASCII, tabs and newlines, no `&`) skip it:
the fast path costs a regular-expression match.

The vocabulary and the context length come from the model directory
(`ClipModelInfo`), so a model with another context length tokenizes to it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from mmserve import _C
from mmserve.errors import ErrorCode, InvalidInputError, ItemError
from mmserve.modalities import Rows
from mmserve.models.clip import BpeVocabulary, ClipModelInfo, load_vocabulary


class ClipTokenizer:
    def __init__(
        self,
        vocabulary: BpeVocabulary,
        context_length: int,
        start_token_id: int,
        eos_token_id: int,
        *,
        fix_text: bool = True,
        threads: int = 0,
    ) -> None:
        if context_length < 2:
            raise ValueError(f"context length must be at least 2, got {context_length}")
        self.context_length = context_length
        self.start_token_id = start_token_id
        self.eos_token_id = eos_token_id
        self.threads = threads
        self._fix_text = _ftfy_fix_text() if fix_text else None
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
        if self._fix_text is None or _UNCHANGED_BY_FTFY.fullmatch(text):
            return text
        return self._fix_text(text)


# What ftfy.fix_text returns unchanged: printable ASCII plus tab and newline, without "&" (HTML entities). Every
# ftfy fix needs a character outside this set: non-ASCII (mojibake, quotes, ligatures, width, NFC), "\x1b"
# (terminal escapes), "\r" (line breaks), other control characters, "&" (entities). Tested with hypothesis.
_UNCHANGED_BY_FTFY = re.compile(r"[\t\n\x20-\x25\x27-\x7e]*")


def _ftfy_fix_text():
    try:
        import ftfy
    except ImportError as error:
        raise ImportError("CLIP text needs ftfy (pip install ftfy), or fix_text=False") from error
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


def length_buckets(context_length: int, step: int = 4) -> list[int]:
    """Sequence lengths the text tower runs at: 8, 12, 16, ... (every `step`) and the context length.

    Fine steps matter: captions of 17 tokens run at 20 positions, not 32 (measured on ViT-B/32: 83 texts/s at
    32 positions, 166 at 16); OpenVINO handles the few dozen shapes without recompiling.
    """
    return [*range(8, context_length, step), context_length]


class TextModality:
    """Texts for a CLIP text tower: UTF-8 -> token ids and lengths (the `Modality` interface).

    A batch is cut after its longest end-of-text position, rounded up to one of
    `length_buckets` (so the runtime sees few shapes): the tower is causal and
    pools at end-of-text, so the embeddings are identical and a batch of short
    queries costs a fraction of the full context.
    """

    kind, encoded_input = "text", "text"
    tensor_inputs: tuple[str, ...] = ("token_ids", "lengths")

    def __init__(self, tokenizer: ClipTokenizer, vocab_size: int, max_text_bytes: int = 64 << 10) -> None:
        self.tokenizer = tokenizer
        self.context_length = tokenizer.context_length
        self.eos_token_id = tokenizer.eos_token_id
        self.vocab_size = vocab_size
        self.max_text_bytes = max_text_bytes
        self.buckets = length_buckets(self.context_length)

    @classmethod
    def from_model_dir(cls, path: str | Path, max_text_bytes: int = 64 << 10) -> TextModality:
        return cls(ClipTokenizer.from_model_dir(path), ClipModelInfo.from_dir(path).vocab_size, max_text_bytes)

    def decode(self, items: Sequence[bytes]) -> tuple[Rows, list[ItemError]]:
        texts, errors = decode_utf8(items, self.max_text_bytes)
        return self.tokenize(texts), errors

    def tokenize(self, texts: Sequence[str]) -> Rows:
        ids, lengths = self.tokenizer.tokenize(list(texts))
        return {"token_ids": ids, "lengths": lengths.astype(np.int32, copy=False)}

    def accept(self, tensors: Mapping[str, np.ndarray]) -> tuple[Rows, list[ItemError]]:
        ids = tensors["token_ids"]
        lengths = tensors.get("lengths")
        lengths = None if lengths is None else lengths.reshape(-1)
        errors = self.check(ids, lengths)
        if errors:
            return {}, errors
        if lengths is None:  # through end-of-text, or the whole row if it has none
            is_eos = ids == self.eos_token_id
            lengths = np.where(is_eos.any(axis=1), np.argmax(is_eos, axis=1) + 1, ids.shape[1]).astype(np.int32)
        return {"token_ids": ids, "lengths": lengths}, []

    def check(self, ids: np.ndarray, lengths: np.ndarray | None) -> list[ItemError]:
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
            errors.append(ItemError(int(row), ErrorCode.INVALID_TOKENS,
                                    f"token ids must be in [0, {self.vocab_size}); got {ids[row][bad[row]][0]}"))
        if lengths is not None:
            for row in np.flatnonzero((lengths < 1) | (lengths > ids.shape[1])):
                errors.append(ItemError(int(row), ErrorCode.INVALID_TOKENS,
                                        f"length {lengths[row]} is outside [1, {ids.shape[1]}]"))
        return sorted(errors, key=lambda e: -1 if e.index is None else e.index)

    def batch(self, parts: Sequence[Rows]) -> np.ndarray:
        needed = max(int(part["lengths"].max()) for part in parts)
        width = self.buckets[bisect.bisect_left(self.buckets, needed)]
        batch = np.zeros((sum(len(part["token_ids"]) for part in parts), width), dtype=np.int32)
        row = 0
        for part in parts:
            ids = part["token_ids"]
            keep = min(width, ids.shape[1])
            batch[row : row + len(ids), :keep] = ids[:, :keep]
            row += len(ids)
        return batch

    def warm_up_batches(self, max_batch_size: int) -> list[np.ndarray]:
        """Every length at batch 1, and the largest batch at the longest length (the largest buffers)."""
        batches = []
        for batch_size, widths in ((1, self.buckets), (max_batch_size, self.buckets[-1:])):
            for width in widths:
                ids = np.zeros((batch_size, width), dtype=np.int32)
                ids[:, width - 1] = self.eos_token_id
                batches.append(ids)
        return batches
