"""The real tritonserver on the built model repository: parity, batching, errors, standard endpoints."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

import mmserve
from mmserve.dev.loadtest import batch_counts
from mmserve.modalities.text import length_buckets

PROTOCOLS = ("grpc", "http")
TEXTS = [
    "a red circle",
    "a large blue square on the left",
    "a small green triangle at the top on a white background",
    "an orange cross in the center and a purple circle on the right, both small",
    "x",
    "a photo of a cat " * 20,  # past the 77-token context: truncated like CLIP
]


def url_for(server, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header declaring a huge image, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b"")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_embeddings_equal_in_process_embeddings(server, local_embedder, gallery, protocol):
    expected_images = local_embedder.embed_images(gallery)
    expected_texts = local_embedder.embed_texts(TEXTS)
    with mmserve.Client(url_for(server, protocol), batch_size=5) as client:
        as_bytes = client.embed_images([p.read_bytes() for p in gallery])
        as_paths = client.embed_images(gallery)
        local = client.embed_images(gallery, preprocess="local")
        texts = client.embed_texts(TEXTS)
    assert as_bytes.shape == (len(gallery), local_embedder.dim) and as_bytes.dtype == np.float32
    for result in (as_bytes, as_paths, local):
        assert cosines(result, expected_images).min() >= 0.9999
    assert cosines(texts, expected_texts).min() >= 0.9999


def test_pil_images_and_arrays_embed_like_their_files(server, gallery):
    png = [p for p in gallery if p.suffix == ".png"][:3]
    pil = [Image.open(p) for p in png]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in png]
    with mmserve.Client(server.grpc_url) as client:
        from_files, from_pil, from_arrays = client.embed_images(png), client.embed_images(pil), \
            client.embed_images(arrays)
    assert cosines(from_pil, from_files).min() >= 0.99999
    assert cosines(from_arrays, from_files).min() >= 0.99999


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_client_matches_the_blocking_client(server, gallery, protocol):
    url = url_for(server, protocol)

    async def run():
        async with mmserve.AsyncClient(url, batch_size=4, max_in_flight=3) as client:
            health = await client.health()
            return health, await client.embed_texts(TEXTS), await client.embed_images(gallery)

    health, texts, images = asyncio.run(run())
    assert health.ready and all(health.models.values())
    with mmserve.Client(url) as client:
        assert cosines(texts, client.embed_texts(TEXTS)).min() >= 0.99999
        assert cosines(images, client.embed_images(gallery)).min() >= 0.99999


def test_text_tower_cut_gives_identical_embeddings(server, local_embedder):
    """The tower cuts batches after the longest end-of-text: same result as all 77 positions in-process."""
    ids = local_embedder.tokenizer(TEXTS)
    full_width = local_embedder.text_tower(ids)  # no cut: every row at the full context length
    with mmserve.Client(server.grpc_url) as client:
        served = client.embed_texts(TEXTS)  # one batch, cut at the longest text
        alone = np.concatenate([client.embed_texts([t]) for t in TEXTS])  # each cut at its own length
    assert np.abs(served - full_width).max() < 1e-5
    assert np.abs(alone - full_width).max() < 1e-5
    assert length_buckets(77) == [8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64, 68, 72, 76, 77]


def test_concurrent_requests_form_dynamic_batches(server, gallery):
    images = [p.read_bytes() for p in gallery]
    with mmserve.Client(server.grpc_url, max_in_flight=16, batch_size=1) as client:
        before = batch_counts(client.statistics())
        client.embed_texts([f"a red circle number {i}" for i in range(48)])
        client.embed_images(images * 4)
        after = batch_counts(client.statistics())
    for model in ("embed_text", "embed_image"):  # the models that hold the towers
        grown = {size: after[model].get(size, 0) - before[model].get(size, 0) for size in after[model]}
        assert any(size > 1 and count > 0 for size, count in grown.items()), (model, grown)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_inputs_fail_alone_while_concurrent_requests_succeed(server, local_embedder, gallery, protocol):
    good = [p.read_bytes() for p in gallery]
    expected = local_embedder.embed_images(good)
    expected_text = local_embedder.embed_texts(["a red circle"])
    truncated = good[0][: len(good[0]) // 3]
    bad_images = {
        "corrupt": (b"\xff\xd8\xff\xe0" + b"\x13" * 4000, "image 0", {"invalid", "corrupt"}),
        "truncated": (truncated, "image 0", {"corrupt"}),
        "oversized": (b"\x89PNG" + bytes(1_100_000), "exceeds the limit", {"too_large"}),
        "bomb": (png_bomb(), "pixels", {"too_many_pixels"}),
        "not an image": (b"GIF89a not supported", "image 0", {"unsupported_format"}),
    }
    url = url_for(server, protocol)
    with mmserve.Client(url, retries=0) as client, ThreadPoolExecutor(12) as pool:
        good_jobs = [pool.submit(client.embed_images, good) for _ in range(4)]
        text_jobs = [pool.submit(client.embed_texts, ["a red circle"]) for _ in range(4)]
        bad_jobs = {name: pool.submit(client.embed_images, [data]) for name, (data, *_) in bad_images.items()}
        bad_text = pool.submit(client.embed_texts, [b"caf\xe9 au lait".decode("latin-1")])  # valid: control
        for job in good_jobs:
            assert cosines(job.result(), expected).min() >= 0.9999
        for job in text_jobs:
            assert cosines(job.result(), expected_text).min() >= 0.9999
        assert bad_text.result().shape == (1, local_embedder.dim)
        for name, job in bad_jobs.items():
            with pytest.raises(mmserve.InvalidInputError) as caught:
                job.result()
            assert bad_images[name][1] in str(caught.value), (name, str(caught.value))
            assert caught.value.index == 0 and caught.value.item == bad_images[name][0]
            assert caught.value.code in bad_images[name][2], (name, caught.value.code)
        assert client.health().ready


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_invalid_utf8_and_wrong_shapes_get_clear_errors(server, local_embedder, protocol):
    """Raw tritonclient requests (the SDK never sends these): the server names the problem."""
    if protocol == "grpc":
        import tritonclient.grpc as tc
        address = server.grpc_url.removeprefix("grpc://")
    else:
        import tritonclient.http as tc
        address = server.http_url.removeprefix("http://")
    from tritonclient.utils import InferenceServerException

    from mmserve.errors import from_wire

    def infer(model, name, array, datatype):
        tensor = tc.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        client = tc.InferenceServerClient(address)  # one per call: the HTTP client is not thread-safe
        try:
            return client.infer(model, [tensor]).as_numpy("embedding")
        finally:
            client.close()

    # (model, input, array, datatype, what the message says, the per-item errors it carries: (index, code))
    cases = [
        ("embed_text", "text", np.array([[b"ok"], [b"\xc3\x28 bad"]], dtype=np.object_), "BYTES",
         "invalid UTF-8 at byte 0", [(1, "invalid_utf8")]),
        ("image_tower", "pixels", np.zeros((1, 32, 32, 3), np.uint8), "UINT8", "unexpected shape", None),
        ("embed_text", "text", np.array([[b"a", b"b"]], dtype=np.object_), "BYTES", "unexpected shape", None),
        ("text_tower", "token_ids", np.array([[5, 6], [5, 10**6]], np.int32), "INT32", "token ids must be in",
         [(1, "invalid_tokens")]),
        ("text_tower", "token_ids", np.zeros((1, 100), np.int32), "INT32", "this model takes 1 to 77",
         [(None, "invalid_tokens")]),
        ("embed_image", "image", np.array([[b"GIF89a"], [b""]], dtype=np.object_), "BYTES", "unsupported format",
         [(0, "unsupported_format"), (1, "empty")]),
    ]
    with ThreadPoolExecutor(len(cases) + 2) as pool:
        good = [pool.submit(infer, "embed_text", "text", np.array([[b"a red circle"]], dtype=np.object_), "BYTES")
                for _ in range(2)]
        jobs = [(pool.submit(infer, *case[:4]), *case[4:]) for case in cases]
        for job, expected_message, expected_items in jobs:
            with pytest.raises(InferenceServerException) as caught:
                job.result()
            message = caught.value.message()
            assert expected_message in message, message
            items = from_wire(message)
            assert (items and [(e.index, e.code.value) for e in items]) == expected_items, message
        reference = local_embedder.embed_texts(["a red circle"])
        for job in good:
            assert cosines(job.result(), reference).min() >= 0.9999
    client = tc.InferenceServerClient(address)
    assert client.is_server_ready()
    client.close()


def test_encoded_items_and_tower_inputs_share_a_batch(server, local_embedder, gallery):
    """embed_image serves encoded images and (through the image_tower ensemble) pixels in the same dynamic
    batches, embed_text texts and token ids; each answer matches in-process. Both inputs at once: an error."""
    from tritonclient.utils import InferenceServerException

    from mmserve.client import ClientOptions, Transport
    from mmserve.errors import from_wire

    images = [p.read_bytes() for p in gallery[:4]]
    pixels = local_embedder.images.decode(images)[0]["pixels"]
    tokens = local_embedder.texts.tokenize(TEXTS[:4])
    options = ClientOptions(url=server.grpc_url)

    def call(job):
        transport = Transport(options)  # one per call: tritonclient's clients are not shared across threads here
        try:
            return transport.infer(*job)
        finally:
            transport.close()

    jobs = [("embed_image", "image", np.array([[b] for b in images], dtype=np.object_), "BYTES"),
            ("image_tower", "pixels", pixels, "UINT8"),
            ("embed_text", "text", np.array([[t.encode()] for t in TEXTS[:4]], dtype=np.object_), "BYTES"),
            ("text_tower", "token_ids", tokens["token_ids"], "INT32")] * 3
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(call, jobs))
    expected_images, expected_texts = local_embedder.embed_images(images), local_embedder.embed_texts(TEXTS[:4])
    for (model, *_), answer in zip(jobs, answers):
        expected = expected_images if model in ("embed_image", "image_tower") else expected_texts
        assert cosines(answer, expected).min() >= 0.9999, model

    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))
    both = [tc.InferInput("image", [1, 1], "BYTES"), tc.InferInput("pixels", [1, *pixels.shape[1:]], "UINT8")]
    both[0].set_data_from_numpy(np.array([[images[0]]], dtype=np.object_))
    both[1].set_data_from_numpy(pixels[:1])
    with pytest.raises(InferenceServerException) as caught:
        client.infer("embed_image", both)
    assert [(e.index, e.code.value) for e in from_wire(caught.value.message()) or []] == [(None, "invalid")], \
        caught.value.message()
    with pytest.raises(InferenceServerException, match="0 inputs"):  # neither: Triton refuses it itself
        client.infer("embed_image", [])
    assert client.is_server_ready()
    client.close()


def test_served_text_is_tokenized_as_open_clip_with_ftfy(server, local_embedder):
    """Curly quotes, ligatures and mojibake: the server's embedding is the one of open_clip's own token ids."""
    from mmserve.dev.training import reference_tokenizer
    from mmserve.modalities.text import trim_padding

    texts = ["don\u2019t smart quotes \u201chere\u201d", "\ufb01ne print", "caf\u00c3\u00a9 au lait", "plain ascii"]
    ids = reference_tokenizer()[0](texts, context_length=77).numpy().astype(np.int32)
    expected = local_embedder.text_tower(trim_padding(ids, local_embedder.info.eos_token_id))
    with mmserve.Client(server.grpc_url) as client:
        assert cosines(client.embed_texts(texts), expected).min() >= 0.9999
    assert cosines(local_embedder.embed_texts(texts), expected).min() >= 0.9999


def test_plain_tritonclient_embeds_a_jpeg_and_a_text(server, local_embedder, gallery):
    """No mmserve code on the request path: the endpoints are standard Triton."""
    import tritonclient.http as httpclient

    jpeg = next(p for p in gallery if p.suffix == ".jpg").read_bytes()
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    image = httpclient.InferInput("image", [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[jpeg]], dtype=np.object_))
    image_embedding = client.infer("embed_image", [image]).as_numpy("embedding")
    client.close()
    assert cosines(image_embedding, local_embedder.embed_images([jpeg])).min() >= 0.9999

    # The README's curl example: JSON over HTTP, no client library at all.
    body = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["a red circle"]}]}
    request = urllib.request.Request(
        f"{server.http_url}/v2/models/embed_text/infer", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        output = json.load(response)["outputs"][0]
    text_embedding = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    assert cosines(text_embedding, local_embedder.embed_texts(["a red circle"])).min() >= 0.9999


def test_admin_apis_are_closed_and_metrics_are_served(server):
    request = urllib.request.Request(f"{server.http_url}/v2/repository/index", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code in (401, 403)
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        assert b"nv_inference_request_success" in response.read()


def test_client_errors_are_typed(server, tmp_path, port_factory):
    with mmserve.Client(server.grpc_url) as client:
        with pytest.raises(mmserve.InvalidInputError, match="cannot read"):
            client.embed_images([tmp_path / "missing.jpg"])
        with pytest.raises(mmserve.InvalidInputError, match="expected str"):
            client.embed_texts([b"bytes are not text"])
        with pytest.raises(mmserve.InvalidInputError, match="uint8"):
            client.embed_images([np.zeros((10, 10, 3), np.float32)])
        with pytest.raises(mmserve.InvalidInputError) as caught:
            client.embed_images([b"x", b""], preprocess="local")
        assert caught.value.index == 0
        assert client.embed_texts([]).shape == (0, client.model_summary().embedding_dim)
    with mmserve.Client(f"grpc://127.0.0.1:{port_factory()}", retries=1, backoff_s=0.01, timeout_s=5) as client:
        with pytest.raises(mmserve.ServerUnavailableError):
            client.embed_texts(["a red circle"])
        assert not client.health().live
    with pytest.raises(ValueError, match="server URL"):
        mmserve.Client("ftp://nowhere/x/y")



def test_model_processes_do_not_load_torch(server, gallery):
    """Serving never imports torch: no Python-backend process has any of torch's files mapped."""
    from mmserve.serving.supervisor import model_processes

    with mmserve.Client(server.grpc_url) as client:
        client.embed_images(gallery[:2])
        client.embed_texts(["a red circle"])
    stubs = model_processes(server.triton.process.pid)
    # The towers' ensembles (image_tower, text_tower) run inside embed_image and embed_text: no process of their own.
    audio = ["embed_audio"] if (server.triton.repository / "embed_audio").is_dir() else []
    assert sorted(stubs) == sorted(["embed_image", "embed_text", "embed_video", "image_preprocess", "text_tokenize",
                                    *audio]), stubs
    compiled_core = f"/mmserve/_C.cpython-{sys.version_info.major}{sys.version_info.minor}"
    for model, (pid,) in stubs.items():
        maps = open(f"/proc/{pid}/maps").read()
        # Real mappings: every model decodes or tokenizes with mmserve's compiled core (sounds: libsndfile and
        # numpy instead); only those that hold a tower load OpenVINO; none loads torch.
        assert (compiled_core in maps) == (model != "embed_audio"), model
        assert ("libsndfile" in maps) == (model == "embed_audio"), model
        assert ("/openvino/" in maps) == model.startswith("embed_"), model
        assert "/torch/" not in maps, f"{model} (pid {pid}) mapped torch"


