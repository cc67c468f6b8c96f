"""Tokenizers other than CLIP's BPE, on well-kept libraries (no new C++: at SigLIP's 64 positions the text
tower, not the tokenizer, limits throughput; `bench/bench_tokenizer.py` measures both).

- `SentencePieceTokenizer`: SigLIP's `spiece.model` through `sentencepiece`, exactly as transformers'
  `SiglipTokenizer` tokenizes: special-token literals split out, big_vision's canonicalisation (lower case,
  ASCII punctuation removed, whitespace collapsed), `</s>` appended, padding with `</s>` to the context length.
- `JsonTokenizer`: a `tokenizer.json` (SigLIP 2's Gemma tokenizer) through Hugging Face `tokenizers`, with
  the directory's `tokenizer_config.json` (padding side, lower casing for `Siglip2Tokenizer`), padded to the
  context length as the model was trained ("max_length").

Both return what `ClipTokenizer.tokenize` does: int32 ids `[N, context_length]` and each row's token count
(padding excluded). For open_clip's SigLIP checkpoints both first clean the text as open_clip does
(`open_clip_canonicalize`).
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmserve.models.info import ModelInfo, read_json
from mmserve.models.siglip import SENTENCEPIECE_FILE, TOKENIZER_JSON, token_name

SPIECE_UNDERLINE = "\u2581"
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_WHITESPACE = re.compile(r"\s+")


def open_clip_canonicalize(text: str) -> str:
    """open_clip's "canonicalize" cleaning (its SigLIP entries): ftfy, HTML unescaped twice, "_" to a space,
    ASCII punctuation removed, lower case, whitespace collapsed."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip().replace("_", " ")
    return " ".join(text.translate(_PUNCTUATION).lower().split())


CLEANERS: dict[str, Callable[[str], str]] = {"open_clip-canonicalize": open_clip_canonicalize}


def _cleaner(info: ModelInfo) -> Callable[[str], str] | None:
    if info.text_clean and info.text_clean not in CLEANERS:
        raise ValueError(f"unknown text cleaning {info.text_clean!r}")
    return CLEANERS.get(info.text_clean)


class SentencePieceTokenizer:
    def __init__(self, model_file: str | Path, context_length: int, eos_token_id: int, pad_token_id: int, *,
                 special_tokens: dict[str, int], unk_token: str = "<unk>", lowercase: bool = True,
                 clean: Callable[[str], str] | None = None) -> None:
        import sentencepiece

        if context_length < 1:
            raise ValueError(f"context length must be at least 1, got {context_length}")
        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        self.context_length = context_length
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.lowercase = lowercase
        self.clean = clean
        self._unk = unk_token
        self._unk_length = len(self._sp.encode(unk_token, out_type=str))
        self._specials = special_tokens
        self._underline = self._sp.piece_to_id(SPIECE_UNDERLINE)
        # Longest first, so a special that contains another wins (as transformers' trie splits).
        names = sorted(special_tokens, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None

    @classmethod
    def from_model_dir(cls, info: ModelInfo) -> SentencePieceTokenizer:
        from mmserve.models.siglip import token_ids

        config = {**read_json(info.path / "special_tokens_map.json"), **read_json(info.path / "tokenizer_config.json")}
        names = {token_name(config.get(key), default) for key, default in
                 (("eos_token", "</s>"), ("unk_token", "<unk>"), ("pad_token", "</s>"))}
        names |= {token_name(entry, "") for entry in config.get("additional_special_tokens") or []} - {""}
        specials = dict(zip(sorted(names), token_ids(info.path, "sentencepiece", sorted(names))))
        return cls(info.path / SENTENCEPIECE_FILE, info.context_length, info.eos_token_id, info.pad_token_id,
                   special_tokens=specials, unk_token=token_name(config.get("unk_token"), "<unk>"),
                   lowercase=bool(config.get("do_lower_case", True)), clean=_cleaner(info))

    def canonicalize(self, text: str) -> str:
        """big_vision's text canonicalisation, as transformers applies it."""
        if self.lowercase:
            text = text.lower()
        return _WHITESPACE.sub(" ", text.translate(_PUNCTUATION)).strip()

    def encode(self, text: str) -> list[int]:
        """Ids of `text` without the end-of-text token or padding."""
        if self.clean is not None:
            text = self.clean(text)
        text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        parts = self._split.split(text) if self._split else [text]
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                if i == 1 and ids == [self._underline]:
                    ids.clear()  # a lone leading "▁" before a special token is dropped
                ids.append(self._specials[part])
                continue
            # A special token takes the whitespace on both of its sides.
            segment = part.lstrip() if i > 0 else part
            canonical = self.canonicalize(segment.rstrip() if i < len(parts) - 1 else segment)
            if canonical:
                ids += self._sp.encode(self._unk + canonical)[self._unk_length:]
        return ids

    def tokenize(self, texts: list[str] | str, context_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        batch = np.full((len(texts), length), self.pad_token_id, dtype=np.int32)
        counts = np.zeros(len(texts), dtype=np.int32)
        for row, text in enumerate(texts):
            ids = self.encode(text)[: length - 1]
            if not ids or ids[-1] != self.eos_token_id:
                ids.append(self.eos_token_id)
            batch[row, : len(ids)] = ids
            counts[row] = len(ids)
        return batch, counts

    def __call__(self, texts: list[str] | str, context_length: int | None = None) -> np.ndarray:
        return self.tokenize(texts, context_length)[0]


class JsonTokenizer:
    def __init__(self, tokenizer_file: str | Path, context_length: int, pad_token_id: int, eos_token_id: int, *,
                 padding_side: str = "right", lowercase: bool = False,
                 clean: Callable[[str], str] | None = None) -> None:
        from tokenizers import Tokenizer, normalizers

        if padding_side not in ("left", "right"):
            raise ValueError(f"padding side must be left or right, got {padding_side!r}")
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        if lowercase:
            current = self._tokenizer.normalizer
            steps = [normalizers.Lowercase()] + ([current] if current is not None else [])
            self._tokenizer.normalizer = normalizers.Sequence(steps)
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.context_length = context_length
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.padding_side = padding_side
        self.clean = clean
        self._configured: int | None = None

    @classmethod
    def from_model_dir(cls, info: ModelInfo) -> JsonTokenizer:
        config = read_json(info.path / "tokenizer_config.json")
        return cls(info.path / TOKENIZER_JSON, info.context_length, info.pad_token_id, info.eos_token_id,
                   padding_side=config.get("padding_side", "right"),
                   lowercase=config.get("tokenizer_class") == "Siglip2Tokenizer" or bool(config.get("do_lower_case")),
                   clean=_cleaner(info))

    def _configure(self, length: int) -> None:
        if self._configured != length:
            self._tokenizer.enable_truncation(max_length=length)
            self._tokenizer.enable_padding(direction=self.padding_side, pad_id=self.pad_token_id, length=length)
            self._configured = length

    def tokenize(self, texts: list[str] | str, context_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            texts = [texts]
        self._configure(context_length or self.context_length)
        encodings = self._tokenizer.encode_batch([self.clean(t) for t in texts] if self.clean else list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int32).reshape(len(texts), -1)
        counts = np.array([sum(e.attention_mask) for e in encodings], dtype=np.int32)
        return ids, counts

    def __call__(self, texts: list[str] | str, context_length: int | None = None) -> np.ndarray:
        return self.tokenize(texts, context_length)[0]
