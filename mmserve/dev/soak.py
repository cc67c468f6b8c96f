"""Soak test: mixed image and text load with a share of bad inputs, for minutes, against `mmserve serve`.

    python bench/soak.py --seconds 600          # `make soak`; a 60-second run is part of `make test`

Clients send one item per request (images and texts alternately, over gRPC and
HTTP, through the front door); `bad_fraction` of them carry an input the server
must refuse (a corrupt or truncated JPEG, a decompression bomb, a format it
does not read, invalid UTF-8, a text over the size limit). The resident memory
of every process of the served stack (supervisor, nginx, tritonserver, each
model process) is sampled once a second. The report gives each process's growth
after a warm-up (total and the slope of a least-squares line) and the number of
valid requests that failed, which must be zero.
"""

from __future__ import annotations

import asyncio
import random
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from mmserve.dev import loadtest


class ProcessMemory(BaseModel):
    name: str
    pid: int
    rss_start_mb: float  # after the warm-up
    rss_end_mb: float
    growth_mb: float
    slope_mb_per_min: float
    samples: int


class SoakReport(BaseModel):
    seconds: float
    warm_up_s: float
    requests: int
    valid_errors: int
    first_valid_error: str | None
    bad_requests: int
    bad_accepted: int  # bad inputs answered with an embedding: must be 0
    processes: list[ProcessMemory]

    def lines(self) -> list[str]:
        rows = [(f"{self.requests} requests in {self.seconds:.0f} s ({self.requests / self.seconds:.0f}/s), "
                 f"{self.bad_requests} of them bad; errors on valid inputs: {self.valid_errors}; bad inputs "
                 f"accepted: {self.bad_accepted}"),
                f"memory after the first {self.warm_up_s:.0f} s (RSS):"]
        for p in self.processes:
            rows.append(f"  {p.name:<24} {p.rss_start_mb:8.1f} -> {p.rss_end_mb:8.1f} MB   growth {p.growth_mb:+7.1f} MB"
                        f"   slope {p.slope_mb_per_min:+6.2f} MB/min")
        return rows


