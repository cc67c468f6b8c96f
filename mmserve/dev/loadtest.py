"""Load generator: closed-loop concurrency sweeps and open-loop (Poisson) arrivals against an embedding server.

One request carries one item (a JPEG, or a short text), as interactive users
send them; the server's own batching has to do the rest. Targets:

- `TritonTarget`: mmserve's Triton endpoints (`embed_image`, `embed_text`) over gRPC or HTTP;
- `JsonHttpTarget`: an HTTP server with `POST /embed/image` (raw bytes) and `POST /embed/text`
  (`{"text": ...}`), like the FastAPI baseline in `bench/baselines/`.

Each step reports throughput, latency percentiles, errors and, for Triton, the
batch sizes its models ran (from Triton's statistics). Everything is bounded
by a duration per step; requests go to loopback addresses only.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

Workload = Literal["image", "text", "mixed"]


class StepResult(BaseModel):
    target: str
    workload: str
    mode: Literal["closed", "open"]
    concurrency: int | None = None  # closed loop: clients
    offered_rate: float | None = None  # open loop: requests/s offered
    duration_s: float
    completed: int
    errors: int
    throughput: float  # items/s completed
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_batch: dict[str, float] = {}  # Triton model -> mean executed batch size during the step
    first_error: str | None = None
    refused: int = 0  # of the errors: refusals (server at capacity: UNAVAILABLE / 503 / queue full)
    refused_p50_ms: float | None = None  # how long a refusal took, from arrival
    refused_p99_ms: float | None = None


class Payloads:
    """Round-robin over a workload's items; "mixed" alternates images and texts."""

    def __init__(self, workload: Workload, images: Sequence[bytes], texts: Sequence[str]) -> None:
        if workload in ("image", "mixed") and not images:
            raise ValueError("the image workload needs images")
        if workload in ("text", "mixed") and not texts:
            raise ValueError("the text workload needs texts")
        kinds: dict[str, list[tuple[str, bytes | str]]] = {
            "image": [("image", x) for x in images], "text": [("text", x) for x in texts]}
        if workload == "mixed":
            items = [pair for pairs in itertools.zip_longest(kinds["image"], kinds["text"]) for pair in pairs if pair]
        else:
            items = kinds[workload]
        self._cycle = itertools.cycle(items)

    def next(self) -> tuple[str, bytes | str]:
        return next(self._cycle)


class TritonTarget:
    """mmserve's endpoints; `options` are the SDK's `ClientOptions` keywords (api_key, ca_cert, ...).

    `url` may name several replicas (comma-separated): requests are balanced as the SDK balances them (least
    outstanding, ejection, health checks) and one that finds its replica unavailable is retried once on
    another; a single server gets no retries, so refusals count as errors."""

    def __init__(self, url: str, name: str = "mmserve", **options) -> None:
        from mmserve.client import ClientOptions

        self.options = ClientOptions(url=url, **options)
        self.name, self.protocol = name, self.options.protocol
        self._client: Any = None  # an AsyncClient once open
        self._transports: list[Any] = []  # one per replica, for the statistics

    async def open(self) -> None:
        from mmserve.client import AsyncClient, Transport

        options = self.options.model_dump(exclude={"url"}) | {"retries": 1 if len(self.options.urls) > 1 else 0}
        self._client = AsyncClient(self.options.url, http_connections=256, **options)
        self._transports = [Transport(self.options.model_copy(update={"url": url}), aio=True)
                            for url in self.options.urls]

    async def close(self) -> None:
        await self._client.close()
        for transport in self._transports:
            await transport.close()

    async def call(self, kind: str, item: bytes | str) -> None:
        data = item if isinstance(item, bytes) else item.encode("utf-8")
        model, name = ("embed_image", "image") if kind == "image" else ("embed_text", "text")
        await self._client.infer(model, name, np.array([[data]], dtype=np.object_), "BYTES")

    async def batch_counts(self) -> dict[str, dict[int, int]]:
        """Executions per batch size, summed over the replicas."""
        total: dict[str, dict[int, int]] = {}
        for transport in self._transports:
            for model, sizes in batch_counts(await transport.statistics()).items():
                for size, count in sizes.items():
                    total.setdefault(model, {})[size] = total.setdefault(model, {}).get(size, 0) + count
        return total

    @property
    def _transport(self) -> Any:
        """The first replica's transport (statistics, raw channels)."""
        return self._transports[0]


