"""Price each hop of a request through Triton, and compare the served paths with the same runtime in-process.

One tritonserver serves the model repository of the chosen model plus three no-op Python models, and every
route below is driven by the same cheap client (pre-serialized gRPC requests, one item each), side by side:

    noop           one Python-backend model answering a zero embedding: the price of one hop
    noop_ensemble  an ensemble around `noop`: the price of the ensemble scheduler
    noop_chain     an ensemble of two no-op Python models (ids, then embedding): a two-step ensemble
    embed_image    encoded JPEG -> embedding        embed_text    UTF-8 -> embedding
    image_tower    uint8 pixels -> embedding        text_tower    token ids + lengths -> embedding
    two_hop_image  the layout before issue 13: image_preprocess, then a tower model of its own (an ensemble)
    two_hop_text   the same for texts: text_tokenize (77 padded ids + lengths), then a text tower model

For each route: the best throughput over a few client counts, the latency of one client alone, and from
Triton's statistics what each model spent per request (queue, input, compute, output). Then `LocalEmbedder`
(C++ preprocessing + the same runtime, batches of 64) in the same process gives the in-process ceilings the
served paths are compared against.

    python bench/bench_hops.py [--model vit-b32|bundled|DIR] [--seconds 4] [--update BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from mmserve.config import Settings  # noqa: E402
from mmserve.cpu import cpu_features  # noqa: E402
from mmserve.dev import loadtest  # noqa: E402

CONCURRENCY = (1, 16, 64, 128)
MARK_START, MARK_END = "<!-- hops: bench/bench_hops.py -->", "<!-- /hops -->"

NOOP_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import json
        config = json.loads(args["model_config"])
        self.output = config["output"][0]["name"]
        self.dims = [int(d) for d in config["output"][0]["dims"]]
        self.dtype = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"])

    def execute(self, requests):
        responses = []
        for request in requests:
            rows = request.inputs()[0].as_numpy().shape[0]
            zeros = np.zeros((rows, *self.dims), dtype=self.dtype)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output, zeros)]))
        return responses
'''


def _python_config(name: str, inputs: str, output: str, batch: int) -> str:
    return textwrap.dedent(f"""\
        name: "{name}"
        backend: "python"
        max_batch_size: {batch}
        input [ {inputs} ]
        output [ {output} ]
        dynamic_batching {{ max_queue_delay_microseconds: 500 }}
        instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
        """)


def add_two_hop_models(repository: Path) -> None:
    """The layout embed_image / embed_text replaced, side by side with them: decode-only model -> tower model
    (the same tower code, runtime and batching, in a process of its own) as a two-step ensemble."""
    import os
    import shutil

    for kind, encoded, tensors in (("image", "image", ["pixels"]), ("text", "text", ["token_ids", "lengths"])):
        source, tower = repository / f"embed_{kind}", repository / f"{kind}_tower_alone"
        shutil.copytree(source, tower, copy_function=os.link)
        config = []
        for line in (source / "config.pbtxt").read_text().splitlines():
            if f'name: "{encoded}", data_type: TYPE_STRING' in line:
                continue  # towers only: no encoded input
            if f'name: "{tensors[0]}"' in line:
                line = line.replace(", optional: true", "")
            config.append(line.replace(f'name: "embed_{kind}"', f'name: "{kind}_tower_alone"'))
        (tower / "config.pbtxt").unlink()  # a hard link to embed_*'s own config
        (tower / "config.pbtxt").write_text("\n".join(config) + "\n")
        step = "image_preprocess" if kind == "image" else "text_tokenize"
        mapped = ", ".join(f'{{ key: "{t}" value: "{t}" }}' for t in tensors)
        (repository / f"two_hop_{kind}" / "1").mkdir(parents=True)
        embedding = next(line for line in config if 'name: "embedding"' in line).strip()
        batch = next(line for line in config if line.startswith("max_batch_size"))
        (repository / f"two_hop_{kind}" / "config.pbtxt").write_text(textwrap.dedent(f"""\
            name: "two_hop_{kind}"
            platform: "ensemble"
            {batch}
            input [ {{ name: "{encoded}", data_type: TYPE_STRING, dims: [ 1 ] }} ]
            {embedding}
            ensemble_scheduling {{ step [
              {{ model_name: "{step}", model_version: -1, input_map {{ key: "{encoded}" value: "{encoded}" }}
                output_map [ {mapped} ] }},
              {{ model_name: "{kind}_tower_alone", model_version: -1, input_map [ {mapped} ]
                output_map {{ key: "embedding" value: "embedding" }} }}
            ] }}
            """))


def add_noop_models(repository: Path, dim: int, batch: int) -> None:
    """noop (BYTES -> embedding), noop_ids (BYTES -> INT32 [77]), noop_embed (INT32 -> embedding), two ensembles."""
    text_in = '{ name: "text", data_type: TYPE_STRING, dims: [ 1 ] }'
    ids_out = '{ name: "token_ids", data_type: TYPE_INT32, dims: [ 77 ] }'
    ids_in = '{ name: "token_ids", data_type: TYPE_INT32, dims: [ 77 ] }'
    embedding = f'{{ name: "embedding", data_type: TYPE_FP32, dims: [ {dim} ] }}'
    for name, inputs, output in (("noop", text_in, embedding), ("noop_ids", text_in, ids_out),
                                 ("noop_embed", ids_in, embedding)):
        (repository / name / "1").mkdir(parents=True, exist_ok=True)
        (repository / name / "config.pbtxt").write_text(_python_config(name, inputs, output, batch))
        (repository / name / "1" / "model.py").write_text(NOOP_MODEL)

    def ensemble(name: str, steps: str) -> None:
        (repository / name / "1").mkdir(parents=True, exist_ok=True)
        (repository / name / "config.pbtxt").write_text(textwrap.dedent(f"""\
            name: "{name}"
            platform: "ensemble"
            max_batch_size: {batch}
            input [ {text_in} ]
            output [ {embedding} ]
            ensemble_scheduling {{ step [ {steps} ] }}
            """))

    ensemble("noop_ensemble", '{ model_name: "noop", model_version: -1, input_map { key: "text" value: "text" } '
                              'output_map { key: "embedding" value: "embedding" } }')
    ensemble("noop_chain",
             '{ model_name: "noop_ids", model_version: -1, input_map { key: "text" value: "text" } '
             'output_map { key: "token_ids" value: "ids" } }, '
             '{ model_name: "noop_embed", model_version: -1, input_map { key: "token_ids" value: "ids" } '
             'output_map { key: "embedding" value: "embedding" } }')


class RouteTarget(loadtest.RawGrpcTarget):
    """Pre-serialized gRPC ModelInfer requests, one per route (the item is ignored): the client's cost stays small."""

    def __init__(self, url: str, routes: dict[str, tuple[str, list[tuple[str, str, np.ndarray]]]]) -> None:
        super().__init__(url, "hops")
        self.routes = routes  # route -> (model, [(input, datatype, array [1, ...])])

    def request_body(self, kind: str, item) -> bytes:
        return loadtest.model_infer_request(*self.routes[kind])


