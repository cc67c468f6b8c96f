"""Triton Python-backend models (loaded by `tritonserver` through each model's `model.py`).

Each follows python_backend's add_sub example: everything is loaded in
`initialize`, `execute` answers one response per request, and a bad request
gets an error on its own response while the rest of the batch is served.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from mmserve.errors import ItemError, to_wire
from mmserve.modalities import Modality, Rows, take


class ModelArgs:
    """What Triton passes to `initialize`: the parsed config and where the model's files are."""

    def __init__(self, args: dict[str, str]) -> None:
        self.config = json.loads(args["model_config"])
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        self.instance_name = args.get("model_instance_name", "")

    def parameter(self, key: str, default: str | None = None) -> str:
        entry = self.config.get("parameters", {}).get(key)
        if entry is None:
            if default is None:
                raise KeyError(f"model config has no parameter {key!r}")
            return default
        return entry["string_value"]

    def int_parameter(self, key: str, default: int | None = None) -> int:
        return int(self.parameter(key, None if default is None else str(default)))

    @property
    def max_batch_size(self) -> int:
        return int(self.config["max_batch_size"])


AUDIO_INFO_DIR = "audio"  # an audio model's feature config (and tokenizer files), beside its tower


def load_modality(model: ModelArgs) -> Modality:
    """The modality a model's `modality` parameter names, set up from its parameters and model files."""
    kind = model.parameter("modality")
    clip_dir = model.version_dir / "clip"
    if kind == "image":
        from mmserve.modalities.image import ImageLimits, ImageModality, ImagePreprocessor
        from mmserve.models.info import ModelInfo

        limits = ImageLimits(max_encoded_bytes=model.int_parameter("max_image_bytes"),
                             max_pixels=model.int_parameter("max_image_pixels"))
        preprocessor = ImagePreprocessor(ModelInfo.from_dir(clip_dir), exact=model.parameter("exact") == "true",
                                         limits=limits, threads=model.int_parameter("decode_threads", 0))
        return ImageModality(preprocessor)
    if kind == "text":
        from mmserve.modalities.text import TextModality

        return TextModality.from_model_dir(clip_dir, model.int_parameter("max_text_bytes", 64 << 10))
    if kind == "video":
        from mmserve.modalities.video import VideoDecoder, VideoLimits, VideoModality, VideoSampling
        from mmserve.models.info import ModelInfo

        threshold = model.parameter("scene_threshold", "")
        sampling = VideoSampling(frames_per_second=float(model.parameter("video_frames_per_second")),
                                 max_frames=model.int_parameter("video_max_frames"),
                                 scene_threshold=float(threshold) if threshold else None)
        video_limits = VideoLimits(max_encoded_bytes=model.int_parameter("max_video_bytes"),
                                   max_seconds=float(model.parameter("max_video_seconds")),
                                   max_pixels=model.int_parameter("max_video_pixels"),
                                   max_decoded_frames=model.int_parameter("max_video_frames"))
        return VideoModality(VideoDecoder(ModelInfo.from_dir(clip_dir), sampling=sampling, limits=video_limits,
                                          threads=model.int_parameter("decode_threads", 0) or 2))
    if kind == "audio":
        from mmserve.modalities.audio import AudioFeatureConfig, AudioLimits, AudioModality

        audio_limits = AudioLimits(max_encoded_bytes=model.int_parameter("max_audio_bytes"),
                                   max_seconds=float(model.parameter("max_audio_seconds")))
        return AudioModality(AudioFeatureConfig.from_preprocessor_config(model.version_dir / AUDIO_INFO_DIR),
                             limits=audio_limits, threads=model.int_parameter("decode_threads", 0))
    if kind == "audio_text":
        from mmserve.modalities.text import audio_text_modality
        from mmserve.models.audio_info import AudioModelInfo

        return audio_text_modality(AudioModelInfo.from_dir(model.version_dir / AUDIO_INFO_DIR),
                                   model.int_parameter("max_text_bytes", 64 << 10))
    raise ValueError(f"unknown modality {kind!r}")


def load_modality_and_tower(model: ModelArgs, warm_up_batch: int | None = None):
    """The model's modality and its tower (the runtime, threads and precision of its parameters), warmed up on
    every shape class up to `warm_up_batch` (default: the model's max_batch_size) before Triton calls it ready."""
    from mmserve.runtimes import load_tower

    modality = load_modality(model)
    tower = load_tower(model.version_dir / model.parameter("onnx_file"), model.parameter("runtime"),
                       model.int_parameter("threads", 0) or None, model.parameter("precision"))
    tower.warm_up(modality.warm_up_batches(warm_up_batch or model.max_batch_size))
    return modality, tower


def invalid_input(pb_utils, errors: list[ItemError]):
    """A per-request error that clients see as INVALID_ARGUMENT (gRPC) / 400 (HTTP), its message the
    JSON list of refused items (`mmserve.errors.to_wire`)."""
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(to_wire(errors), pb_utils.TritonError.INVALID_ARG))


def decode_requests(pb_utils, modality: Modality, requests: Sequence) -> Iterator[tuple[Rows, list[ItemError]]]:
    """Per request with the modality's encoded input, in order: its rows, or its refused items (indices in that
    request). Every item of every request is decoded in one call."""
    items: list[bytes] = []
    spans = []
    for request in requests:
        values = pb_utils.get_input_tensor_by_name(request, modality.encoded_input).as_numpy().reshape(-1)
        spans.append((len(items), len(items) + len(values)))
        items.extend(values)
    rows, errors = modality.decode(items)
    for start, end in spans:
        failed = [dataclasses.replace(e, index=e.index - start) for e in errors
                  if e.index is not None and start <= e.index < end]
        yield ({} if failed else take(rows, start, end)), failed
