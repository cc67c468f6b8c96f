"""CLIP BPE tokenizer: open_clip's `SimpleTokenizer` pipeline, without torch.

Reproduces the reference: html unescape (twice), whitespace collapse,
`str.lower`, the CLIP split pattern, byte-to-unicode, rank-ordered BPE with
`</w>`, start/end tokens, zero padding, and truncation that keeps the
end-of-text token. `ftfy.fix_text` is not applied (see README, Limitations).

The vocabulary and the context length come from the model directory
(`ClipModelInfo`), so a model with another context length tokenizes to it.
"""

from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path

import numpy as np
import regex

from mmserve.model import BpeVocabulary, ClipModelInfo, bytes_to_unicode, load_vocabulary

# open_clip's own spellings of its special tokens, matched literally in the text.
_OPEN_CLIP_SPECIALS = ("<start_of_text>", "<end_of_text>")
_PATTERN = regex.compile(
    "|".join(_OPEN_CLIP_SPECIALS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def clean_text(text: str) -> str:
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()


class ClipTokenizer:
    def __init__(
        self, vocabulary: BpeVocabulary, context_length: int, start_token_id: int, eos_token_id: int
    ) -> None:
        if context_length < 2:
            raise ValueError(f"context length must be at least 2, got {context_length}")
        self.context_length = context_length
        self.start_token_id = start_token_id
        self.eos_token_id = eos_token_id
        self._encoder = vocabulary.encoder
        self._ranks = {pair: i for i, pair in enumerate(vocabulary.merges)}
        self._byte_encoder = bytes_to_unicode()
        self._special_ids = dict(zip(_OPEN_CLIP_SPECIALS, (start_token_id, eos_token_id)))
        self._bpe = lru_cache(maxsize=65536)(self._bpe_uncached)

    @classmethod
    def from_model_dir(cls, path: str | Path) -> ClipTokenizer:
        info = ClipModelInfo.from_dir(path)
        return cls(load_vocabulary(path), info.context_length, info.start_token_id, info.eos_token_id)

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text`, without start/end tokens or padding."""
        ids: list[int] = []
        for piece in _PATTERN.findall(clean_text(text)):
            special = self._special_ids.get(piece)
            if special is not None:
                ids.append(special)
                continue
            mapped = "".join(self._byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self._encoder[t] for t in self._bpe(mapped))
        return ids

    def __call__(self, texts: list[str] | str, context_length: int | None = None) -> np.ndarray:
        """int32 `[N, context_length]`: start, ids, end, zero padding."""
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        out = np.zeros((len(texts), length), dtype=np.int32)
        for row, text in enumerate(texts):
            ids = [self.start_token_id, *self.encode(text), self.eos_token_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eos_token_id
            out[row, : len(ids)] = ids
        return out

    def _bpe_uncached(self, token: str) -> tuple[str, ...]:
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self._ranks.get(p, float("inf")))
            if best not in self._ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word


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
