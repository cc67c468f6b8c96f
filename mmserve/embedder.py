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
from mmserve.index.records import MAIN_SPACE
from mmserve.modalities import MediaInput, Modality, SegmentedEmbedding, encode_file, pool_segments
from mmserve.modalities.image import ImageInput, ImageLimits, ImageModality, ImagePreprocessor, encode_image
from mmserve.modalities.text import TextModality, check_texts, load_tokenizer
from mmserve.modalities.video import VideoDecoder, VideoLimits, VideoModality, VideoSampling
from mmserve.models.export import IMAGE_TOWER_FILE, TEXT_TOWER_FILE, export_scoring, is_current
from mmserve.models.info import ModelInfo, Scoring
from mmserve.runtimes import TowerRuntime, load_tower


@runtime_checkable
class Embedder(Protocol):
    def embed_texts(self, texts: Sequence[str], *, modality: str | None = None, progress: bool = False) -> np.ndarray:
        """L2-normalised float32 `[N, D]`, one row per text (`modality`: queries for items of that modality,
        through the text tower of its space; embedders of one space may ignore it)."""

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
        self._videos: VideoModality | None = None
        self._audio_towers: LocalAudio | None = None

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

    def embed_texts(self, texts: Sequence[str], *, modality: str | None = None, progress: bool = False) -> np.ndarray:
        """Strings to L2-normalised float32 `[N, D]` (`modality`: as `mmserve.Client.embed_texts`)."""
        del progress
        check_texts(texts)
        if modality is not None and self.space_of(modality) != MAIN_SPACE:
            audio = self._audio()
            return self._embed(audio.texts, audio.text_tower, texts, lambda chunk, _: (audio.texts.tokenize(chunk), []))
        return self._embed(self.texts, self.text_tower, texts, lambda chunk, _: (self.texts.tokenize(chunk), []))

    def embed_videos(self, videos: Sequence[MediaInput], *, progress: bool = False) -> list[SegmentedEmbedding]:
        """Per video (a path or bytes): its vector, and each sampled moment's with its times."""
        del progress
        if self._videos is None:
            s = self.settings
            sampling = VideoSampling(s.video_frames_per_second, s.video_max_frames, s.video_scene_threshold)
            limits = VideoLimits(s.max_video_bytes, s.max_video_seconds, s.max_video_pixels,
                                 max_decoded_frames=s.max_video_frames)
            self._videos = VideoModality(VideoDecoder(self.info, sampling=sampling, limits=limits))
        return self._embed_segmented(self._videos, self.image_tower, videos)

    def embed_audio(self, sounds: Sequence[MediaInput], *, progress: bool = False) -> list[SegmentedEmbedding]:
        """Per sound (a path or bytes): its vector, and each window's with its times."""
        del progress
        audio = self._audio()
        return self._embed_segmented(audio.modality, audio.tower, sounds)

    def space_of(self, modality: str) -> str:
        """The embedding space of items of `modality` ("main", or the audio model's own)."""
        if modality == "audio" and self.settings.audio_dir() is not None:
            return self._audio().space
        return MAIN_SPACE

    def _audio(self) -> LocalAudio:
        if self._audio_towers is None:
            self._audio_towers = LocalAudio(self.settings)
        return self._audio_towers

    def _embed_segmented(self, modality: Modality, tower: TowerRuntime, items: Sequence[MediaInput]
                         ) -> list[SegmentedEmbedding]:
        """Per item, its segments through the tower (at most `settings.batch_size` rows per call) and pooled."""
        encoded = [encode_file(item, index, modality.kind) for index, item in enumerate(items)]
        results = []
        for start in range(0, len(encoded), 8):
            rows, errors = modality.decode(encoded[start : start + 8])
            if errors:
                shifted = [dataclasses.replace(e, index=None if e.index is None else e.index + start) for e in errors]
                raise InvalidInputError.for_items(modality.kind, shifted, items)
            batch = modality.batch([rows])
            size = self.settings.batch_size
            segments = np.concatenate([tower.run(batch[i : i + size]) for i in range(0, len(batch), size)])
            pooled = pool_segments(segments, rows["item"], len(encoded[start : start + 8]))
            for item, vector in enumerate(pooled):
                mine = rows["item"] == item
                results.append(SegmentedEmbedding(vector, segments[mine], rows["times"][mine].astype(np.float32)))
        return results

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


class LocalAudio:
    """The audio model's towers in this process (exported first: `mmserve export` exports it too)."""

    def __init__(self, settings: Settings) -> None:
        from mmserve.modalities.audio import AudioLimits, AudioModality
        from mmserve.modalities.text import audio_text_modality
        from mmserve.models.audio_info import AUDIO_TEXT_TOWER_FILE, AUDIO_TOWER_FILE, AudioModelInfo, audio_is_current

        audio_dir = settings.audio_dir()
        if audio_dir is None:
            raise FileNotFoundError("no audio model: the model directory has no audio/ and audio_model_dir is unset")
        export = settings.audio_export_dir(audio_dir)
        if not audio_is_current(audio_dir, export):
            raise FileNotFoundError(f"no ONNX export of {audio_dir} in {export}: run `mmserve export` first")
        self.info = AudioModelInfo.from_dir(audio_dir)
        self.space = self.info.space
        self.modality = AudioModality(self.info.features, limits=AudioLimits(
            max_encoded_bytes=settings.max_audio_bytes, max_seconds=settings.max_audio_seconds))
        self.tower = load_tower(export / AUDIO_TOWER_FILE, settings.runtime, settings.threads, settings.precision)
        if self.info.has_text_tower:
            self.texts = audio_text_modality(self.info, settings.max_text_bytes)
            self.text_tower = load_tower(export / AUDIO_TEXT_TOWER_FILE, settings.runtime, settings.threads,
                                         settings.precision)
