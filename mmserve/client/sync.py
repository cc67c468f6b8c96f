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
from mmserve.modalities import MediaInput, SegmentedEmbedding
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

    def embed_texts(self, texts: Sequence[str], *, modality: str | None = None, progress: bool = False) -> np.ndarray:
        """L2-normalised float32 `[N, D]`, one row per text; `modality`: embed them as queries for items of it
        (for sounds of a CLAP model, its own text tower; otherwise the one text tower)."""
        return self._run(self._planner.texts(texts, self.model_summary(), modality), progress)

    def embed_videos(self, videos: Sequence[MediaInput], *, progress: bool = False) -> list[SegmentedEmbedding]:
        """Per video (a path or the file's bytes): its vector, and each sampled moment's with its times."""
        return self._run_segmented(self._planner.media(core.VIDEO_MODEL, videos, self.model_summary()), progress)

    def embed_audio(self, sounds: Sequence[MediaInput], *, progress: bool = False) -> list[SegmentedEmbedding]:
        """Per sound (a path or the file's bytes): its vector, and each window's with its times."""
        return self._run_segmented(self._planner.media(core.AUDIO_MODEL, sounds, self.model_summary()), progress)

    def space_of(self, modality: str) -> str:
        """The embedding space this server puts items of `modality` in ("main", or "clap" for a CLAP model)."""
        return self.model_summary().spaces.get(modality, "main")

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
            def configs() -> dict[str, dict]:
                transport = self._transport()
                found = {name: transport.model_config(name) for name in core.MODELS}
                for name in core.OPTIONAL_MODELS:
                    if core.ready_or_absent(lambda n=name: transport.model_ready(n)):
                        found[name] = transport.model_config(name)
                return found

            self._summary = core.ModelSummary.from_configs(self._with_retries(configs))
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

    def _run(self, requests: list[core.Request], progress: bool) -> np.ndarray:
        return core.embeddings(self._results(requests, progress), self.model_summary().embedding_dim)

    def _run_segmented(self, requests: list[core.Request], progress: bool) -> list[SegmentedEmbedding]:
        results = self._results(requests, progress, core.SEGMENT_OUTPUTS)
        return [item for result in results for item in core.segmented(result)]

    def _results(self, requests: list[core.Request], progress: bool, outputs: str | tuple[str, ...] = "embedding"
                 ) -> list:
        bar = core.progress_bar(requests, progress)

        def infer(request: core.Request):
            return self._transport().infer(request.model, request.input_name, request.array, request.datatype,
                                           outputs)

        futures = [self._pool.submit(self._with_retries, lambda r=r: infer(r), r) for r in requests]
        results = []
        try:
            for future, request in zip(futures, requests):
                results.append(future.result())
                bar.update(len(request.array))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            bar.close()
        return results