class RawGrpcTarget(TritonTarget):
    """gRPC `ModelInfer` with each payload serialized once and the answer left undecoded: the same requests as
    `TritonTarget` for a fraction of the client's CPU, for overload runs where the load generator shares the
    machine with the server and must outpace it."""

    async def open(self) -> None:
        import grpc

        from mmserve.client.transport import grpc_credentials

        await super().open()  # for the statistics
        if self.options.tls:
            channel = grpc.aio.secure_channel(self.options.address, grpc_credentials(self.options))
        else:
            channel = grpc.aio.insecure_channel(self.options.address)
        self._channel = channel
        self._infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        self._metadata = tuple(self.options.headers.items())
        self._serialized: dict[tuple[str, int], bytes] = {}

    async def close(self) -> None:
        await self._channel.close()
        await super().close()

    async def call(self, kind: str, item: bytes | str) -> None:
        body = self._serialized.get((kind, id(item)))
        if body is None:
            body = self._serialized[(kind, id(item))] = self.request_body(kind, item)
        await self._infer(body, metadata=self._metadata)

    def request_body(self, kind: str, item: bytes | str) -> bytes:
        data = item if isinstance(item, bytes) else item.encode("utf-8")
        model, name = ("embed_image", "image") if kind == "image" else ("embed_text", "text")
        return model_infer_request(model, [(name, "BYTES", np.array([[data]], dtype=np.object_))])


def model_infer_request(model: str, tensors: Sequence[tuple[str, str, np.ndarray]]) -> bytes:
    """A serialized gRPC ModelInferRequest: each (name, datatype, array with its batch dimension) as raw contents
    (BYTES items length-prefixed, as Triton reads them)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, array in tensors:
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = name, datatype
        tensor.shape.extend(array.shape)
        if datatype == "BYTES":
            request.raw_input_contents.append(b"".join(len(x).to_bytes(4, "little") + x for x in array.reshape(-1)))
        else:
            request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    return request.SerializeToString()


class JsonHttpTarget:
    def __init__(self, url: str, name: str = "fastapi") -> None:
        self.name, self.url, self.protocol = name, url.rstrip("/"), "http"
        self._session: Any = None  # an aiohttp.ClientSession once open

    async def open(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))

    async def close(self) -> None:
        await self._session.close()

    async def call(self, kind: str, item: bytes | str) -> None:
        if kind == "image":
            request = self._session.post(f"{self.url}/embed/image", data=item,
                                         headers={"Content-Type": "application/octet-stream"})
        else:
            request = self._session.post(f"{self.url}/embed/text", json={"text": item})
        async with request as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")

    async def batch_counts(self) -> dict[str, dict[int, int]]:
        return {}


class OpenAiTarget(JsonHttpTarget):
    """mmserve's HTTP API (`mmserve api`): OpenAI's `POST /v1/embeddings`, one item per request (an image as a
    data URI); the Triton statistics come from `server` when given."""

    def __init__(self, url: str, name: str = "openai", *, api_key: str | None = None, model: str = "mmserve",
                 server: TritonTarget | None = None) -> None:
        super().__init__(url, name)
        self.model, self.server = model, server
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._bodies: dict[int, bytes] = {}

    async def open(self) -> None:
        await super().open()
        if self.server is not None:
            await self.server.open()

    async def close(self) -> None:
        await super().close()
        if self.server is not None:
            await self.server.close()

    async def call(self, kind: str, item: bytes | str) -> None:
        import base64
        import json

        body = self._bodies.get(id(item))
        if body is None:
            value = ("data:image/jpeg;base64," + base64.b64encode(item).decode()) if isinstance(item, bytes) else item
            body = self._bodies[id(item)] = json.dumps({"model": self.model, "input": value}).encode()
        headers = {"Content-Type": "application/json", **self._headers}
        async with self._session.post(f"{self.url}/v1/embeddings", data=body, headers=headers) as response:
            payload = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")

    async def batch_counts(self) -> dict[str, dict[int, int]]:
        return {} if self.server is None else await self.server.batch_counts()


def batch_counts(statistics: dict) -> dict[str, dict[int, int]]:
    """Executions per batch size, per model, from Triton's statistics (JSON form)."""
    return {
        model["name"]: {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in model.get("batch_stats", [])}
        for model in statistics.get("model_stats", [])
    }


