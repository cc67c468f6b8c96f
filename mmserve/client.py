"""Python client SDK for an mmserve Triton server (gRPC by default, HTTP by choice).

    with mmserve.Client("grpc://127.0.0.1:8001") as client:
        texts = client.embed_texts(["a red circle", "a small blue square"])   # float32 [2, D]
        images = client.embed_images(["photo.jpg", png_bytes, pil_image])      # float32 [3, D]

Inputs are split into requests of at most the server's batch size (and
`max_request_bytes`) and several requests are kept in flight, so Triton's
dynamic batcher sees enough work. Requests refused because the server is
unavailable, restarting a model, or its queue is full are retried with
exponential backoff; a bad input raises `InvalidInputError` naming the item.
`AsyncClient` offers the same API for asyncio.

A server started with API keys needs one (`api_key=`, or `MMSERVE_API_KEY`);
`grpcs://` and `https://` URLs use TLS and verify the server's certificate
(against the system's trust store, or `ca_cert=`); `client_cert=` and
`client_key=` answer a server that asks for client certificates.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmserve.errors import (
    AuthenticationError,
    ErrorCode,
    InvalidInputError,
    ItemError,
    MmserveError,
    OverloadedError,
    RequestTimeoutError,
    ServerUnavailableError,
    from_wire,
)

DEFAULT_URL = "grpc://127.0.0.1:8001"
IMAGE_MODEL, TEXT_MODEL, IMAGE_TOWER = "embed_image", "embed_text", "image_tower"
MODELS = ("embed_image", "embed_text", "image_preprocess", "image_tower", "text_tokenize", "text_tower")

ImageInput = Any  # str | Path | bytes | PIL.Image.Image | numpy uint8 [H, W, 3] or [H, W]


class ClientOptions(BaseModel):
    """How a client talks to the server; every field is a keyword of `Client(...)`."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(default=DEFAULT_URL, description="grpc://, grpcs:// (TLS), http:// or https:// + HOST:PORT.")
    api_key: str | None = Field(
        default_factory=lambda: os.environ.get("MMSERVE_API_KEY") or None,
        description="Sent as 'authorization: Bearer KEY' (default: MMSERVE_API_KEY).", repr=False)
    ca_cert: Path | None = Field(default=None, description="TLS: CA file to verify the server (default: system).")
    client_cert: Path | None = Field(default=None, description="TLS: this client's certificate (mutual TLS).")
    client_key: Path | None = Field(default=None, description="TLS: the key of client_cert.")
    timeout_s: float = Field(default=60.0, gt=0, description="Per request.")
    retries: int = Field(default=6, ge=0, description="Retries on unavailable or overloaded, with backoff.")
    backoff_s: float = Field(default=0.05, ge=0, description="First retry delay; doubles each retry (jittered).")
    max_in_flight: int = Field(default=4, ge=1, description="Concurrent requests per embed call.")
    batch_size: int | None = Field(default=None, ge=1, description="Items per request; default the server's max.")
    max_request_bytes: int = Field(
        default=32 << 20, ge=1, description="Encoded images per request add up to at most this (one larger image "
        "goes alone); below the server's body limit (80 MiB by default).")
    preprocess: Literal["server", "local"] = Field(
        default="server", description="'local': decode and resize in this process (C++), send uint8 pixels."
    )
    exact_preprocessing: bool = Field(default=False, description="Local preprocessing: bit-exact Pillow mode.")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        _split_url(url)
        return url

    @property
    def protocol(self) -> Literal["grpc", "http"]:
        return _split_url(self.url)[0]

    @property
    def tls(self) -> bool:
        return _split_url(self.url)[1]

    @property
    def address(self) -> str:
        return _split_url(self.url)[2]

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def connect(self, *, aio: bool = False, **extra: Any):
        """A tritonclient client for these options (gRPC or HTTP, blocking or asyncio, TLS as the URL says)."""
        import importlib

        if self.protocol == "grpc":
            module = importlib.import_module("tritonclient.grpc.aio" if aio else "tritonclient.grpc")
            tls = {}
            if self.tls:
                tls = {"ssl": True, "root_certificates": _path(self.ca_cert), "private_key": _path(self.client_key),
                       "certificate_chain": _path(self.client_cert)}
            return module.InferenceServerClient(self.address, **tls, **extra)
        if aio:
            module = importlib.import_module("tritonclient.http.aio")
            tls = {"ssl": True, "ssl_context": self._ssl_context()} if self.tls else {}
            return module.InferenceServerClient(self.address, conn_timeout=self.timeout_s, **tls, **extra)
        module = importlib.import_module("tritonclient.http")
        tls = {}
        if self.tls:
            ssl_options: dict[str, str] = {}
            if self.ca_cert is not None:
                ssl_options["ca_certs"] = str(self.ca_cert)
            if self.client_cert is not None:
                ssl_options.update(certfile=str(self.client_cert), keyfile=str(self.client_key or self.client_cert))
            tls = {"ssl": True, "ssl_options": ssl_options}
        return module.InferenceServerClient(
            self.address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s, **tls, **extra)

    def _ssl_context(self):
        import ssl

        context = ssl.create_default_context(cafile=_path(self.ca_cert))
        if self.client_cert is not None:
            context.load_cert_chain(str(self.client_cert), _path(self.client_key))
        return context


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


