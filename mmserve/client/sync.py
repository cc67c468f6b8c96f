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
from mmserve.client.replicas import Replica
from mmserve.client.transport import Transport
from mmserve.modalities import MediaInput, SegmentedEmbedding
from mmserve.modalities.image import ImageInput
from mmserve.models.info import Scoring

T = TypeVar("T")


class Client(core.Face):
    """Blocking client. Thread-safe: each worker thread keeps its own connection (per server).

    `url` may name several replicas (a list, or comma-separated): see `mmserve.client.replicas`."""

    def __init__(self, url: str | Sequence[str] = DEFAULT_URL, **options: Any) -> None:
        super().__init__(url, **options)
        self._local = threading.local()
        self._transports: list[Transport] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.options.max_in_flight, thread_name_prefix="mmserve-client")
        self._stop = threading.Event()
        self._checker: threading.Thread | None = None
        if len(self._replicas) > 1:
            self._checker = threading.Thread(target=self._check_replicas, name="mmserve-health", daemon=True)
            self._checker.start()

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

    def infer(self, model: str, input_name: str, array: np.ndarray, datatype: str,
              outputs: str | tuple[str, ...] = "embedding"):
        """One raw inference of any model (with the balancing and retries of every call): `array` with its
        batch dimension; the output as numpy (a tuple for a tuple of names)."""
        return self._with_retries(lambda t: t.infer(model, input_name, array, datatype, outputs))

    def health(self) -> core.Health:
        """The server's health; with replicas, live and ready when any is (`replicas`: each one's readiness)."""
        states = []
        for replica in self._replicas.replicas:
            transport = self._transport(replica)
            try:
                states.append(core.Health(live=transport.server_live(), ready=transport.server_ready(),
                                          models={name: transport.model_ready(name) for name in core.MODELS}))
            except Exception as error:  # noqa: BLE001 - "not live" when unreachable
                states.append(core.health_or_down(error))
        return core.combined_health(self._replicas, states)

    def model_summary(self) -> core.ModelSummary:
        if self._summary is None:
            def configs(transport: Transport) -> dict[str, dict]:
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
        """Triton's inference statistics (per model: counts, batch sizes, queue and compute times); with
        replicas, the first one's (ask a `Client` of one URL for another's)."""
        return self._transport(self._replicas.replicas[0]).statistics(model)

    def close(self) -> None:
        self._stop.set()
        if self._checker is not None:
            self._checker.join(timeout=5)
        self._pool.shutdown(wait=True)
        with self._lock:
            for transport in self._transports:
                transport.close()
            self._transports.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _transport(self, replica: Replica) -> Transport:
        transports = getattr(self._local, "transports", None)
        if transports is None:
            transports = self._local.transports = {}
        transport = transports.get(replica.url)
        if transport is None:  # one per thread and server: tritonclient's HTTP client is not thread-safe
            transport = transports[replica.url] = Transport(replica.options)
            with self._lock:
                self._transports.append(transport)
        return transport

    def _with_retries(self, call: Callable[[Transport], T], request: core.Request | None = None) -> T:
        """`call(transport)` on the least busy replica; failures retried (on another replica when one is
        unavailable) as `core.failover_delay` says."""
        avoid: list[Replica] = []
        for attempt in itertools.count():
            replica = self._replicas.acquire(avoid)
            try:
                result = call(self._transport(replica))
            except Exception as raw:  # noqa: BLE001 - classified by core.failover_delay
                self._replicas.release(replica)
                delay = core.failover_delay(self.options, self._replicas, replica, raw, request, attempt)
                avoid = [replica]
                if delay:
                    time.sleep(delay)
                continue
            self._replicas.release(replica)
            if replica.failures:
                self._replicas.admit(replica)
            return result
        raise AssertionError("unreachable")

    def _check_replicas(self) -> None:
        """Ask every replica whether it is ready, every health_interval_s, until close()."""
        while not self._stop.wait(self.options.health_interval_s):
            for replica in self._replicas.replicas:
                transport = self._transport(replica)
                try:
                    ready = bool(transport.server_ready_within(min(2.0, self.options.timeout_s)))
                except Exception:  # noqa: BLE001 - unreachable, refusing, timing out: not ready
                    ready = False
                self._replicas.checked(replica, ready)

    def _run(self, requests: list[core.Request], progress: bool) -> np.ndarray:
        return core.embeddings(self._results(requests, progress), self.model_summary().embedding_dim)

    def _run_segmented(self, requests: list[core.Request], progress: bool) -> list[SegmentedEmbedding]:
        results = self._results(requests, progress, core.SEGMENT_OUTPUTS)
        return [item for result in results for item in core.segmented(result)]

    def _results(self, requests: list[core.Request], progress: bool, outputs: str | tuple[str, ...] = "embedding"
                 ) -> list:
        bar = core.progress_bar(requests, progress)

        def infer(transport: Transport, request: core.Request):
            return transport.infer(request.model, request.input_name, request.array, request.datatype, outputs)

        futures = [self._pool.submit(self._with_retries, lambda t, r=r: infer(t, r), r) for r in requests]
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
