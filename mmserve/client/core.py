"""What the sync and async clients share: request planning, error classification, retries, the model summary.

Nothing here does I/O: a face (`Client`, `AsyncClient`) sends the planned
requests over its `Transport` and hands failures back to `classify` and
`retry_delay`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from mmserve import errors
from mmserve.client.options import DEFAULT_URL, ClientOptions
from mmserve.client.replicas import Replica, ReplicaSet
from mmserve.modalities import MediaInput, SegmentedEmbedding, encode_file
from mmserve.modalities.image import ImageInput, ImagePreprocessor, encode_image
from mmserve.modalities.text import encode_texts
from mmserve.models.info import Scoring

IMAGE_MODEL, TEXT_MODEL, IMAGE_TOWER, TEXT_TOWER = "embed_image", "embed_text", "image_tower", "text_tower"
VIDEO_MODEL, AUDIO_MODEL, AUDIO_TEXT_MODEL = "embed_video", "embed_audio", "embed_audio_text"
MODELS = (IMAGE_MODEL, TEXT_MODEL, "image_preprocess", IMAGE_TOWER, "text_tokenize", TEXT_TOWER)
# Served where the repository has them (a server built before them, or without an audio model, has not).
OPTIONAL_MODELS = (VIDEO_MODEL, AUDIO_MODEL, AUDIO_TEXT_MODEL)
SEGMENT_OUTPUTS = ("embedding", "segment_embeddings", "segment_times", "segment_count")
# Which input carries which modality's items (how errors name them).
_KINDS = {"text": "text", "token_ids": "text", "video": "video", "audio": "audio"}


def segmented(result: tuple[np.ndarray, ...]) -> list[SegmentedEmbedding]:
    """One `embed_video` / `embed_audio` response -> one result per item."""
    pooled, segments, times, counts = result
    return [SegmentedEmbedding(pooled[i], segments[i, : int(counts[i, 0])], times[i, : int(counts[i, 0])])
            for i in range(len(pooled))]


class ModelSummary(BaseModel):
    """What the client learns from the server's model configs: the model's family, tokenizer, image
    geometry, pooling and score function, and each model's batch limit."""

    embedding_dim: int
    image_size: int
    resize_shortest_edge: int
    resample: str
    context_length: int
    max_batch_size: dict[str, int]
    family: str = "clip"
    checkpoint: str = "transformers"
    resize_mode: str = "crop"
    tokenizer: str = "clip-bpe"
    pooling: str = "eos"
    score_function: str = "softmax"
    logit_scale: float = 100.0
    logit_bias: float = 0.0
    # modality -> embedding space, for what this server embeds ("main": the image-text model's)
    spaces: dict[str, str] = {"image": "main", "text": "main"}
    audio_family: str | None = None  # "clap" or "bound" when the server embeds sounds
    audio_embedding_dim: int | None = None
    audio_logit_scale: float | None = None  # a CLAP model's own softmax scale

    @classmethod
    def from_configs(cls, configs: dict[str, dict]) -> ModelSummary:
        image, text = configs[IMAGE_MODEL], configs[TEXT_MODEL]
        pixels = next(spec for spec in configs[IMAGE_TOWER]["input"] if spec["name"] == "pixels")
        image_parameters, text_parameters = _parameters(image), _parameters(text)
        # A server built before other families names none of these: CLIP's defaults.
        described: dict[str, Any] = {key: text_parameters[key] for key in (
            "family", "tokenizer", "pooling", "score_function", "logit_scale", "logit_bias") if key in text_parameters}
        described |= {key: image_parameters[key] for key in ("resize_mode", "checkpoint") if key in image_parameters}
        spaces = {"image": "main", "text": "main"}
        if VIDEO_MODEL in configs:
            spaces["video"] = "main"
        if AUDIO_MODEL in configs:
            audio = _parameters(configs[AUDIO_MODEL])
            spaces["audio"] = audio.get("space", "main")
            described |= {"audio_family": audio.get("family"),
                          "audio_embedding_dim": int(configs[AUDIO_MODEL]["output"][0]["dims"][0])}
        if AUDIO_TEXT_MODEL in configs:
            described["audio_logit_scale"] = float(_parameters(configs[AUDIO_TEXT_MODEL])["logit_scale"])
        return cls(
            embedding_dim=int(image["output"][0]["dims"][0]),
            image_size=int(pixels["dims"][0]),
            resize_shortest_edge=int(image_parameters["resize_shortest_edge"]),
            resample=image_parameters["resample"],
            context_length=int(text_parameters["context_length"]),
            max_batch_size={name: int(config["max_batch_size"]) for name, config in configs.items()},
            spaces=spaces,
            **described,
        )

    def text_model_for(self, modality: str | None) -> str:
        """The model that embeds query texts for items of `modality`: embed_text, or a CLAP checkpoint's own
        text tower for sounds in its space."""
        if modality is None or self.spaces.get(modality, "main") == "main":
            return TEXT_MODEL
        if modality == "audio" and AUDIO_TEXT_MODEL in self.max_batch_size:
            return AUDIO_TEXT_MODEL
        raise errors.InvalidInputError(f"this server has no text tower for the {self.spaces[modality]!r} space "
                                       f"of its {modality}")

    def require(self, model: str, what: str) -> None:
        if model not in self.max_batch_size:
            hint = ("start the server with an audio model (the bundled one has it; --audio-model-dir for a CLAP "
                    "checkpoint)" if model == AUDIO_MODEL else "rebuild the repository with this mmserve")
            raise errors.ServerUnavailableError(f"the server does not embed {what} (no {model} model): {hint}")

    @property
    def scoring(self) -> Scoring:
        return Scoring(self.score_function, self.logit_scale, self.logit_bias)


