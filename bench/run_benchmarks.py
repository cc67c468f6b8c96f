"""Regenerate BENCHMARKS.md: mmserve under load against the servers users would otherwise run.

For each model (the bundled one and a full-size ViT-B/32 with random weights),
in one run on this machine:

- mmserve as `mmserve serve` runs it (tritonserver behind the nginx front door, supervised), one item per
  request over gRPC (and HTTP), closed-loop concurrency sweeps for JPEG images, ~8-word texts and a mix,
  then open-loop Poisson arrivals at fractions of the measured image peak;
- the front door's cost: the same text and image load through it and straight to tritonserver's loopback
  port, in interleaved rounds at the best concurrency;
- overload: open-loop arrivals at the measured peak (20 s), then at 3x the peak for 60 s, then normal load:
  how fast refusals come, the accepted requests' p99 against the p99 at the peak, the answers right after;
- recovery: each model process and tritonserver killed (SIGKILL) under load, seconds to the first
  successful request;
- the typical server: transformers CLIPModel + CLIPProcessor behind FastAPI/uvicorn
  (`bench/baselines/fastapi_server.py`), same sweeps;
- mmserve again with int8 towers (`precision="int8"`): image and text sweeps and the open loop;
- the price of each hop on ViT-B/32 (`bench/bench_hops.py`): a no-op Python model, an ensemble around it, a
  two-step ensemble, and each served path, with Triton's per-model statistics, against in-process;
- in-process ceilings without any server: PyTorch with batching (`bench/baselines/torch_inprocess.py`)
  and mmserve's own runtime (`LocalEmbedder`: C++ preprocessing + OpenVINO, batches of 64), in the
  default precision and int8, with int8's embedding cosine against f32 on the same payloads.

Writes bench/results/*.json, bench/results/*.png and BENCHMARKS.md.

    python bench/run_benchmarks.py [--seconds 4] [--models bundled,vit-b32] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from mmserve.dev import loadtest
from mmserve.models.export import export_towers
from mmserve.models.clip import ClipModelInfo, default_model_dir
from mmserve.serving.triton.repository import build_repository
from mmserve.serving.server import free_port
from mmserve.serving.supervisor import model_processes, supervised
from mmserve.config import ServeOptions, Settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench" / "baselines"))
sys.path.insert(0, str(ROOT / "bench"))
import bench_hops  # noqa: E402
LEVELS = (1, 2, 4, 8, 16, 32, 64)
OPEN_LOOP_FRACTIONS = (0.25, 0.5, 0.75, 0.9)
OVERHEAD_ROUNDS = 5
OVERLOAD_FACTOR = 3.0
OVERLOAD_SECONDS = 60.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def model_dirs(names: list[str], workdir: Path) -> dict[str, Path]:
    dirs = {}
    for name in names:
        if name == "bundled":
            dirs[name] = default_model_dir()
        elif name == "vit-b32":
            directory = workdir / "vit-b32-random"
            if not (directory / "model.safetensors").is_file():
                from mmserve.models.towers import write_random_clip

                log("writing a random-weight ViT-B/32")
                write_random_clip(directory, seed=1)
            dirs[name] = directory
        else:
            raise SystemExit(f"unknown model {name!r}: use bundled and/or vit-b32")
    return dirs


class FastApiBaseline:
    def __init__(self, model_dir: Path, log_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_file, "wb")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "baselines" / "fastapi_server.py"), "--model-dir", str(model_dir),
             "--port", str(self.port)], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the FastAPI baseline exited; see {log_file}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("the FastAPI baseline did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._log.close()


def stage_times(statistics: dict) -> dict[str, dict[str, float]]:
    """Per model: mean queue and compute milliseconds per execution-request, from Triton's statistics."""
    stages = {}
    for model in statistics["model_stats"]:
        inference = model["inference_stats"]
        count = int(inference.get("success", {}).get("count", 0))  # gRPC JSON omits zeros
        if not count:
            continue
        stages[model["name"]] = {
            "requests": count,
            "queue_ms": int(inference["queue"]["ns"]) / count / 1e6,
            "compute_ms": sum(int(inference[k]["ns"]) for k in ("compute_input", "compute_infer", "compute_output"))
            / count / 1e6,
            "executions": int(model.get("execution_count", 0)),
        }
    return stages


