"""`AsyncClient`: the asyncio face of the SDK (`await client.embed_texts(...)`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from mmserve.client import core
from mmserve.client.options import DEFAULT_URL
from mmserve.client.replicas import Replica
from mmserve.client.transport import Transport
from mmserve.modalities import MediaInput, SegmentedEmbedding
from mmserve.modalities.image import ImageInput

T = TypeVar("T")


class AsyncClient(core.Face):
    """The same API as `Client` for asyncio, on tritonclient's aio clients."""

    def __init__(self, url: str | Sequence[str] = DEFAULT_URL, *, http_connections: int | None = None,
                 **options: Any) -> None:
        """`http_connections`: the HTTP connection pool's size per server (tritonclient's default: 100)."""
        super().__init__(url, **options)
        self._transports = {
            replica.url: Transport(replica.options, aio=True, **(
                {"conn_limit": http_connections} if http_connections and replica.options.protocol == "http" else {}))
            for replica in self._replicas.replicas}
        self._checker: asyncio.Task | None = None  # started with the first call, inside the running loop

    def _transport_of(self, replica: Replica) -> Transport:
        if self._checker is None and len(self._replicas) > 1:
            self._checker = asyncio.ensure_future(self._check_replicas())
        return self._transports[replica.url]

    async def embed_texts(self, texts: Sequence[str], *, modality: str | None = None,
                          progress: bool = False) -> np.ndarray:
        """L2-normalised float32 `[N, D]`, one row per text (`modality`: as `Client.embed_texts`)."""
        return await self._run(self._planner.texts(texts, await self.model_summary(), modality), progress)

    async def embed_videos(self, videos: Sequence[MediaInput], *, progress: bool = False
                           ) -> list[SegmentedEmbedding]:
        """Per video (a path or the file's bytes): its vector, and each sampled moment's with its times."""
        requests = self._planner.media(core.VIDEO_MODEL, videos, await self.model_summary())
        return [item for result in await self._results(requests, progress, core.SEGMENT_OUTPUTS)
                for item in core.segmented(result)]

    async def embed_audio(self, sounds: Sequence[MediaInput], *, progress: bool = False
                          ) -> list[SegmentedEmbedding]:
        """Per sound (a path or the file's bytes): its vector, and each window's with its times."""
        requests = self._planner.media(core.AUDIO_MODEL, sounds, await self.model_summary())
        return [item for result in await self._results(requests, progress, core.SEGMENT_OUTPUTS)
                for item in core.segmented(result)]

    async def embed_images(self, images: Sequence[ImageInput], *, preprocess: core.Preprocess | None = None,
                           progress: bool = False) -> np.ndarray:
        """L2-normalised float32 `[N, D]` for paths, encoded bytes, PIL images or uint8 arrays."""
        return await self._run(self._planner.images(images, preprocess, await self.model_summary()), progress)

    async def embed_pixels(self, pixels: np.ndarray, *, progress: bool = False) -> np.ndarray:
        """Preprocessed uint8 `[N, S, S, 3]` (resized and cropped) straight to the image tower."""
        return await self._run(self._planner.pixels(pixels, await self.model_summary()), progress)

    async def infer(self, model: str, input_name: str, array: np.ndarray, datatype: str,
                    outputs: str | tuple[str, ...] = "embedding"):
        """As `Client.infer`."""
        return await self._with_retries(lambda t: t.infer(model, input_name, array, datatype, outputs))

    async def health(self) -> core.Health:
        """As `Client.health`."""
        states = []
        for replica in self._replicas.replicas:
            transport = self._transports[replica.url]
            try:
                states.append(core.Health(live=await transport.server_live(), ready=await transport.server_ready(),
                                          models={name: await transport.model_ready(name) for name in core.MODELS}))
            except Exception as error:  # noqa: BLE001 - "not live" when unreachable
                states.append(core.health_or_down(error))
        return core.combined_health(self._replicas, states)

    async def model_summary(self) -> core.ModelSummary:
        if self._summary is None:
            async def configs(transport: Transport) -> dict[str, dict]:
                from tritonclient.utils import InferenceServerException

                found = {name: await transport.model_config(name) for name in core.MODELS}
                for name in core.OPTIONAL_MODELS:
                    try:
                        if await transport.model_ready(name):
                            found[name] = await transport.model_config(name)
                    except InferenceServerException:  # an older server: it does not know the model
                        pass
                return found

            self._summary = core.ModelSummary.from_configs(await self._with_retries(configs))
        return self._summary

    async def statistics(self, model: str = "") -> dict:
        """Triton's inference statistics (as `Client.statistics`: the first replica's)."""
        return await self._transports[self._replicas.replicas[0].url].statistics(model)

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
        for transport in self._transports.values():
            await transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def _with_retries(self, call: Callable[[Transport], Awaitable[T]], request: core.Request | None = None
                            ) -> T:
        """As `Client._with_retries`."""
        avoid: list[Replica] = []
        for attempt in itertools.count():
            replica = self._replicas.acquire(avoid)
            try:
                result = await asyncio.wait_for(call(self._transport_of(replica)), self.options.timeout_s)
            except asyncio.CancelledError:
                self._replicas.release(replica)
                raise
            except Exception as raw:  # noqa: BLE001 - classified by core.failover_delay
                self._replicas.release(replica)
                delay = core.failover_delay(self.options, self._replicas, replica, raw, request, attempt)
                avoid = [replica]
                if delay:
                    await asyncio.sleep(delay)
                continue
            self._replicas.release(replica)
            if replica.failures:
                self._replicas.admit(replica)
            return result
        raise AssertionError("unreachable")

    async def _check_replicas(self) -> None:
        while True:
            await asyncio.sleep(self.options.health_interval_s)
            for replica in self._replicas.replicas:
                try:
                    ready = bool(await asyncio.wait_for(self._transports[replica.url].server_ready(),
                                                        min(2.0, self.options.timeout_s)))
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - unreachable, refusing, timing out: not ready
                    ready = False
                self._replicas.checked(replica, ready)

    async def _run(self, requests: list[core.Request], progress: bool) -> np.ndarray:
        results = await self._results(requests, progress)
        return core.embeddings(results, (await self.model_summary()).embedding_dim)

    async def _results(self, requests: list[core.Request], progress: bool,
                       outputs: str | tuple[str, ...] = "embedding") -> list:
        bar = core.progress_bar(requests, progress)
        slots = asyncio.Semaphore(self.options.max_in_flight)

        async def one(request: core.Request):
            async with slots:
                result = await self._with_retries(
                    lambda transport: transport.infer(request.model, request.input_name, request.array,
                                                      request.datatype, outputs), request)
                bar.update(len(request.array))
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
        return list(results)