class ModelSummary(BaseModel):
    """What the client learns from the server's model configs."""

    embedding_dim: int
    image_size: int
    resize_shortest_edge: int
    resample: str
    context_length: int
    max_batch_size: dict[str, int]


class Health(BaseModel):
    live: bool
    ready: bool
    models: dict[str, bool]


def _split_url(url: str) -> tuple[Literal["grpc", "http"], bool, str]:
    """(protocol, TLS, HOST:PORT) of grpc://, grpcs://, http:// or https:// URLs (no scheme: gRPC)."""
    match = re.fullmatch(r"(?:(grpcs?|https?)://)?([^/]+?)/?", url)
    if match is None:
        raise ValueError(f"server URL must look like grpc://HOST:PORT or http://HOST:PORT (grpcs://, https:// "
                         f"for TLS), got {url!r}")
    scheme = match.group(1) or "grpc"
    return ("grpc" if scheme.startswith("grpc") else "http"), scheme.endswith("s"), match.group(2)  # type: ignore


@dataclasses.dataclass(frozen=True)
class _Request:
    """One inference request: a slice of the caller's items."""

    model: str
    input_name: str
    datatype: str
    array: np.ndarray
    offset: int
    items: Sequence[object]

    @property
    def kind(self) -> str:
        return "text" if self.input_name in ("text", "token_ids") else "image"


def _chunks(count: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, count, size):
        yield start, min(count, start + size)


def _text_requests(texts: Sequence[str], size: int, max_bytes: int) -> list[_Request]:
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise _refused("text", index, text, ErrorCode.WRONG_TYPE, f"expected str, got {type(text).__name__}")
    return _split_requests(TEXT_MODEL, "text", [t.encode("utf-8") for t in texts], texts, size, max_bytes)


def _image_requests(images: Sequence[ImageInput], size: int, max_bytes: int) -> list[_Request]:
    encoded = [encode_image(image, index) for index, image in enumerate(images)]
    return _split_requests(IMAGE_MODEL, "image", encoded, images, size, max_bytes)


def _split_requests(model: str, input_name: str, encoded: list[bytes], items: Sequence[object], size: int,
                    max_bytes: int) -> list[_Request]:
    """BYTES requests of at most `size` items and `max_bytes` in all (an item larger than that goes alone)."""
    requests, start, total = [], 0, 0
    for end, data in enumerate(encoded):
        if end > start and (end - start == size or total + len(data) > max_bytes):
            requests.append(_bytes_request(model, input_name, encoded, items, start, end))
            start, total = end, 0
        total += len(data)
    if start < len(encoded):
        requests.append(_bytes_request(model, input_name, encoded, items, start, len(encoded)))
    return requests


def _bytes_request(model: str, input_name: str, encoded: list[bytes], items: Sequence[object], start: int,
                   end: int) -> _Request:
    array = np.array([[b] for b in encoded[start:end]], dtype=np.object_)
    return _Request(model, input_name, "BYTES", array, start, items[start:end])


def _pixel_requests(pixels: np.ndarray, size: int, items: Sequence[object] | None = None) -> list[_Request]:
    return [
        _Request(IMAGE_TOWER, "pixels", "UINT8", np.ascontiguousarray(pixels[s:e]), s,
                 items[s:e] if items is not None else range(s, e))
        for s, e in _chunks(len(pixels), size)
    ]