INT8 = "mmserve gRPC (int8)"  # the same server with int8 towers (precision="int8")


def run_model(name: str, model_dir: Path, workdir: Path, seconds: float, images, texts) -> dict:
    settings = Settings(model_dir=model_dir)
    info = ClipModelInfo.from_dir(model_dir)
    log(f"{name}: exporting towers (cached after the first run)")
    export_towers(model_dir, settings.export_dir())
    results: list[loadtest.StepResult] = []
    report = {"model": name, "image_size": info.image_size, "dim": info.embedding_dim,
              "precision": settings.precision}

    def step(result: loadtest.StepResult) -> None:
        load = result.concurrency if result.mode == "closed" else f"{result.offered_rate:.0f}/s"
        log(f"  {result.target} {result.workload} {result.mode} {load}: {result.throughput:.1f}/s "
            f"p50 {result.p50_ms or 0:.0f} ms p99 {result.p99_ms or 0:.0f} ms errors {result.errors}")

    def start(variant: Settings, label: str):
        repository = build_repository(variant, workdir / name / label / "model_repository")
        log(f"{name}: starting mmserve serve ({label})")
        options = ServeOptions(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                               triton_log=workdir / name / label / "tritonserver.log")
        return supervised(repository.resolve(), options, cache_dir=variant.cache_dir)

    def sweep(url: str, target: str, workload: str, levels) -> None:
        payloads = loadtest.Payloads(workload, images, texts)
        results.extend(asyncio.run(loadtest.sweep(loadtest.TritonTarget(url, target), payloads, workload, levels,
                                                  seconds, step)))

    def open_loop(url: str, target: str) -> None:
        peak = max(r.throughput for r in results if r.target == target and r.workload == "image")
        rates = [round(peak * f, 1) for f in OPEN_LOOP_FRACTIONS]
        results.extend(asyncio.run(loadtest.rates(loadtest.TritonTarget(url, target),
                                                  loadtest.Payloads("image", images, texts), "image", rates,
                                                  max(seconds, 5.0), step)))

    with start(settings, "default") as stack:
        for workload in ("image", "text", "mixed"):
            sweep(stack.grpc_url, "mmserve gRPC", workload, LEVELS)
        sweep(stack.http_url, "mmserve HTTP", "image", LEVELS[2::2])
        import mmserve

        with mmserve.Client(stack.grpc_url) as client:
            report["stages"] = stage_times(client.statistics())
        log(f"{name}: the front door's cost")
        report["front_door"] = front_door_cost(stack, results, images, texts, seconds, step)
        open_loop(stack.grpc_url, "mmserve gRPC")
        report["overload"] = {}
        for workload in ("image", "text"):
            log(f"{name}: overload, {workload}")
            report["overload"][workload] = overload(stack.grpc_url, best_step(results, "mmserve gRPC", workload),
                                                    workload, images, texts, step)
        log(f"{name}: recovery from killed processes")
        report["recovery"] = recovery(stack, images, texts)

    int8 = settings.model_copy(update={"precision": "int8"})
    with start(int8, "int8") as stack:
        for workload in ("image", "text"):
            sweep(stack.grpc_url, INT8, workload, LEVELS[3:])
        open_loop(stack.grpc_url, INT8)

    log(f"{name}: starting the FastAPI baseline")
    baseline = FastApiBaseline(model_dir, workdir / name / "fastapi.log")
    try:
        for workload in ("image", "text"):
            payloads = loadtest.Payloads(workload, images, texts)
            results += asyncio.run(loadtest.sweep(loadtest.JsonHttpTarget(baseline.url, "FastAPI + transformers"),
                                                  payloads, workload, LEVELS, seconds, step))
    finally:
        baseline.stop()

    log(f"{name}: in-process ceilings (no server running)")
    report["in_process"] = in_process(model_dir, settings, images, texts, max(seconds, 5.0))
    report["int8"] = int8_in_process(int8, settings, images, texts, max(seconds, 5.0))
    report["steps"] = [r.model_dump() for r in results]
    return report