def _mean_batches(before: dict[str, dict[int, int]], after: dict[str, dict[int, int]]) -> dict[str, float]:
    means = {}
    for model, sizes in after.items():
        grown = {size: count - before.get(model, {}).get(size, 0) for size, count in sizes.items()}
        executions = sum(grown.values())
        if executions:
            means[model] = sum(size * count for size, count in grown.items()) / executions
    return means


_REFUSALS = ("queue size", "UNAVAILABLE", "at capacity", "503", "unavailable")


def is_refusal(message: str) -> bool:
    """A server at capacity saying no (as opposed to a failure)."""
    return any(marker in message for marker in _REFUSALS)


def _percentiles(seconds: list[float]) -> tuple[float | None, float | None, float | None]:
    if not seconds:
        return None, None, None
    ms = np.array(seconds) * 1000
    return tuple(float(np.percentile(ms, q)) for q in (50, 90, 99))  # type: ignore[return-value]


def _result(target, workload, mode, latencies: list[float], errors: list[tuple[float, str]], elapsed: float,
            batches: dict[str, float], **extra) -> StepResult:
    """`errors`: (seconds from arrival to the error, message)."""
    p50, p90, p99 = _percentiles(latencies)
    refusals = [seconds for seconds, message in errors if is_refusal(message)]
    refused_p50, _, refused_p99 = _percentiles(refusals)
    return StepResult(
        target=target.name, workload=workload, mode=mode, duration_s=elapsed, completed=len(latencies),
        errors=len(errors), throughput=len(latencies) / elapsed, p50_ms=p50, p90_ms=p90, p99_ms=p99,
        mean_batch=batches, first_error=errors[0][1] if errors else None, refused=len(refusals),
        refused_p50_ms=refused_p50, refused_p99_ms=refused_p99, **extra,
    )


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:300]


async def closed_loop(target, payloads: Payloads, workload: str, concurrency: int, seconds: float) -> StepResult:
    """`concurrency` clients, each sending its next request as soon as the last one is answered."""
    latencies: list[float] = []
    errors: list[tuple[float, str]] = []
    before = await target.batch_counts()
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            kind, item = payloads.next()
            start = time.perf_counter()
            try:
                await target.call(kind, item)
            except Exception as error:  # noqa: BLE001 - counted and reported, the run goes on
                errors.append((time.perf_counter() - start, _describe(error)))
                continue
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    batches = _mean_batches(before, await target.batch_counts())
    return _result(target, workload, "closed", latencies, errors, elapsed, batches, concurrency=concurrency)