def encode_image(image: ImageInput, index: int = 0) -> bytes:
    """Bytes to send for one image: file contents, given bytes, or a lossless PNG of a PIL image / array."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        try:
            return Path(image).read_bytes()
        except OSError as error:
            raise _refused("image", index, image, ErrorCode.UNREADABLE, f"cannot read {image}: {error.strerror}") from error
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise _refused("image", index, image, ErrorCode.WRONG_TYPE, f"arrays must be uint8 [H, W], [H, W, 3] or "
                           f"[H, W, 4], got {image.dtype} {list(image.shape)}")
        from PIL import Image

        image = Image.fromarray(image)
    if hasattr(image, "save") and hasattr(image, "mode"):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    raise _refused("image", index, image, ErrorCode.WRONG_TYPE,
                   f"expected a path, bytes, PIL image or uint8 array, got {type(image).__name__}")


def _refused(kind: str, index: int, item: object, code: ErrorCode, message: str) -> InvalidInputError:
    error = ItemError(index, code, message)
    return InvalidInputError(error.describe(kind), index, item, code, [error])


# Messages of a server that is restarting a model: the request may succeed once it is back.
_RECOVERING = ("is not healthy", "unknown model", "is not ready", "unavailable")


def _classify(error: Exception, request: _Request | None) -> MmserveError:
    """Map a tritonclient/transport error to the SDK's exception types."""
    from tritonclient.utils import InferenceServerException

    if isinstance(error, MmserveError):
        return error
    if not isinstance(error, InferenceServerException):
        if isinstance(error, (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError)):
            if isinstance(error, TimeoutError) or "timed out" in str(error).lower():
                return RequestTimeoutError(f"no answer within the timeout: {error}")
            return ServerUnavailableError(f"server unreachable: {error}")
        return MmserveError(f"{type(error).__name__}: {error}")
    status, message = str(error.status() or ""), error.message() or str(error)
    lowered = message.lower()
    if "UNAUTHENTICATED" in status or status in ("401", "403"):
        return AuthenticationError(message)
    if "queue size" in message or status == "429":
        return OverloadedError(message)
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message or "timed out" in message:
        return RequestTimeoutError(message)
    if status == "413" or ("RESOURCE_EXHAUSTED" in status and "too large" in lowered):
        return InvalidInputError(f"{message} (a smaller batch_size or max_request_bytes helps)")
    if "RESOURCE_EXHAUSTED" in status:
        return OverloadedError(message)
    if ("UNAVAILABLE" in status or status in ("503", "502", "504") or "failed to connect" in lowered
            or any(marker in lowered for marker in _RECOVERING)):
        return ServerUnavailableError(f"server unavailable: {message}")
    if "INVALID_ARGUMENT" in status or status == "400":
        items = from_wire(message)
        if not items or request is None or any(e.index is not None and e.index >= len(request.items) for e in items):
            return InvalidInputError(message)
        # Indices in the request -> indices in the caller's list.
        shifted = [e if e.index is None else dataclasses.replace(e, index=request.offset + e.index) for e in items]
        error = InvalidInputError.for_items(request.kind, shifted)
        error.item = None if items[0].index is None else request.items[items[0].index]
        return error
    return MmserveError(message)


def _retryable(error: MmserveError) -> bool:
    return isinstance(error, (ServerUnavailableError, OverloadedError))


def _backoff(options: ClientOptions, attempt: int) -> float:
    return options.backoff_s * (2**attempt) * (0.5 + random.random())


def _summary(configs: dict[str, dict]) -> ModelSummary:
    tower = configs[IMAGE_TOWER]
    parameters = {k: v["string_value"] for k, v in tower.get("parameters", {}).items()}
    text_tower = configs["text_tower"]
    text_parameters = {k: v["string_value"] for k, v in text_tower.get("parameters", {}).items()}
    return ModelSummary(
        embedding_dim=int(tower["output"][0]["dims"][0]),
        image_size=int(tower["input"][0]["dims"][0]),
        resize_shortest_edge=int(parameters["resize_shortest_edge"]),
        resample=parameters["resample"],
        context_length=int(text_parameters["context_length"]),
        max_batch_size={name: int(config["max_batch_size"]) for name, config in configs.items()},
    )


def _embeddings(results: list[np.ndarray], dim: int) -> np.ndarray:
    if not results:
        return np.zeros((0, dim), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(results), dtype=np.float32)