def bad_inputs(seed: int = 0) -> list[tuple[str, bytes]]:
    """Inputs the server must refuse, each one request's item."""
    images, _ = loadtest.sample_payloads(2, 320, seed)

    def png_chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)) \
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
    return [
        ("image", b"\xff\xd8\xff\xe0" + bytes(random.Random(seed).randbytes(3000))),
        ("image", images[0][: len(images[0]) // 3]),
        ("image", bomb),
        ("image", b"GIF89a not an image mmserve reads"),
        ("image", b""),
        ("text", b"caf\xc3\x28 invalid utf-8"),
        ("text", b"x" * (65 << 10)),
    ]


def stack_processes(root_pid: int) -> dict[str, int]:
    """Name -> pid for `root_pid` (the `mmserve serve` process) and everything under it."""
    from mmserve.serving.supervisor import _children

    found = {"supervisor": root_pid}
    queue = [root_pid]
    while queue:
        for child in _children(queue.pop()):
            queue.append(child)
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            command = b" ".join(argv)
            if b"triton_python_backend_stub" in argv[0]:
                name = "model " + Path(argv[1].decode()).parent.parent.name
            elif b"tritonserver" in argv[0]:
                name = "tritonserver"
            elif b"nginx: master" in command:
                name = "nginx master"
            elif b"nginx: worker" in command:
                name = f"nginx worker {child}"
            else:
                continue
            found[name] = child
    return found


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def soak(urls: list[str], root_pid: int, seconds: float, *, bad_fraction: float = 0.01, clients: int = 8,
               warm_up_s: float | None = None, seed: int = 0, client_options: dict | None = None) -> SoakReport:
    """Run the load against each URL in `urls` (clients spread over them) and sample memory under `root_pid`."""
    warm_up = min(30.0, seconds / 4) if warm_up_s is None else warm_up_s
    images, texts = loadtest.sample_payloads(16, 480, seed)
    valid = [("image", x) for x in images] + [("text", t) for t in texts]
    bad = bad_inputs(seed)
    rng = random.Random(seed)
    counts = {"requests": 0, "valid_errors": 0, "bad": 0, "bad_accepted": 0}
    first_error: list[str] = []
    samples: dict[str, list[tuple[float, float]]] = {}
    pids: dict[str, int] = {}
    started = time.monotonic()
    deadline = started + seconds

    async def client(target) -> None:
        while time.monotonic() < deadline:
            is_bad = rng.random() < bad_fraction
            kind, item = rng.choice(bad) if is_bad else rng.choice(valid)
            counts["requests"] += 1
            counts["bad"] += is_bad
            try:
                await target.call(kind, item)
            except Exception as error:  # noqa: BLE001 - counted below
                if not is_bad:
                    counts["valid_errors"] += 1
                    if not first_error:
                        first_error.append(f"{type(error).__name__}: {error}"[:300])
                continue
            counts["bad_accepted"] += is_bad

    async def sampler() -> None:
        while time.monotonic() < deadline:
            now = time.monotonic() - started
            for name, pid in stack_processes(root_pid).items():
                value = rss_mb(pid)
                if value is not None and pids.setdefault(name, pid) == pid:
                    samples.setdefault(name, []).append((now, value))
            await asyncio.sleep(1.0)

    targets = [loadtest.TritonTarget(url, **(client_options or {})) for url in urls]
    for target in targets:
        await target.open()
    try:
        await asyncio.gather(sampler(), *(client(targets[i % len(targets)]) for i in range(clients)))
    finally:
        for target in targets:
            await target.close()
    elapsed = time.monotonic() - started
    return SoakReport(
        seconds=elapsed, warm_up_s=warm_up, requests=counts["requests"], valid_errors=counts["valid_errors"],
        first_valid_error=first_error[0] if first_error else None, bad_requests=counts["bad"],
        bad_accepted=counts["bad_accepted"],
        processes=[_growth(name, pids[name], points, warm_up) for name, points in sorted(samples.items())],
    )


def _growth(name: str, pid: int, points: list[tuple[float, float]], warm_up: float) -> ProcessMemory:
    kept = [(t, v) for t, v in points if t >= warm_up] or points[-1:]
    times = np.array([t for t, _ in kept])
    values = np.array([v for _, v in kept])
    slope = float(np.polyfit(times / 60, values, 1)[0]) if len(kept) >= 3 else 0.0
    return ProcessMemory(name=name, pid=pid, rss_start_mb=float(values[0]), rss_end_mb=float(values[-1]),
                         growth_mb=float(values[-1] - values[0]), slope_mb_per_min=slope, samples=len(points))


class ServeProcess:
    """`mmserve serve` in a process of its own, on free loopback ports, until the `with` block ends (Ctrl-C)."""

    def __init__(self, repository: Path, *, args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 log: Path | None = None) -> None:
        from mmserve.serving.server import free_port

        self.ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
        self.command = ["-m", "mmserve.cli", "serve", "--repository", str(repository), *args]
        for name, port in self.ports.items():
            self.command += [f"--{name}-port", str(port)]
        self.env, self.log = env, log
        self.process: subprocess.Popen[str] | None = None

    @property
    def urls(self) -> dict[str, str]:
        return {"grpc": f"grpc://127.0.0.1:{self.ports['grpc']}", "http": f"http://127.0.0.1:{self.ports['http']}"}

    def __enter__(self) -> ServeProcess:
        import sys

        output = open(self.log, "w") if self.log else subprocess.DEVNULL
        self.process = process = subprocess.Popen([sys.executable, *self.command], stdout=subprocess.PIPE,
                                                  stderr=output, text=True, env=self.env)
        for line in process.stdout or ():
            if line.startswith("Ctrl-C stops the server"):
                return self
        raise RuntimeError(f"mmserve serve exited with status {process.wait()}"
                           + (f"; see {self.log}" if self.log else ""))

    def __exit__(self, *exc_info) -> None:
        import signal

        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except Exception:  # noqa: BLE001 - it must not outlive the block
            process.kill()
            process.wait()