PARTS = ("compute_input", "compute_infer", "compute_output")


def model_stats(statistics: dict) -> dict[str, dict[str, int]]:
    """model -> totals: requests, executions, queue ns (per request, summed), and each part's ns (per execution,
    summed: a batch's time counts once, not once per request in it)."""
    stats = {}
    for model in statistics.get("model_stats", []):
        inference = model.get("inference_stats", {})
        totals = {"requests": int(inference.get("success", {}).get("count", 0)),
                  "executions": int(model.get("execution_count", 0)),
                  "queue": int(inference.get("queue", {}).get("ns", 0))}
        for part in PARTS:
            totals[part] = sum(int(b.get(part, {}).get("ns", 0)) for b in model.get("batch_stats", []))
        stats[model["name"]] = totals
    return stats


def per_request_us(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """Per model that ran: mean queue wait, each part's time per request (batch time / requests in it), mean
    batch."""
    table = {}
    for name, totals in after.items():
        delta = {key: value - before.get(name, {}).get(key, 0) for key, value in totals.items()}
        if delta["requests"] <= 0:
            continue
        row = {part: delta[part] / 1000 / delta["requests"] for part in ("queue", *PARTS)}
        row["mean_batch"] = delta["requests"] / max(delta["executions"], 1)
        table[name] = row
    return table


def routes_for(settings: Settings, images: list[bytes], texts: list[str]):
    from mmserve.modalities.image import ImagePreprocessor
    from mmserve.modalities.text import ClipTokenizer
    from mmserve.models.clip import ClipModelInfo

    info = ClipModelInfo.from_dir(settings.model_dir)
    pixels = ImagePreprocessor(info)(images[:1])
    ids, lengths = ClipTokenizer.from_model_dir(settings.model_dir).tokenize(texts[:1])
    text = np.array([[texts[0].encode()]], dtype=np.object_)
    return {
        "noop": ("noop", [("text", "BYTES", text)]),
        "noop_ensemble": ("noop_ensemble", [("text", "BYTES", text)]),
        "noop_chain": ("noop_chain", [("text", "BYTES", text)]),
        "embed_text": ("embed_text", [("text", "BYTES", text)]),
        "text_tower": ("text_tower", [("token_ids", "INT32", ids[:, : int(lengths[0])]),
                                      ("lengths", "INT32", lengths.reshape(1, 1).astype(np.int32))]),
        "embed_image": ("embed_image", [("image", "BYTES", np.array([[images[0]]], dtype=np.object_))]),
        "image_tower": ("image_tower", [("pixels", "UINT8", pixels)]),
        "two_hop_text": ("two_hop_text", [("text", "BYTES", text)]),
        "two_hop_image": ("two_hop_image", [("image", "BYTES", np.array([[images[0]]], dtype=np.object_))]),
    }


def measure(settings: Settings, seconds: float, log, rounds: int = 3) -> dict:
    from mmserve.models.clip import ClipModelInfo
    from mmserve.serving.server import TritonServer, free_port
    from mmserve.serving.triton.repository import build_repository

    images, texts = loadtest.sample_payloads(16)
    info = ClipModelInfo.from_dir(settings.model_dir)
    workdir = Path(tempfile.mkdtemp(prefix="mmserve-hops-"))
    try:
        repository = build_repository(settings, workdir / "repository")
        add_noop_models(repository, info.embedding_dim, settings.max_batch_size)
        add_two_hop_models(repository)
        routes = routes_for(settings, images, texts)
        log("in-process ceilings before the server (LocalEmbedder, batches of 64)")
        before = _in_process(settings, images, texts, seconds)
        server = TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                              log_file=workdir / "triton.log")
        results: dict[str, dict] = {}
        with server.start():
            target = RouteTarget(server.grpc_url, routes)
            # The served paths in interleaved rounds (the host's speed drifts): each keeps its median round.
            measured: dict[str, list[dict]] = {}
            for round_number in range(rounds):
                for route in routes:
                    if route.startswith("noop") and round_number:
                        continue
                    log(f"route {route}, round {round_number + 1}")
                    measured.setdefault(route, []).append(asyncio.run(_route(target, route, seconds)))
            for route, runs in measured.items():
                runs.sort(key=lambda run: run["best"]["throughput"])
                results[route] = dict(runs[len(runs) // 2], rounds=[run["best"]["throughput"] for run in runs])
        log("in-process ceilings after the server")
        after = _in_process(settings, images, texts, seconds)
        # The mean of the two: the served paths ran between them.
        in_process = {key: (before[key] + after[key]) / 2 for key in before}
        in_process["measured"] = [before, after]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"model": str(settings.model_dir), "cpu_features": cpu_features(), "seconds": seconds,
            "rounds": rounds, "routes": results, "in_process": in_process,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _in_process(settings: Settings, images: list[bytes], texts: list[str], seconds: float) -> dict[str, float]:
    from mmserve.embedder import LocalEmbedder

    embedder = LocalEmbedder(settings)
    batch_images, batch_texts = (images * 4)[:64], (texts * 4)[:64]
    return {"images/s": _rate(lambda: embedder.embed_images(batch_images), 64, seconds),
            "texts/s": _rate(lambda: embedder.embed_texts(batch_texts), 64, seconds)}


async def _route(target: RouteTarget, route: str, seconds: float) -> dict:
    await target.open()
    try:
        await loadtest.closed_loop(target, _Fixed(route), "warm-up", 16, 1.0)
        steps = []
        for concurrency in CONCURRENCY:
            before = model_stats(await target._transport.statistics())
            step = await loadtest.closed_loop(target, _Fixed(route), route, concurrency, seconds)
            after = model_stats(await target._transport.statistics())
            steps.append({"concurrency": concurrency, "throughput": step.throughput, "p50_ms": step.p50_ms,
                          "errors": step.errors, "first_error": step.first_error,
                          "models": per_request_us(before, after)})
    finally:
        await target.close()
    best = max(steps, key=lambda s: s["throughput"])
    return {"steps": steps, "best": best, "alone_p50_ms": steps[0]["p50_ms"]}


class _Fixed:
    """Payloads that are always one route (RouteTarget ignores the item)."""

    def __init__(self, route: str) -> None:
        self.route = route

    def next(self) -> tuple[str, bytes]:
        return self.route, b""


def _rate(call, items: int, seconds: float) -> float:
    call()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        runs += 1
    return runs * items / (time.perf_counter() - start)


def markdown(report: dict) -> str:
    routes, ceilings = report["routes"], report["in_process"]
    lines = [
        f"`bench/bench_hops.py`, {report.get('when', 'one run')}. "
        f"Model `{Path(report['model']).name}`; CPU features: {' '.join(report['cpu_features'])}. One item per "
        f"request, pre-serialized gRPC straight to tritonserver (no front door), {report['seconds']:g} s per step, "
        f"the served paths in {report.get('rounds', 1)} interleaved rounds (median round shown, every round's best "
        "in brackets); "
        "the per-model columns are Triton's own statistics at the best step: the mean queue wait, then input, "
        "compute and output time per request (each batch's time divided by the requests in it), in µs.",
        "",
        "| route | best items/s (clients) | alone p50 ms | per model: queue / input / compute / output µs (mean batch) |",
        "|---|---|---|---|",
    ]
    for route, result in routes.items():
        best = result["best"]
        parts = "; ".join(f"{name}: {m['queue']:.0f} / {m['compute_input']:.0f} / {m['compute_infer']:.0f} / "
                          f"{m['compute_output']:.0f} ({m['mean_batch']:.1f})" for name, m in best["models"].items())
        errors = f" ({best['errors']} errors)" if best["errors"] else ""
        spread = ""
        if len(result.get("rounds", [])) > 1:
            spread = " [" + ", ".join(f"{value:.0f}" for value in result["rounds"]) + "]"
        lines.append(f"| {route} | {best['throughput']:.0f} ({best['concurrency']}){spread}{errors} | "
                     f"{result['alone_p50_ms']:.2f} | {parts} |")
    image, text = routes["embed_image"]["best"]["throughput"], routes["embed_text"]["best"]["throughput"]
    lines += [
        "",
        f"In-process (LocalEmbedder, batches of 64; the mean of a measurement before and one after the server): "
        f"{ceilings['images/s']:.0f} images/s, {ceilings['texts/s']:.0f} texts/s. Through Triton: embed_image {image:.0f} images/s = "
        f"**{image / ceilings['images/s']:.0%}** of in-process, embed_text {text:.0f} texts/s = "
        f"**{text / ceilings['texts/s']:.0%}** (goals: 90% and 80%).",
    ]
    if "two_hop_image" in routes and "two_hop_text" in routes:
        old_image = routes["two_hop_image"]["best"]["throughput"]
        old_text = routes["two_hop_text"]["best"]["throughput"]
        lines += ["", f"The two-hop layout this replaced, in the same run: {old_image:.0f} images/s "
                      f"({old_image / ceilings['images/s']:.0%} of in-process; one process is {image / old_image:.2f}x "
                      f"it), {old_text:.0f} texts/s ({old_text / ceilings['texts/s']:.0%}; {text / old_text:.2f}x)."]
    return "\n".join(lines)


def update(path: Path, section: str) -> None:
    """Replace the hop section of `path` (between its markers), or append one."""
    text = path.read_text() if path.is_file() else ""
    block = f"{MARK_START}\n{section}\n{MARK_END}"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Hops: what each step of a request costs\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit-b32", help="vit-b32 (random weights), bundled, or a CLIP directory")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the served paths")
    parser.add_argument("--update", type=Path, help="replace the hop section of this markdown file (BENCHMARKS.md)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hops.json")
    args = parser.parse_args()

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    settings = Settings(model_dir=model_directory(args.model, log))
    report = measure(settings, args.seconds, log, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    section = markdown(report)
    print(section)
    if args.update:
        update(args.update, section)


def model_directory(name: str, log) -> Path:
    from mmserve.models.clip import default_model_dir

    if name == "bundled":
        return default_model_dir()
    if name == "vit-b32":
        directory = ROOT / "build" / "bench" / "vit-b32-random"
        if not (directory / "config.json").is_file():
            from mmserve.models.towers import write_random_clip

            log("writing a random-weight ViT-B/32")
            write_random_clip(directory, seed=1)
        return directory
    return Path(name)


if __name__ == "__main__":
    main()
