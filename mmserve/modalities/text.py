"""Text for a text tower: the tokenizer of the model's family, and the `TextModality` that serves it.

CLIP's BPE (`ClipTokenizer`) is open_clip's `SimpleTokenizer` pipeline, in C++
(`csrc/tokenizer/`): html unescape (twice), whitespace collapse, `str.lower`
(with its final-sigma rule), the CLIP split pattern as the `regex` module
applies it, byte-to-unicode, rank-ordered BPE with `</w>`, start/end tokens,
zero padding, and truncation that keeps the end-of-text token. Batches run on
a thread pool with the GIL released.

`ftfy.fix_text`, which the reference applies first, runs first here too (by
default; `fix_text=False` skips it): it uncurls the quotes phone keyboards
type ("don’t"), splits ligatures ("ﬁ"), narrows fullwidth forms, composes
combining marks (NFC), repairs mojibake and drops control characters. Texts
it provably leaves alone (printable ASCII, tabs and newlines, no `&`) skip it:
the fast path costs a regular-expression match.

SigLIP's and SigLIP 2's tokenizers are in `mmserve.modalities.tokenizers`;
`load_tokenizer` picks the model's. The vocabulary and the context length
come from the model directory (`ModelInfo`).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from mmserve import _C
from mmserve.errors import ErrorCode, InvalidInputError, ItemError
from mmserve.modalities import Rows
from mmserve.models.clip import BpeVocabulary, default_model_dir, load_vocabulary
from mmserve.models.info import ModelInfo


class TextTokenizer(Protocol):
    context_length: int
    eos_token_id: int
    pad_token_id: int

    def tokenize(self, texts: list[str] | str, context_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """int32 ids `[N, L]` (padded as the model was trained) and each row's token count."""

    def __call__(self, texts: list[str] | str, context_length: int | None = None) -> np.ndarray:
        """The ids alone."""


def load_tokenizer(info: ModelInfo, **options) -> TextTokenizer:
    """The tokenizer of `info`'s family (`options`: ClipTokenizer's, for CLIP BPE)."""
    from mmserve.modalities import tokenizers

    if info.tokenizer == "sentencepiece":
        return tokenizers.SentencePieceTokenizer.from_model_dir(info)
    if info.tokenizer == "tokenizers":
        return tokenizers.JsonTokenizer.from_model_dir(info)
    return ClipTokenizer.from_model_dir(info.path, **options)


class ClipTokenizer:
    pad_token_id = 0

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
        """A CLIP directory's tokenizer (an open_clip checkpoint without vocabulary files: CLIP's, bundled)."""
        info = ModelInfo.from_dir(path)
        if info.tokenizer != "clip-bpe" or info.start_token_id is None:
            raise ValueError(f"{path} is a {info.family} model: its tokenizer is {info.tokenizer}, not CLIP's BPE")
        try:
            vocabulary = load_vocabulary(path)
        except FileNotFoundError:
            if info.checkpoint != "open_clip":
                raise
            vocabulary = load_vocabulary(default_model_dir())
        return cls(vocabulary, info.context_length, info.start_token_id, info.eos_token_id, **options)

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


# CLAP's text tower reads at most this many tokens: LAION-CLAP trained it on captions tokenized with
# max_length 77 (RoBERTa's 512 positions are never used in training).
CLAP_CONTEXT_LENGTH = 77


def audio_text_modality(info, max_text_bytes: int = 64 << 10) -> TextModality:
    """Texts for a CLAP checkpoint's own text tower (`info`: its `AudioModelInfo`): its `tokenizer.json`
    (RoBERTa's byte-level BPE with <s> ... </s>), padded with its pad id, trimmed per batch (the tower
    masks padding, so the length a batch is cut to does not change a vector)."""
    from tokenizers import Tokenizer

    from mmserve.modalities.tokenizers import JsonTokenizer

    eos = Tokenizer.from_file(str(info.tokenizer_file)).token_to_id("</s>")
    tokenizer = JsonTokenizer(info.tokenizer_file, min(info.context_length, CLAP_CONTEXT_LENGTH), info.pad_token_id,
                              2 if eos is None else eos)
    return TextModality(tokenizer, info.vocab_size, max_text_bytes, trim=True)


def length_buckets(context_length: int, step: int = 4) -> list[int]:
    """Sequence lengths the text tower runs at: 8, 12, 16, ... (every `step`) and the context length.

    Fine steps matter: captions of 17 tokens run at 20 positions, not 32 (measured on ViT-B/32: 83 texts/s at
    32 positions, 166 at 16); OpenVINO handles the few dozen shapes without recompiling.
    """
    return [*range(8, context_length, step), context_length]


class TextModality:
    """Texts for a text tower: UTF-8 -> token ids and lengths (the `Modality` interface).

    For a causal tower that pools at end-of-text (CLIP), a batch is cut after
    its longest end-of-text position, rounded up to one of `length_buckets` (so
    the runtime sees few shapes): the embeddings are identical and a batch of
    short queries costs a fraction of the full context. A tower that pools a
    fixed position (SigLIP) always gets the whole context, padded as its
    tokenizer pads (`trim=False`).
    """

    kind, encoded_input = "text", "text"
    tensor_inputs: tuple[str, ...] = ("token_ids", "lengths")

    def __init__(self, tokenizer: TextTokenizer, vocab_size: int, max_text_bytes: int = 64 << 10, *,
                 trim: bool = True) -> None:
        self.tokenizer = tokenizer
        self.context_length = tokenizer.context_length
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id
        self.vocab_size = vocab_size
        self.max_text_bytes = max_text_bytes
        self.trim = trim
        self.buckets = length_buckets(self.context_length) if trim else [self.context_length]

    @classmethod
    def from_model_dir(cls, path: str | Path, max_text_bytes: int = 64 << 10) -> TextModality:
        info = ModelInfo.from_dir(path)
        return cls(load_tokenizer(info), info.vocab_size, max_text_bytes, trim=info.trims_padding)

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
        if not self.trim and ids.shape[1] != self.context_length:
            return [ItemError(None, ErrorCode.INVALID_TOKENS,
                              f"token_ids has {ids.shape[1]} positions; this model pools a fixed position and takes "
                              f"exactly {self.context_length}, padded as its tokenizer pads")]
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
        batch = np.full((sum(len(part["token_ids"]) for part in parts), width), self.pad_token_id, dtype=np.int32)
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