def test_load_generator_smoke(server, tmp_path):
    """`mmserve bench` for a few seconds against the test server: results, plots, server-side batches."""
    import subprocess

    results, plot = tmp_path / "results.json", tmp_path / "throughput.png"
    command = [sys.executable, "-m", "mmserve.cli", "bench", "--server", server.grpc_url, "--workload",
               "mixed", "--concurrency", "1,8", "--rate", "40", "--seconds", "1.5", "--json", str(results),
               "--plot", str(plot)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert run.returncode == 0, run.stderr
    steps = json.loads(results.read_text())
    assert [(s["mode"], s["concurrency"], s["offered_rate"]) for s in steps] == [
        ("closed", 1, None), ("closed", 8, None), ("open", None, 40.0)]
    for step in steps:
        assert step["errors"] == 0 and step["completed"] > 0 and step["p50_ms"] <= step["p99_ms"]
    assert steps[1]["mean_batch"]["embed_text"] > 1 or steps[1]["mean_batch"]["embed_image"] > 1
    assert plot.stat().st_size > 1000 and (tmp_path / "throughput-latency.png").stat().st_size > 1000


def test_a_killed_launcher_does_not_leave_tritonserver_running(triton_repository, bundled_settings, port_factory):
    import signal
    import subprocess
    import time

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from mmserve.serving.server import TritonServer\n"
        f"server = TritonServer(Path({str(triton_repository)!r}), http_port={port_factory()}, "
        f"grpc_port={port_factory()}, metrics_port={port_factory()}, "
        f"cache_dir=Path({str(bundled_settings.cache_dir)!r})).start()\n"
        "print(server.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    server_pid = int(launcher.stdout.readline())
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    launcher.stdout.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:  # gone, or a zombie waiting for whoever adopted it
            if open(f"/proc/{server_pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except FileNotFoundError:
            break
        time.sleep(0.2)
    else:
        os.kill(server_pid, signal.SIGKILL)
        raise AssertionError("tritonserver outlived its killed launcher")


def test_ctrl_c_stops_a_cli_command_with_status_130(server):
    import signal
    import subprocess
    import time

    def text_executions() -> int:  # embed_text's requests (an idle-model probe adds one now and then)
        with mmserve.Client(server.grpc_url) as client:
            stats = client.statistics("embed_text")["model_stats"][0]
        return int(stats["inference_stats"].get("success", {}).get("count", 0))

    before = text_executions()
    command = [sys.executable, "-m", "mmserve.cli", "bench", "--server", server.grpc_url, "--workload", "text",
               "--concurrency", "1", "--seconds", "60"]
    bench = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while text_executions() < before + 5:  # the load test is under way: its requests reach the server
        assert bench.poll() is None and time.monotonic() < deadline, bench.communicate()
        time.sleep(0.1)
    bench.send_signal(signal.SIGINT)
    _, stderr = bench.communicate(timeout=30)
    assert bench.returncode == 130, stderr
    assert stderr.rstrip().endswith("interrupted") and "Traceback" not in stderr