def _parameters(config: dict) -> dict[str, str]:
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


class Health(BaseModel):
    live: bool  # with replicas: any of them
    ready: bool
    models: dict[str, bool]
    replicas: dict[str, bool] = {}  # URL -> ready, with more than one server


@dataclasses.dataclass(frozen=True)
class Request:
    """One inference request: a slice of the caller's items."""

    model: str
    input_name: str
    datatype: str
    array: np.ndarray
    offset: int  # of items[0] in the caller's list
    items: Sequence[object]

    @property
    def kind(self) -> str:
        return _KINDS.get(self.input_name, "image")


class Face:
    """What both faces of the SDK hold: the options, the request planner, the model summary once fetched."""

    def __init__(self, url: str | Sequence[str] = DEFAULT_URL, **options: Any) -> None:
        self.options = ClientOptions(url=url if isinstance(url, str) else ",".join(url), **options)
        self._planner = Planner(self.options)
        self._summary: ModelSummary | None = None
        self._replicas = ReplicaSet(self.options)

    def replica_status(self) -> dict[str, dict[str, float | int | bool]]:
        """Per server URL: requests sent and in flight from this client, and whether it is ejected now."""
        return self._replicas.status()


class Planner:
    """Turns a call's items into requests no larger than the server takes (items and bytes)."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self._preprocessor: ImagePreprocessor | None = None

    def texts(self, texts: Sequence[str], summary: ModelSummary, modality: str | None = None) -> list[Request]:
        texts = list(texts)
        model = summary.text_model_for(modality)
        return _split(model, "text", encode_texts(texts), texts, self._batch_size(model, summary),
                      self.options.max_request_bytes)

    def media(self, model: str, items: Sequence[MediaInput], summary: ModelSummary) -> list[Request]:
        """Videos (`embed_video`) or sounds (`embed_audio`): file paths or encoded bytes."""
        kind = "video" if model == VIDEO_MODEL else "audio"
        summary.require(model, "videos" if kind == "video" else "sounds")
        items = list(items)
        encoded = [encode_file(item, index, kind) for index, item in enumerate(items)]
        return _split(model, kind, encoded, items, self._batch_size(model, summary), self.options.max_request_bytes)

    def images(self, images: Sequence[ImageInput], preprocess: str | None, summary: ModelSummary) -> list[Request]:
        images = list(images)
        mode = preprocess or self.options.preprocess
        if mode == "local":
            return self.pixels(self._local_pixels(images, summary), summary, images)
        if mode != "server":
            raise ValueError(f"preprocess must be 'server' or 'local', got {mode!r}")
        encoded = [encode_image(image, index) for index, image in enumerate(images)]
        return _split(IMAGE_MODEL, "image", encoded, images, self._batch_size(IMAGE_MODEL, summary),
                      self.options.max_request_bytes)

    def pixels(self, pixels: np.ndarray, summary: ModelSummary, items: Sequence[object] | None = None
               ) -> list[Request]:
        shape = (summary.image_size, summary.image_size, 3)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != shape:
            raise errors.InvalidInputError(f"pixels must be uint8 [N, {', '.join(map(str, shape))}], got {pixels.dtype} "
                                    f"{list(pixels.shape)}")
        size = self._batch_size(IMAGE_TOWER, summary)
        return [Request(IMAGE_TOWER, "pixels", "UINT8", np.ascontiguousarray(pixels[s:e]), s,
                        items[s:e] if items is not None else range(s, e))
                for s, e in _chunks(len(pixels), size)]

    def _batch_size(self, model: str, summary: ModelSummary) -> int:
        server_max = summary.max_batch_size.get(model, 1)
        return min(self.options.batch_size or server_max, server_max)

    def _local_pixels(self, images: list[ImageInput], summary: ModelSummary) -> np.ndarray:
        from mmserve.modalities.image import ImageGeometry

        if self._preprocessor is None:
            geometry = ImageGeometry(summary.image_size, summary.resize_shortest_edge, summary.resample,
                                     summary.resize_mode)
            self._preprocessor = ImagePreprocessor(geometry, exact=self.options.exact_preprocessing)
        encoded = [encode_image(image, index) for index, image in enumerate(images)]
        pixels, refused = self._preprocessor.preprocess_lenient(encoded)
        if refused:
            raise errors.InvalidInputError.for_items("image", refused, images)
        return pixels


def _chunks(count: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, count, size):
        yield start, min(count, start + size)


def _split(model: str, input_name: str, encoded: list[bytes], items: Sequence[object], size: int,
           max_bytes: int) -> list[Request]:
    """BYTES requests of at most `size` items and `max_bytes` in all (an item larger than that goes alone)."""
    bounds, start, total = [], 0, 0
    for end, data in enumerate(encoded):
        if end > start and (end - start == size or total + len(data) > max_bytes):
            bounds.append((start, end))
            start, total = end, 0
        total += len(data)
    if start < len(encoded):
        bounds.append((start, len(encoded)))
    return [Request(model, input_name, "BYTES", np.array([[b] for b in encoded[s:e]], dtype=np.object_), s,
                    items[s:e]) for s, e in bounds]


# Messages of a server that is restarting a model: the request may succeed once it is back.
_RECOVERING = ("is not healthy", "unknown model", "is not ready", "unavailable")


def classify(error: Exception, request: Request | None) -> errors.MmserveError:
    """Map a tritonclient/transport error to the SDK's exception types (by status; per-item errors by code)."""
    from tritonclient.utils import InferenceServerException

    if isinstance(error, errors.MmserveError):
        return error
    if not isinstance(error, InferenceServerException):
        if isinstance(error, (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError)):
            if isinstance(error, TimeoutError) or "timed out" in str(error).lower():
                return errors.RequestTimeoutError(f"no answer within the timeout: {error}")
            return errors.ServerUnavailableError(f"server unreachable: {error}")
        return errors.MmserveError(f"{type(error).__name__}: {error}")
    status, message = str(error.status() or ""), error.message() or str(error)
    lowered = message.lower()
    if "UNAUTHENTICATED" in status or status in ("401", "403"):
        return errors.AuthenticationError(message)
    if "queue size" in message or status == "429":
        return errors.OverloadedError(message)
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message or "timed out" in message:
        return errors.RequestTimeoutError(message)
    if status == "413" or ("RESOURCE_EXHAUSTED" in status and "too large" in lowered):
        return errors.InvalidInputError(f"{message} (a smaller batch_size or max_request_bytes helps)")
    if "RESOURCE_EXHAUSTED" in status:
        return errors.OverloadedError(message)
    if ("UNAVAILABLE" in status or status in ("503", "502", "504") or "failed to connect" in lowered
            or any(marker in lowered for marker in _RECOVERING)):
        return errors.ServerUnavailableError(f"server unavailable: {message}")
    if "INVALID_ARGUMENT" in status or status == "400":
        return _refused(message, request)
    return errors.MmserveError(message)


