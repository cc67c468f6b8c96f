"""`Client`: the blocking face of the SDK."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from mmserve.client import core
from mmserve.client.options import DEFAULT_URL
from mmserve.client.transport import Transport
from mmserve.modalities.image import ImageInput
from mmserve.models.info import Scoring

T = TypeVar("T")


class Client(core.Face):
    """Blocking client. Thread-safe: each worker thread keeps its own connection."""

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        super().__init__(url, **options)
        self._local = threading.local()
        self._transports: list[Transport] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.options.max_in_flight, thread_name_prefix="mmserve-client")

    def embed_texts(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """L2-normalised float32 `[N, D]`, one row per text."""
        return self._run(self._planner.texts(texts, self.model_summary()), progress)

    def embed_images(self, images: Sequence[ImageInput], *, preprocess: core.Preprocess | None = None,
                     progress: bool = False) -> np.ndarray:
        """L2-normalised float32 `[N, D]` for paths, encoded bytes, PIL images or uint8 arrays."""
        return self._run(self._planner.images(images, preprocess, self.model_summary()), progress)

    def embed_pixels(self, pixels: np.ndarray, *, progress: bool = False) -> np.ndarray:
        """Preprocessed uint8 `[N, S, S, 3]` (resized and cropped) straight to the image tower."""
        return self._run(self._planner.pixels(pixels, self.model_summary()), progress)

    def health(self) -> core.Health:
        transport = self._transport()
        try:
            return core.Health(live=transport.server_live(), ready=transport.server_ready(),
                          models={name: transport.model_ready(name) for name in core.MODELS})
        except Exception as error:  # noqa: BLE001 - "not live" when unreachable
            return core.health_or_down(error)

    def model_summary(self) -> core.ModelSummary:
        if self._summary is None:
            configs = self._with_retries(lambda: {name: self._transport().model_config(name) for name in core.MODELS})
            self._summary = core.ModelSummary.from_configs(configs)
        return self._summary

    @property
    def scoring(self) -> Scoring:
        """The served model's zero-shot score function (what `Search.classify` and `rank` use)."""
        return self.model_summary().scoring

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

    def _with_retries(self, call: Callable[[], T], request: core.Request | None = None) -> T:
        for attempt in itertools.count():
            try:
                return call()
            except Exception as raw:  # noqa: BLE001 - classified by core.retry_delay
                time.sleep(core.retry_delay(self.options, raw, request, attempt))
        raise AssertionError("unreachable")

    def _infer(self, request: core.Request) -> np.ndarray:
        return self._transport().infer(request.model, request.input_name, request.array, request.datatype)

    def _run(self, requests: list[core.Request], progress: bool) -> np.ndarray:
        bar = core.progress_bar(requests, progress)
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
        return core.embeddings(results, self.model_summary().embedding_dim)