async def open_loop(target, payloads: Payloads, workload: str, rate: float, seconds: float, *,
                    max_outstanding: int = 1024, seed: int = 0) -> StepResult:
    """Requests arrive as a Poisson process at `rate`/s whatever the server does; latency counts from arrival."""
    rng = random.Random(seed)
    latencies: list[float] = []
    errors: list[tuple[float, str]] = []
    tasks: set[asyncio.Task] = set()
    before = await target.batch_counts()

    async def one(arrival: float, kind: str, item) -> None:
        try:
            await target.call(kind, item)
        except Exception as error:  # noqa: BLE001 - counted and reported
            errors.append((time.perf_counter() - arrival, _describe(error)))
            return
        latencies.append(time.perf_counter() - arrival)

    started = time.perf_counter()
    arrival = started
    while arrival < started + seconds:
        arrival += rng.expovariate(rate)
        delay = arrival - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= max_outstanding:
            errors.append((0.0, "client: too many outstanding requests (server far behind)"))
            continue
        task = asyncio.ensure_future(one(arrival, *payloads.next()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=max(30.0, seconds))
    elapsed = time.perf_counter() - started
    batches = _mean_batches(before, await target.batch_counts())
    return _result(target, workload, "open", latencies, errors, elapsed, batches, offered_rate=rate)


async def sweep(target, payloads: Payloads, workload: str, concurrencies: Sequence[int], seconds: float,
                on_step=None) -> list[StepResult]:
    """Closed-loop steps, one per client count, on one connection to the target."""
    return await _steps(target, [lambda c=c: closed_loop(target, payloads, workload, c, seconds)
                                 for c in concurrencies], on_step)


async def rates(target, payloads: Payloads, workload: str, offered: Sequence[float], seconds: float,
                on_step=None) -> list[StepResult]:
    """Open-loop steps, one per offered rate."""
    return await _steps(target, [lambda r=r: open_loop(target, payloads, workload, r, seconds) for r in offered],
                        on_step)


async def _steps(target, steps, on_step) -> list[StepResult]:
    await target.open()
    try:
        results = []
        for step in steps:
            results.append(await step())
            if on_step is not None:
                on_step(results[-1])
        return results
    finally:
        await target.close()


def sample_payloads(count: int = 32, size: int = 640, seed: int = 3) -> tuple[list[bytes], list[str]]:
    """Real JPEGs of generated scenes (`size` x 3/4 size, quality 90) and ~8-word query texts."""
    import io

    from PIL import Image

    from mmserve.dev import synthetic as S

    images = []
    for scene in S.gallery_scenes(count, seed):
        square = Image.fromarray(S.render_scene(scene, size))
        buffer = io.BytesIO()
        square.crop((0, size // 8, size, size - size // 8)).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    texts = [S.full_caption(scene).text for scene in S.gallery_scenes(count, seed + 1)]
    return images, texts


def plot_closed(results: Sequence[StepResult], path, title: str) -> None:
    """Throughput against concurrent clients, one line per target and workload."""
    series: dict[str, list[StepResult]] = {}
    for result in results:
        if result.mode == "closed":
            series.setdefault(f"{result.target} {result.workload}", []).append(result)
    lines = {label: ([s.concurrency for s in steps], [s.throughput for s in steps]) for label, steps in series.items()}
    _plot(lines, path, title, "concurrent clients", "items/s", xscale=("log", {"base": 2}))


def plot_open(results: Sequence[StepResult], path, title: str) -> None:
    """Latency percentiles against offered load (open-loop steps), per target."""
    steps = [r for r in results if r.mode == "open" and r.p50_ms is not None]
    targets = list(dict.fromkeys(s.target for s in steps))
    lines = {}
    for target in targets:
        mine = [s for s in steps if s.target == target]
        prefix = f"{target} " if len(targets) > 1 else ""
        for field, label in (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99")):
            lines[prefix + label] = ([s.offered_rate for s in mine], [getattr(s, field) for s in mine])
    _plot(lines, path, title, "offered load (requests/s)", "latency (ms)", yscale=("log", {}))


def _plot(lines: dict[str, tuple[list, list]], path, title: str, xlabel: str, ylabel: str, *, xscale=None,
          yscale=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in lines.items():
        axis.plot(xs, ys, marker="o", label=label)
    if xscale:
        axis.set_xscale(xscale[0], **xscale[1])
    if yscale:
        axis.set_yscale(yscale[0], **yscale[1])
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
