"""In-process embedding: preprocessing, tokenization and both towers on this CPU.

`LocalEmbedder` is what the CLI and the demo use before (and besides) a Triton
server: the same exported towers, the same preprocessing and tokenizer, called
in the client process. It never imports torch: the towers must have been
exported first (`mmserve export`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmserve.models.export import IMAGE_TOWER_FILE, TEXT_TOWER_FILE, is_current
from mmserve.models.clip import ClipModelInfo
from mmserve.modalities.image import ImageLimits, ImagePreprocessor
from mmserve.runtimes import load_tower
from mmserve.config import Settings
from mmserve.modalities.text import ClipTokenizer, trim_padding


class LocalEmbedder:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.info = ClipModelInfo.from_dir(self.settings.model_dir)
        onnx_dir = self.settings.export_dir()
        if not is_current(self.settings.model_dir, onnx_dir):
            raise FileNotFoundError(
                f"no ONNX export of {self.settings.model_dir} in {onnx_dir}: run `mmserve export` first"
            )
        self.tokenizer = ClipTokenizer.from_model_dir(self.settings.model_dir)
        s = self.settings
        limits = ImageLimits(max_encoded_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)
        self.preprocess = ImagePreprocessor(self.info, exact=s.exact_preprocessing, limits=limits)
        self.image_tower = load_tower(onnx_dir / IMAGE_TOWER_FILE, s.runtime, s.threads, s.precision)
        self.text_tower = load_tower(onnx_dir / TEXT_TOWER_FILE, s.runtime, s.threads, s.precision)

    @property
    def dim(self) -> int:
        return self.info.embedding_dim

    def embed_images(self, images: Sequence[bytes | str | Path], *, progress: bool = False) -> np.ndarray:
        """Encoded images (bytes or file paths) to L2-normalised float32 `[N, D]`."""
        del progress  # in-process batches are quick; the signature matches mmserve.Client
        return self._batched(images, lambda chunk: self.image_tower(self.preprocess(chunk)))

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed uint8 `[N, H, W, 3]` batches to embeddings."""
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != self.pixel_shape:
            raise ValueError(f"expected uint8 [N, {', '.join(map(str, self.pixel_shape))}], got "
                             f"{pixels.dtype} {list(pixels.shape)}")
        return self._batched(pixels, lambda chunk: self.image_tower(np.ascontiguousarray(chunk)))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings to L2-normalised float32 `[N, D]`."""
        def run(chunk: Sequence[str]) -> np.ndarray:
            ids = trim_padding(self.tokenizer(list(chunk)), self.info.eos_token_id)
            return self.text_tower(ids)

        return self._batched(texts, run)

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        return (self.info.image_size, self.info.image_size, 3)

    def _batched(self, items, run) -> np.ndarray:
        if len(items) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        size = self.settings.batch_size
        parts = [run(items[i : i + size]) for i in range(0, len(items), size)]
        return np.concatenate(parts).astype(np.float32, copy=False)
