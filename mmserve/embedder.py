"""The `Embedder` protocol, and in-process embedding: preprocessing, tokenization and both towers on this CPU.

An `Embedder` turns texts and images into L2-normalised vectors of one shared
space (one that also has a `scoring` attribute, a `mmserve.models.Scoring`,
tells `Search` how its model forms zero-shot scores; CLIP's softmax otherwise); `mmserve.Client` (remote, through Triton) and `LocalEmbedder`
(in-process) are the two that exist, and search and folder indexing take
either.

`LocalEmbedder` is what the CLI and the demo use before (and besides) a Triton
server: the same exported towers, the same preprocessing and tokenizer, called
in the client process. It never imports torch: the towers must have been
exported first (`mmserve export`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from mmserve.config import Settings
from mmserve.errors import InvalidInputError
from mmserve.modalities import Modality
from mmserve.modalities.image import ImageInput, ImageLimits, ImageModality, ImagePreprocessor, encode_image
from mmserve.modalities.text import TextModality, check_texts, load_tokenizer
from mmserve.models.export import IMAGE_TOWER_FILE, TEXT_TOWER_FILE, export_scoring, is_current
from mmserve.models.info import ModelInfo, Scoring
from mmserve.runtimes import TowerRuntime, load_tower


@runtime_checkable
class Embedder(Protocol):
    def embed_texts(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """L2-normalised float32 `[N, D]`, one row per text."""

    def embed_images(self, images: Sequence[ImageInput], *, progress: bool = False) -> np.ndarray:
        """L2-normalised float32 `[N, D]` for paths, encoded bytes, PIL images or uint8 arrays."""


class LocalEmbedder:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = s = settings or Settings()
        self.info = ModelInfo.from_dir(s.model_dir)
        onnx_dir = s.export_dir()
        if not is_current(s.model_dir, onnx_dir):
            raise FileNotFoundError(f"no ONNX export of {s.model_dir} in {onnx_dir}: run `mmserve export` first")
        self._scoring = export_scoring(onnx_dir)
        self.tokenizer = load_tokenizer(self.info)
        limits = ImageLimits(max_encoded_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)
        self.images = ImageModality(ImagePreprocessor(self.info, exact=s.exact_preprocessing, limits=limits))
        self.texts = TextModality(self.tokenizer, self.info.vocab_size, s.max_text_bytes, trim=self.info.trims_padding)
        self.image_tower = load_tower(onnx_dir / IMAGE_TOWER_FILE, s.runtime, s.threads, s.precision)
        self.text_tower = load_tower(onnx_dir / TEXT_TOWER_FILE, s.runtime, s.threads, s.precision)

    @property
    def dim(self) -> int:
        return self.info.embedding_dim

    @property
    def scoring(self) -> Scoring:
        return self._scoring

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        return (self.info.image_size, self.info.image_size, 3)

    def embed_images(self, images: Sequence[ImageInput], *, progress: bool = False) -> np.ndarray:
        """Paths, encoded bytes, PIL images or uint8 arrays to L2-normalised float32 `[N, D]`."""
        del progress  # in-process batches are quick; the signature matches mmserve.Client

        def decode(chunk, start: int):  # files are read a batch at a time
            return self.images.decode([encode_image(image, start + i) for i, image in enumerate(chunk)])

        return self._embed(self.images, self.image_tower, images, decode)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed uint8 `[N, H, W, 3]` batches to embeddings."""
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != self.pixel_shape:
            raise ValueError(f"expected uint8 [N, {', '.join(map(str, self.pixel_shape))}], got "
                             f"{pixels.dtype} {list(pixels.shape)}")
        return self._embed(self.images, self.image_tower, pixels, lambda chunk, _: ({"pixels": chunk}, []))

    def embed_texts(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Strings to L2-normalised float32 `[N, D]`."""
        del progress
        check_texts(texts)
        return self._embed(self.texts, self.text_tower, texts, lambda chunk, _: (self.texts.tokenize(chunk), []))

    def _embed(self, modality: Modality, tower: TowerRuntime, items, decode) -> np.ndarray:
        """Batches of `settings.batch_size`: `decode(batch, its first index)`, then the tower; the first batch
        with a refused item raises."""
        size = self.settings.batch_size
        parts = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(items), size):
            rows, errors = decode(items[start : start + size], start)
            if errors:
                shifted = [dataclasses.replace(e, index=e.index + start) for e in errors]
                raise InvalidInputError.for_items(modality.kind, shifted, items)
            parts.append(tower.run(modality.batch([rows])))
        return np.concatenate(parts).astype(np.float32, copy=False)