class _Common:
    """Option handling and request planning shared by `Client` and `AsyncClient`."""

    options: ClientOptions
    _summary_cache: ModelSummary | None = None
    _preprocessor = None

    def _batch_size(self, model: str, summary: ModelSummary) -> int:
        server_max = summary.max_batch_size.get(model, 1)
        return min(self.options.batch_size or server_max, server_max)

    def _local_pixels(self, images: Sequence[ImageInput], summary: ModelSummary) -> np.ndarray:
        from mmserve.modalities.image import ImageGeometry, ImagePreprocessor

        if self._preprocessor is None:
            geometry = ImageGeometry(summary.image_size, summary.resize_shortest_edge, summary.resample)
            self._preprocessor = ImagePreprocessor(geometry, exact=self.options.exact_preprocessing)
        encoded = [encode_image(image, index) for index, image in enumerate(images)]
        pixels, errors = self._preprocessor.preprocess_lenient(encoded)
        if errors:
            raise InvalidInputError.for_items("image", errors, images)
        return pixels

    def _text_plan(self, texts: Sequence[str], summary: ModelSummary) -> list[_Request]:
        return _text_requests(list(texts), self._batch_size(TEXT_MODEL, summary), self.options.max_request_bytes)

    def _image_plan(self, images: Sequence[ImageInput], preprocess: str | None, summary: ModelSummary):
        mode = preprocess or self.options.preprocess
        if mode == "local":
            pixels = self._local_pixels(images, summary)
            return _pixel_requests(pixels, self._batch_size(IMAGE_TOWER, summary), images)
        if mode != "server":
            raise ValueError(f"preprocess must be 'server' or 'local', got {mode!r}")
        return _image_requests(images, self._batch_size(IMAGE_MODEL, summary), self.options.max_request_bytes)

    def _check_pixels(self, pixels: np.ndarray, summary: ModelSummary) -> None:
        shape = (summary.image_size, summary.image_size, 3)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != shape:
            raise InvalidInputError(f"pixels must be uint8 [N, {', '.join(map(str, shape))}], got {pixels.dtype} "
                                    f"{list(pixels.shape)}")