def _refused(message: str, request: Request | None) -> errors.InvalidInputError:
    items = errors.from_wire(message)
    if not items or request is None or any(e.index is not None and e.index >= len(request.items) for e in items):
        return errors.InvalidInputError(message)
    # Indices in the request -> indices in the caller's list.
    shifted = [e if e.index is None else dataclasses.replace(e, index=request.offset + e.index) for e in items]
    local = items[0].index
    first = {} if local is None else {request.offset + local: request.items[local]}
    return errors.InvalidInputError.for_items(request.kind, shifted, first)


def retry_delay(options: ClientOptions, raw: Exception, request: Request | None, attempt: int) -> float:
    """Seconds to wait before retrying after `raw`; raises its classified error when it is not worth a retry."""
    error = classify(raw, request)
    if not isinstance(error, (errors.ServerUnavailableError, errors.OverloadedError)) or attempt >= options.retries:
        raise error from raw
    return options.backoff_s * (2**attempt) * (0.5 + random.random())


def failover_delay(options: ClientOptions, replicas: ReplicaSet, replica: Replica, raw: Exception,
                   request: Request | None, attempt: int) -> float:
    """After `raw` failed on `replica`: seconds to wait before the next attempt (0: at once, on another
    replica, which the caller then avoids this one for); raises the classified error when it is not worth
    a retry. An "unavailable" replica is ejected (with more than one)."""
    if len(replicas) > 1 and isinstance(classify(raw, request), errors.ServerUnavailableError):
        replicas.eject(replica)
        if attempt < options.retries and replicas.has_alternative(replica):
            return 0.0
    return retry_delay(options, raw, request, attempt)


