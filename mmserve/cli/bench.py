"""bench: load-test a running server."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from mmserve.cli import app, err, out
from mmserve.cli.options import CLIENT, config_options
from mmserve.cli.search import connect
from mmserve.config import Settings


@app.command("bench")
@config_options(*CLIENT)
def bench_command(
    workload: Annotated[str, typer.Option(help="image (JPEG bytes), text (~8-word queries) or mixed.")] = "image",
    concurrency: Annotated[str, typer.Option(help="Closed-loop client counts, comma-separated.")] = "1,2,4,8,16,32,64",
    rate: Annotated[Optional[str], typer.Option(
        help="Open-loop Poisson arrival rates (requests/s), comma-separated; none by default.")] = None,
    seconds: Annotated[float, typer.Option(help="Duration of each step.")] = 5.0,
    images: Annotated[Optional[Path], typer.Option(help="Folder of JPEG/PNG files to send (default: generated "
                                                       "640x480 JPEGs).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results here (JSON).")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a throughput plot (PNG) here; with --rate also a "
                                                     "latency plot next to it.")] = None,
    target_kind: Annotated[str, typer.Option("--target", help="triton: the server's gRPC/HTTP endpoints; openai: "
                                             "the HTTP API's POST /v1/embeddings at --api-url.")] = "triton",
    api_url: Annotated[str, typer.Option(help="The HTTP API (mmserve api), for --target openai.")] = (
        "http://127.0.0.1:8080"),
    model_name: Annotated[str, typer.Option(help="The model id for --target openai.")] = "mmserve",
    *, settings: Settings,
) -> None:
    """Load-test a running server: one item per request, closed-loop sweep and optional open-loop rates."""
    import asyncio

    from mmserve.dev import loadtest

    if workload not in ("image", "text", "mixed"):
        raise typer.BadParameter("workload must be image, text or mixed")
    if target_kind not in ("triton", "openai"):
        raise typer.BadParameter("target must be triton or openai")
    with connect(settings) as client:
        client.model_summary()  # fail fast, with a clear error, when the server is not there
    sample_images, texts = loadtest.sample_payloads()
    if images is not None:
        from mmserve.search import find_images

        sample_images = [path.read_bytes() for path in find_images([images])[:256]]
    payloads = loadtest.Payloads(typing.cast(loadtest.Workload, workload), sample_images, texts)
    table = Table("mode", "load", "items/s", "p50 ms", "p90 ms", "p99 ms", "errors", "mean batch (tower)")

    def show(step) -> None:
        load = f"{step.concurrency} clients" if step.mode == "closed" else f"{step.offered_rate:g}/s"
        towers = ", ".join(f"{m.split('_')[0]} {b:.1f}" for m, b in step.mean_batch.items() if m.endswith("tower"))
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        table.add_row(step.mode, load, f"{step.throughput:.1f}", fmt(step.p50_ms), fmt(step.p90_ms),
                      fmt(step.p99_ms), str(step.errors), towers)
        err.print(f"  {step.mode} {load}: {step.throughput:.1f} items/s, p50 {fmt(step.p50_ms)} ms, "
                  f"{step.errors} errors")

    def target():
        triton = loadtest.TritonTarget(settings.server, **settings.client_options())
        if target_kind == "openai":
            return loadtest.OpenAiTarget(api_url, api_key=settings.api_key, model=model_name, server=triton)
        return triton

    levels = [int(c) for c in concurrency.split(",") if c.strip()]
    results = asyncio.run(loadtest.sweep(target(), payloads, workload, levels, seconds, show))
    if rate:
        offered = [float(r) for r in rate.split(",") if r.strip()]
        results += asyncio.run(loadtest.rates(target(), payloads, workload, offered, seconds, show))
    out.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps([r.model_dump() for r in results], indent=2) + "\n")
    if plot is not None:
        loadtest.plot_closed(results, plot, f"{workload}: throughput vs concurrency")
        if rate:
            loadtest.plot_open(results, plot.with_name(plot.stem + "-latency.png"), f"{workload}: latency vs load")
    bad = sum(r.errors for r in results)
    if bad:
        err.print(f"{bad} requests failed; first: {next(r.first_error for r in results if r.errors)}")