class Client(_Common):
    """Blocking client. Thread-safe: each worker thread keeps its own connection."""

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self.options = ClientOptions(url=url, **options)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.options.max_in_flight, thread_name_prefix="mmserve-client")

    # -- public API ------------------------------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """L2-normalised float32 `[N, D]`, one row per text."""
        summary = self.model_summary()
        return self._run(self._text_plan(texts, summary), summary, progress)

    def embed_images(
        self, images: Sequence[ImageInput], *, preprocess: Literal["server", "local"] | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """L2-normalised float32 `[N, D]` for paths, encoded bytes, PIL images or uint8 arrays."""
        summary = self.model_summary()
        return self._run(self._image_plan(list(images), preprocess, summary), summary, progress)

    def embed_pixels(self, pixels: np.ndarray, *, progress: bool = False) -> np.ndarray:
        """Preprocessed uint8 `[N, S, S, 3]` (resized and cropped) straight to the image tower."""
        summary = self.model_summary()
        self._check_pixels(pixels, summary)
        return self._run(_pixel_requests(pixels, self._batch_size(IMAGE_TOWER, summary)), summary, progress)

    def health(self) -> Health:
        client, headers = self._client(), self.options.headers
        try:
            live, ready = client.is_server_live(headers=headers), client.is_server_ready(headers=headers)
            models = {name: client.is_model_ready(name, headers=headers) for name in MODELS}
        except Exception as error:  # noqa: BLE001 - reported as "not live"
            if not isinstance(_classify(error, None), ServerUnavailableError):
                raise _classify(error, None) from error
            return Health(live=False, ready=False, models={})
        return Health(live=live, ready=ready, models=models)

    def model_summary(self) -> ModelSummary:
        if self._summary_cache is None:
            configs = self._call_with_retries(lambda: {name: self._model_config(name) for name in MODELS}, None)
            self._summary_cache = _summary(configs)
        return self._summary_cache

    def statistics(self, model: str = "") -> dict:
        """Triton's inference statistics (per model: counts, batch sizes, queue and compute times)."""
        client = self._client()
        if self.options.protocol == "grpc":
            return client.get_inference_statistics(model, headers=self.options.headers, as_json=True)
        return client.get_inference_statistics(model, headers=self.options.headers)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------------

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.options.connect()
            with self._lock:
                self._clients.append(client)
        return client

    def _model_config(self, name: str) -> dict:
        client, headers = self._client(), self.options.headers
        if self.options.protocol == "grpc":
            return client.get_model_config(name, headers=headers, as_json=True,
                                           client_timeout=self.options.timeout_s)["config"]
        return client.get_model_config(name, headers=headers)

    def _infer(self, request: _Request) -> np.ndarray:
        if self.options.protocol == "grpc":
            import tritonclient.grpc as tc

            extra = {"client_timeout": self.options.timeout_s}
        else:
            import tritonclient.http as tc

            extra = {}
        tensor = tc.InferInput(request.input_name, list(request.array.shape), request.datatype)
        tensor.set_data_from_numpy(request.array)
        output = tc.InferRequestedOutput("embedding")
        result = self._client().infer(request.model, [tensor], outputs=[output], headers=self.options.headers,
                                      **extra)
        return result.as_numpy("embedding")

    def _call_with_retries(self, call: Callable[[], Any], request: _Request | None) -> Any:
        for attempt in range(self.options.retries + 1):
            try:
                return call()
            except Exception as raw:  # noqa: BLE001 - classified below
                error = _classify(raw, request)
                if not _retryable(error) or attempt == self.options.retries:
                    raise error from raw
            time.sleep(_backoff(self.options, attempt))
        raise AssertionError("unreachable")

    def _run(self, requests: list[_Request], summary: ModelSummary, progress: bool) -> np.ndarray:
        bar = _progress_bar(sum(len(r.array) for r in requests), progress)
        futures = [self._pool.submit(self._call_with_retries, lambda r=r: self._infer(r), r) for r in requests]
        results = []
        try:
            for future in futures:
                results.append(future.result())
                bar.update(len(results[-1]))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            bar.close()
        return _embeddings(results, summary.embedding_dim)


class AsyncClient(_Common):
    """The same API for asyncio (`await client.embed_texts(...)`), on tritonclient's aio clients."""

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self.options = ClientOptions(url=url, **options)
        self._client = self.options.connect(aio=True)
        import importlib

        self._tc = importlib.import_module(f"tritonclient.{self.options.protocol}.aio")

    async def embed_texts(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        summary = await self.model_summary()
        return await self._run(self._text_plan(texts, summary), summary, progress)

    async def embed_images(
        self, images: Sequence[ImageInput], *, preprocess: Literal["server", "local"] | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        summary = await self.model_summary()
        return await self._run(self._image_plan(list(images), preprocess, summary), summary, progress)

    async def embed_pixels(self, pixels: np.ndarray, *, progress: bool = False) -> np.ndarray:
        summary = await self.model_summary()
        self._check_pixels(pixels, summary)
        return await self._run(_pixel_requests(pixels, self._batch_size(IMAGE_TOWER, summary)), summary, progress)

    async def health(self) -> Health:
        headers = self.options.headers
        try:
            live = await self._client.is_server_live(headers=headers)
            ready = await self._client.is_server_ready(headers=headers)
            models = {name: await self._client.is_model_ready(name, headers=headers) for name in MODELS}
        except Exception as error:  # noqa: BLE001 - reported as "not live"
            if not isinstance(_classify(error, None), ServerUnavailableError):
                raise _classify(error, None) from error
            return Health(live=False, ready=False, models={})
        return Health(live=live, ready=ready, models=models)

    async def model_summary(self) -> ModelSummary:
        if self._summary_cache is None:
            async def configs() -> dict[str, dict]:
                return {name: await self._model_config(name) for name in MODELS}

            self._summary_cache = _summary(await self._call_with_retries(configs, None))
        return self._summary_cache

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def _model_config(self, name: str) -> dict:
        headers = self.options.headers
        if self.options.protocol == "grpc":
            response = await self._client.get_model_config(name, headers=headers, as_json=True,
                                                           client_timeout=self.options.timeout_s)
            return response["config"]
        return await self._client.get_model_config(name, headers=headers)

    async def _infer(self, request: _Request) -> np.ndarray:
        tensor = self._tc.InferInput(request.input_name, list(request.array.shape), request.datatype)
        tensor.set_data_from_numpy(request.array)
        output = self._tc.InferRequestedOutput("embedding")
        call = self._client.infer(request.model, [tensor], outputs=[output], headers=self.options.headers)
        result = await asyncio.wait_for(call, self.options.timeout_s)
        return result.as_numpy("embedding")

    async def _call_with_retries(self, call, request: _Request | None):
        for attempt in range(self.options.retries + 1):
            try:
                return await call()
            except asyncio.CancelledError:
                raise
            except Exception as raw:  # noqa: BLE001 - classified below
                error = _classify(raw, request)
                if not _retryable(error) or attempt == self.options.retries:
                    raise error from raw
            await asyncio.sleep(_backoff(self.options, attempt))
        raise AssertionError("unreachable")

    async def _run(self, requests: list[_Request], summary: ModelSummary, progress: bool) -> np.ndarray:
        bar = _progress_bar(sum(len(r.array) for r in requests), progress)
        slots = asyncio.Semaphore(self.options.max_in_flight)

        async def one(request: _Request) -> np.ndarray:
            async with slots:
                result = await self._call_with_retries(lambda: self._infer(request), request)
                bar.update(len(result))
                return result

        tasks = [asyncio.ensure_future(one(r)) for r in requests]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        finally:
            bar.close()
        return _embeddings(list(results), summary.embedding_dim)


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="item", dynamic_ncols=True, leave=False)