def best_step(results: list[loadtest.StepResult], target: str, workload: str) -> loadtest.StepResult:
    return max((r for r in results if r.target == target and r.workload == workload and r.mode == "closed"),
               key=lambda r: r.throughput)


def front_door_cost(stack, results, images, texts, seconds: float, step) -> dict:
    """Best-concurrency throughput through the front door and straight to tritonserver, rounds interleaved;
    and the CPU each request costs each process (this one, the load generator, included)."""
    from mmserve.serving.supervisor import _children

    def groups() -> dict[str, list[int]]:
        triton = stack.triton.process.pid
        return {"load generator": [os.getpid()], "tritonserver": [triton],
                "model processes": sum(model_processes(triton).values(), []),
                "nginx": [stack.front.process.pid, *_children(stack.front.process.pid)]}

    def cpu_ticks(pids: list[int]) -> int:
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except OSError:
                pass
        return total

    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    cost: dict[str, dict] = {}
    for workload in ("text", "image"):
        concurrency = best_step(results, "mmserve gRPC", workload).concurrency
        rounds, cpu = [], {"direct": {}, "front door": {}}
        for _ in range(OVERHEAD_ROUNDS):
            pair = {}
            for label, url in (("direct", stack.triton.grpc_url), ("front door", stack.grpc_url)):
                payloads = loadtest.Payloads(workload, images, texts)
                before = {name: cpu_ticks(pids) for name, pids in groups().items()}
                (result,) = asyncio.run(loadtest.sweep(loadtest.TritonTarget(url, f"tritonserver {label}"),
                                                       payloads, workload, [concurrency], seconds, step))
                for name, pids in groups().items():
                    per_request = (cpu_ticks(pids) - before[name]) * tick_us / max(result.completed, 1)
                    cpu[label].setdefault(name, []).append(per_request)
                pair[label] = result.throughput
            rounds.append(pair)
        ratios = sorted(r["front door"] / r["direct"] for r in rounds)
        cost[workload] = {"concurrency": concurrency, "rounds": rounds, "median_ratio": ratios[len(ratios) // 2],
                          "cpu_us_per_request": {label: {name: float(np.median(values)) for name, values in parts.items()}
                                                 for label, parts in cpu.items()}}
    return cost


def overload(url: str, peak: loadtest.StepResult, workload: str, images, texts, step) -> dict:
    """Open loop at the peak (20 s), at 3x the peak (60 s), then a closed loop at the peak's concurrency.

    The open loops send pre-serialized requests (`RawGrpcTarget`): the load generator shares the two cores
    with the server, and tritonclient's own per-request work would otherwise be what saturates them."""
    def target(label: str, raw: bool = True):
        return (loadtest.RawGrpcTarget if raw else loadtest.TritonTarget)(url, label)

    payloads = loadtest.Payloads(workload, images, texts)
    (at_peak,) = asyncio.run(loadtest.rates(target("at the peak"), payloads, workload, [peak.throughput], 20.0,
                                            step))
    (burst,) = asyncio.run(loadtest.rates(target(f"{OVERLOAD_FACTOR:g}x the peak"), payloads, workload,
                                          [OVERLOAD_FACTOR * peak.throughput], OVERLOAD_SECONDS, step))
    (after,) = asyncio.run(loadtest.sweep(target("right after", raw=False), payloads, workload, [peak.concurrency],
                                          5.0, step))
    return {"peak": peak.model_dump(), "at_peak": at_peak.model_dump(), "burst": burst.model_dump(),
            "after": after.model_dump()}


def recovery(stack, images, texts) -> dict[str, float]:
    """Seconds from SIGKILL to the first successful request, under load, per model process and tritonserver."""
    import signal
    import threading

    import mmserve

    stop = threading.Event()

    def load(kind: str) -> None:
        with mmserve.Client(stack.grpc_url) as client:
            while not stop.is_set():
                try:
                    client.embed_images(images[:1]) if kind == "image" else client.embed_texts(texts[:2])
                except mmserve.MmserveError:
                    pass

    threads = [threading.Thread(target=load, args=(kind,), daemon=True) for kind in ("image", "text", "image")]
    for thread in threads:
        thread.start()
    figures = {}
    try:
        for part, kind in (("embed_image", "image"), ("embed_text", "text"), ("tritonserver", "image")):
            wait_ready(stack)
            time.sleep(2.0)
            pid = stack.triton.process.pid if part == "tritonserver" else \
                model_processes(stack.triton.process.pid)[part][0]
            with mmserve.Client(stack.grpc_url, retries=0, timeout_s=30) as probe:
                killed = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                while time.monotonic() - killed < 300:
                    try:
                        probe.embed_images(images[:1]) if kind == "image" else probe.embed_texts(texts[:1])
                        break
                    except mmserve.MmserveError:
                        time.sleep(0.05)
                figures[part] = time.monotonic() - killed
            log(f"  recovery after killing {part}: {figures[part]:.1f} s")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    return figures


def wait_ready(stack, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not stack.state.ready()[0]:
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not become ready")
        time.sleep(0.1)


def rate(call, items: int, seconds: float) -> float:
    call()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 2:
        call()
        runs += 1
    return runs * items / (time.perf_counter() - start)


def batches(images, texts) -> tuple[list, list]:
    return (images * (64 // len(images) + 1))[:64], (texts * (64 // len(texts) + 1))[:64]


def in_process(model_dir: Path, settings: Settings, images, texts, seconds: float) -> dict[str, float]:
    import torch_inprocess

    from mmserve.embedder import LocalEmbedder

    embedder = LocalEmbedder(settings)
    batch_images, batch_texts = batches(images, texts)
    return {
        "mmserve runtime images/s": rate(lambda: embedder.embed_images(batch_images), 64, seconds),
        "mmserve runtime texts/s": rate(lambda: embedder.embed_texts(batch_texts), 64, seconds),
        "PyTorch images/s": torch_inprocess.image_throughput(model_dir, batch_images, batch_size=32,
                                                             seconds=seconds),
        "PyTorch texts/s": torch_inprocess.text_throughput(model_dir, batch_texts, batch_size=64, seconds=seconds),
    }


def int8_in_process(int8: Settings, default: Settings, images, texts, seconds: float) -> dict[str, float]:
    """int8 runtime throughput and its embeddings' cosine against f32 on this run's payloads."""
    from mmserve.embedder import LocalEmbedder

    quantized = LocalEmbedder(int8)
    f32 = LocalEmbedder(default.model_copy(update={"precision": "f32"}))
    batch_images, batch_texts = batches(images, texts)
    image_cosine = (quantized.embed_images(images) * f32.embed_images(images)).sum(1)
    text_cosine = (quantized.embed_texts(texts) * f32.embed_texts(texts)).sum(1)
    return {
        "images/s": rate(lambda: quantized.embed_images(batch_images), 64, seconds),
        "texts/s": rate(lambda: quantized.embed_texts(batch_texts), 64, seconds),
        "image cosine min": float(image_cosine.min()),
        "text cosine min": float(text_cosine.min()),
    }


def best(steps, target: str, workload: str) -> dict:
    candidates = [s for s in steps if s["target"] == target and s["workload"] == workload and s["mode"] == "closed"]
    return max(candidates, key=lambda s: s["throughput"])


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    memory = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")) / 2**20
    from mmserve.cpu import cpu_features

    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}; CPU features: {' '.join(cpu_features())}"


def write_markdown(reports: list[dict], out: Path, results_dir: Path, seconds: float, elapsed: float,
                   image_kb: float, hops: dict | None = None) -> None:
    lines = [
        "# mmserve benchmarks",
        "",
        f"Generated by `python bench/run_benchmarks.py` in {elapsed / 60:.1f} minutes on {machine()}.",
        "Every number below comes from that one run; servers, clients and the load generator share the "
        "machine's cores, so read ratios, not absolutes (this host is shared and noisy).",
        "",
        "Workload: one item per request, as interactive clients send them: 640x480 JPEG photos of generated "
        f"scenes ({image_kb:.0f} KB on average) or ~8-word captions. Closed loop: N clients each send their next request when "
        f"the last is answered, {seconds:g} s per level. Open loop: Poisson arrivals at a fixed rate.",
        "",
    ]
    for report in reports:
        steps = report["steps"]
        name = report["model"]
        lines += [f"## {name} ({report['image_size']} px images, {report['dim']}-d embeddings)", ""]
        lines += ["| server | workload | best items/s | at clients | p50 ms | p99 ms | errors |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for target in ("mmserve gRPC", "mmserve HTTP", INT8, "FastAPI + transformers"):
            for workload in ("image", "text", "mixed"):
                try:
                    top = best(steps, target, workload)
                except ValueError:
                    continue
                lines.append(f"| {target} | {workload} | {top['throughput']:.1f} | {top['concurrency']} | "
                             f"{top['p50_ms']:.1f} | {top['p99_ms']:.1f} | {top['errors']} |")
        ceilings = report["in_process"]
        mm_image, mm_text = best(steps, "mmserve gRPC", "image"), best(steps, "mmserve gRPC", "text")
        fa_image, fa_text = best(steps, "FastAPI + transformers", "image"), best(steps, "FastAPI + transformers",
                                                                                 "text")
        lines += ["", "In-process, no server (batches of 64 / 32):", "",
                  "| engine | images/s | texts/s |", "|---|---:|---:|",
                  f"| mmserve runtime (C++ preprocessing + OpenVINO) | {ceilings['mmserve runtime images/s']:.1f} | "
                  f"{ceilings['mmserve runtime texts/s']:.1f} |",
                  f"| mmserve runtime, int8 towers | {report['int8']['images/s']:.1f} | "
                  f"{report['int8']['texts/s']:.1f} |",
                  f"| PyTorch + CLIPProcessor | {ceilings['PyTorch images/s']:.1f} | "
                  f"{ceilings['PyTorch texts/s']:.1f} |", ""]
        q_image, q_text, q = best(steps, INT8, "image"), best(steps, INT8, "text"), report["int8"]

        def half_load(target: str, peak: dict) -> dict:
            candidates = [s for s in steps if s["mode"] == "open" and s["target"] == target]
            return min(candidates, key=lambda s: abs(s["offered_rate"] - 0.5 * peak["throughput"]))

        half, q_half = half_load("mmserve gRPC", mm_image), half_load(INT8, q_image)
        lines += ["Ratios (acceptance targets of issue 7 in brackets), default precision / int8 towers:", "",
                  f"- images/s, mmserve vs FastAPI: **{mm_image['throughput'] / fa_image['throughput']:.2f}x** / "
                  f"**{q_image['throughput'] / fa_image['throughput']:.2f}x** [>= 2x]",
                  f"- texts/s, mmserve vs FastAPI: **{mm_text['throughput'] / fa_text['throughput']:.2f}x** / "
                  f"**{q_text['throughput'] / fa_text['throughput']:.2f}x** [>= 8x]",
                  f"- mmserve through Triton vs its own runtime in-process: images "
                  f"**{mm_image['throughput'] / ceilings['mmserve runtime images/s']:.0%}** / "
                  f"**{q_image['throughput'] / q['images/s']:.0%}**, texts "
                  f"**{mm_text['throughput'] / ceilings['mmserve runtime texts/s']:.0%}** / "
                  f"**{q_text['throughput'] / q['texts/s']:.0%}** [>= 80%]",
                  f"- open loop at half the image peak ({half['offered_rate']:.0f} / {q_half['offered_rate']:.0f} "
                  f"req/s): p99 / p50 = **{half['p99_ms'] / half['p50_ms']:.2f}** / "
                  f"**{q_half['p99_ms'] / q_half['p50_ms']:.2f}** [<= 3]",
                  f"- int8 fidelity on these payloads, embedding cosine against f32 (lowest): images "
                  f"{q['image cosine min']:.5f}, texts {q['text cosine min']:.5f}", ""]
        lines += front_door_lines(report) + overload_lines(report) + recovery_lines(report)
        lines += ["Open loop (images):", "", "| server | offered req/s | done items/s | p50 ms | p90 ms | "
                  "p99 ms | errors |", "|---|---:|---:|---:|---:|---:|---:|"]
        for s in (s for s in steps if s["mode"] == "open"):
            lines.append(f"| {s['target']} | {s['offered_rate']:.0f} | {s['throughput']:.1f} | {s['p50_ms']:.1f} | "
                         f"{s['p90_ms']:.1f} | {s['p99_ms']:.1f} | {s['errors']} |")
        lines += ["", "Where the time goes inside Triton (default precision, whole run; per request, from Triton's "
                  "statistics):", "",
                  "| model | requests | mean queue ms | mean compute ms |", "|---|---:|---:|---:|"]
        for model, stage in report["stages"].items():
            lines.append(f"| {model} | {stage['requests']} | {stage['queue_ms']:.2f} | {stage['compute_ms']:.2f} |")
        batches = mm_image["mean_batch"]
        stages = report["stages"]
        lines += ["", "Mean batch the models ran at the best image level: " + ", ".join(
            f"{m} {b:.1f}" for m, b in batches.items()) + ".", ""]
        lines += ["Reading: " + reading(stages, ceilings, mm_image, mm_text, fa_image, fa_text), ""]
        lines += [
            f"![throughput]({results_dir.name}/{name}-throughput.png) "
            f"![latency]({results_dir.name}/{name}-latency.png)", ""]
    if hops is not None:
        lines += ["## Hops: what each step of a request costs", "", bench_hops.MARK_START, bench_hops.markdown(hops),
                  bench_hops.MARK_END, ""]
    out.write_text("\n".join(lines) + "\n")


def front_door_lines(report: dict) -> list[str]:
    rows = ["The front door's cost: the same load straight to tritonserver's loopback gRPC port and through nginx, "
            f"{OVERHEAD_ROUNDS} interleaved rounds at the best concurrency [issue 12: at most 10% on texts]:", "",
            "| workload | clients | direct items/s (rounds) | through the front door | median ratio |",
            "|---|---:|---|---|---:|"]
    for workload, cost in report["front_door"].items():
        direct = ", ".join(f"{r['direct']:.0f}" for r in cost["rounds"])
        front = ", ".join(f"{r['front door']:.0f}" for r in cost["rounds"])
        rows.append(f"| {workload} | {cost['concurrency']} | {direct} | {front} | "
                    f"**{cost['median_ratio']:.2f}** ({1 - cost['median_ratio']:+.0%} cost) |")
    rows += ["", "CPU per request (medians over the rounds, microseconds; the load generator shares the cores):", "",
             "| workload | path | load generator | nginx | tritonserver | model processes | server side |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for workload, cost in report["front_door"].items():
        for label, parts in cost.get("cpu_us_per_request", {}).items():
            server = sum(v for k, v in parts.items() if k != "load generator")
            rows.append(f"| {workload} | {label} | {parts['load generator']:.0f} | {parts['nginx']:.0f} | "
                        f"{parts['tritonserver']:.0f} | {parts['model processes']:.0f} | {server:.0f} |")
    return rows + [""]


def overload_lines(report: dict) -> list[str]:
    rows = [f"Overload: open-loop arrivals at the closed-loop peak for 20 s, then at {OVERLOAD_FACTOR:g}x the peak for "
            f"{OVERLOAD_SECONDS:g} s, then the peak's clients in a closed loop for 5 s [issue 12: refusals within about "
            "10 ms, accepted p99 within 3x of the p99 at the peak, normal answers right after]. The open loops send "
            "pre-serialized gRPC requests, so that the load generator, on the same two cores, costs as little as it "
            "can:", "",
            "| workload | phase | sent/s | done items/s | p50 ms | p99 ms | refused | refusal p50 / p99 ms |",
            "|---|---|---:|---:|---:|---:|---:|---|"]
    for workload, phases in report["overload"].items():
        for label, key in (("closed-loop peak", "peak"), ("open loop at the peak", "at_peak"),
                           (f"{OVERLOAD_FACTOR:g}x the peak", "burst"), ("right after", "after")):
            s = phases[key]
            sent = (s["completed"] + s["errors"]) / s["duration_s"]
            refusal = "-" if s["refused_p50_ms"] is None else f"{s['refused_p50_ms']:.1f} / {s['refused_p99_ms']:.1f}"
            rows.append(f"| {workload} | {label} | {sent:.0f} | {s['throughput']:.1f} | {_ms(s['p50_ms'])} | "
                        f"{_ms(s['p99_ms'])} | {s['refused']} | {refusal} |")
        burst, at_peak, closed = phases["burst"], phases["at_peak"], phases["peak"]
        if burst["p99_ms"] and at_peak["p99_ms"] and closed["p99_ms"]:
            rows.append(f"| {workload} | accepted p99 at {OVERLOAD_FACTOR:g}x / p99 at the peak | | | | "
                        f"**{burst['p99_ms'] / at_peak['p99_ms']:.2f}** (open loop), "
                        f"**{burst['p99_ms'] / closed['p99_ms']:.2f}** (closed loop) | | |")
    return rows + [""]


def recovery_lines(report: dict) -> list[str]:
    figures = report["recovery"]
    return ["Recovery under load (SIGKILL, then seconds to the first successful request through the front door) "
            "[issue 12: at most 15 s on the bundled model]: " + ", ".join(
                f"{part} {seconds:.1f} s" for part, seconds in figures.items()) + ".", ""]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def reading(stages, ceilings, mm_image, mm_text, fa_image, fa_text) -> str:
    """A few sentences on where the time goes, from the numbers of this run."""
    sentences = [
        f"Queueing before the towers ({stages.get('embed_image', {}).get('queue_ms', 0):.1f} ms image, "
        f"{stages.get('embed_text', {}).get('queue_ms', 0):.1f} ms text, averaged over the run) is the dynamic "
        "batcher collecting work: batches that large are what lets one tower instance serve many clients.",
        f"The FastAPI server runs one item per forward pass, so its throughput is flat from "
        f"{fa_image['concurrency']} clients on ({fa_image['throughput']:.0f} images/s, "
        f"{fa_text['throughput']:.0f} texts/s) while its latency grows linearly with the queue.",
        f"Through Triton, mmserve keeps {mm_image['throughput'] / ceilings['mmserve runtime images/s']:.0%} of its "
        f"in-process image throughput and {mm_text['throughput'] / ceilings['mmserve runtime texts/s']:.0%} of "
        "its text throughput; the difference is per-request work (gRPC, the hop into the Python-backend process "
        "that decodes and runs the tower, the load generator itself on the same two cores), which weighs most "
        "where the model is cheapest (the hop table below prices each hop).",
    ]
    return " ".join(sentences)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each load level (default 4)")
    parser.add_argument("--models", default="bundled,vit-b32")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args()
    started = time.perf_counter()
    results_dir = args.out.parent / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    images, texts = loadtest.sample_payloads(32, 640)
    reports = []
    for name, model_dir in model_dirs(args.models.split(","), args.workdir).items():
        (args.workdir / name).mkdir(parents=True, exist_ok=True)
        report = run_model(name, model_dir, args.workdir, args.seconds, images, texts)
        reports.append(report)
        (results_dir / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        steps = [loadtest.StepResult(**s) for s in report["steps"]]
        loadtest.plot_closed([s for s in steps if s.workload != "mixed" or s.target == "mmserve gRPC"],
                             results_dir / f"{name}-throughput.png", f"{name}: throughput vs concurrency")
        loadtest.plot_open(steps, results_dir / f"{name}-latency.png", f"{name}: mmserve image latency vs load")
    hops = None
    if "vit-b32" in args.models.split(","):
        log("vit-b32: the price of each hop (bench/bench_hops.py)")
        hops = bench_hops.measure(Settings(model_dir=model_dirs(["vit-b32"], args.workdir)["vit-b32"]),
                                  args.seconds, log)
        (results_dir / "hops.json").write_text(json.dumps(hops, indent=2) + "\n")
    write_markdown(reports, args.out, results_dir, args.seconds, time.perf_counter() - started,
                   float(np.mean([len(image) for image in images])) / 1024, hops)
    log(f"wrote {args.out} in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