def embeddings(results: list, dim: int) -> np.ndarray:
    if not results:
        return np.zeros((0, dim), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(results), dtype=np.float32)


def progress_bar(requests: list[Request], enabled: bool):
    from tqdm import tqdm

    return tqdm(total=sum(len(r.array) for r in requests), disable=not enabled, unit="item", dynamic_ncols=True,
                leave=False)


def combined_health(replicas: ReplicaSet, states: list[Health]) -> Health:
    """One server's health, or with replicas: live and ready when any is, the models of a ready one."""
    if len(states) == 1:
        return states[0]
    ready = [state for state in states if state.ready]
    return Health(live=any(state.live for state in states), ready=bool(ready),
                  models=(ready or states)[0].models,
                  replicas={replica.url: state.ready for replica, state in zip(replicas.replicas, states)})


def ready_or_absent(call) -> bool:
    """An optional model's readiness: False when the server does not know it (older servers answer an
    unknown model with an error)."""
    from tritonclient.utils import InferenceServerException

    try:
        return bool(call())
    except InferenceServerException:
        return False


def health_or_down(error: Exception) -> Health:
    """A health check that failed: "not live" when the server is unreachable, else the error."""
    classified = classify(error, None)
    if not isinstance(classified, errors.ServerUnavailableError):
        raise classified from error
    return Health(live=False, ready=False, models={})


Preprocess = Literal["server", "local"]
