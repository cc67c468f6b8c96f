"""`Client`: the blocking face of the SDK."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from mmserve.client.core import (
    MODELS,
    Health,
    ModelSummary,
    Planner,
    Preprocess,
    Request,
    embeddings,
    health_or_down,
    progress_bar,
    retry_delay,
)
from mmserve.client.options import DEFAULT_URL, ClientOptions
from mmserve.client.transport import Transport
from mmserve.modalities.image import ImageInput

T = TypeVar("T")


class Client:
    """Blocking client. Thread-safe: each worker thread keeps its own connection."""

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self.options = ClientOptions(url=url, **options)
        self._planner = Planner(self.options)
        self._summary: ModelSummary | None = None
        self._local = threading.local()
        self._transports: list[Transport] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.options.max_in_flight, thread_name_prefix="mmserve-client")

    def embed_texts(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """L2-normalised float32 `[N, D]`, one row per text."""
        return self._run(self._planner.texts(texts, self.model_summary()), progress)

    def embed_images(self, images: Sequence[ImageInput], *, preprocess: Preprocess | None = None,
                     progress: bool = False) -> np.ndarray:
        """L2-normalised float32 `[N, D]` for paths, encoded bytes, PIL images or uint8 arrays."""
        return self._run(self._planner.images(images, preprocess, self.model_summary()), progress)

    def embed_pixels(self, pixels: np.ndarray, *, progress: bool = False) -> np.ndarray:
        """Preprocessed uint8 `[N, S, S, 3]` (resized and cropped) straight to the image tower."""
        return self._run(self._planner.pixels(pixels, self.model_summary()), progress)

    def health(self) -> Health:
        transport = self._transport()
        try:
            return Health(live=transport.server_live(), ready=transport.server_ready(),
                          models={name: transport.model_ready(name) for name in MODELS})
        except Exception as error:  # noqa: BLE001 - "not live" when unreachable
            return health_or_down(error)

    def model_summary(self) -> ModelSummary:
        if self._summary is None:
            configs = self._with_retries(lambda: {name: self._transport().model_config(name) for name in MODELS})
            self._summary = ModelSummary.from_configs(configs)
        return self._summary

    def statistics(self, model: str = "") -> dict:
        """Triton's inference statistics (per model: counts, batch sizes, queue and compute times)."""
        return self._transport().statistics(model)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for transport in self._transports:
                transport.close()
            self._transports.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _transport(self) -> Transport:
        transport = getattr(self._local, "transport", None)
        if transport is None:  # one per thread: tritonclient's HTTP client is not thread-safe
            transport = self._local.transport = Transport(self.options)
            with self._lock:
                self._transports.append(transport)
        return transport

    def _with_retries(self, call: Callable[[], T], request: Request | None = None) -> T:
        for attempt in itertools.count():
            try:
                return call()
            except Exception as raw:  # noqa: BLE001 - classified by retry_delay
                time.sleep(retry_delay(self.options, raw, request, attempt))
        raise AssertionError("unreachable")

    def _infer(self, request: Request) -> np.ndarray:
        return self._transport().infer(request.model, request.input_name, request.array, request.datatype)

    def _run(self, requests: list[Request], progress: bool) -> np.ndarray:
        bar = progress_bar(requests, progress)
        futures = [self._pool.submit(self._with_retries, lambda r=r: self._infer(r), r) for r in requests]
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
        return embeddings(results, self.model_summary().embedding_dim)
