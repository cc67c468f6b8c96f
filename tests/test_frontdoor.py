"""The front door: every request found to crash or wedge tritonserver 2.51, sent to the running server.

Each one must get an HTTP (or gRPC) error of its own while tritonserver keeps running (same process: nothing
crashed and was quietly restarted), the server stays ready, and the next request is served. Outcomes against
tritonserver without the front door, measured when these were found, are in README, Operations.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import mmserve

INFER = "/v2/models/embed_text/infer"
IMAGE_INFER = "/v2/models/embed_image/infer"


def http_exchange(server, data: bytes, *, timeout: float = 20.0, pace: tuple[int, float] | None = None) -> bytes:
    """Send raw bytes to the front door's HTTP port; the response's status line, headers and body ('' if none)."""
    host, port = server.http_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            if pace is None:
                sock.sendall(data)
            else:
                for start in range(0, len(data), pace[0]):
                    sock.sendall(data[start : start + pace[0]])
                    time.sleep(pace[1])
        except OSError:
            pass  # refused mid-send (413 on a body still arriving): the answer is read below
        answer = b""
        try:
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                answer += chunk
                head, separator, body = answer.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                if separator and length and len(body) >= int(length.group(1)):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    return answer


def status_of(answer: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return int(match.group(1)) if match else None


def post(path: str, body: bytes, content_type: str | None = "application/json", extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: mmserve\r\nContent-Length: {len(body)}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return (head + extra + "\r\n").encode() + body


def text_request(text: str) -> bytes:
    return json.dumps({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]}).encode()


def binary_request(header: dict, data: bytes, header_length: int | None = None) -> bytes:
    encoded = json.dumps(header).encode()
    length = len(encoded) if header_length is None else header_length
    return post(INFER, encoded + data, "application/octet-stream", f"Inference-Header-Content-Length: {length}\r\n")


def chunked(path: str, body: bytes, chunk: int) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: mmserve\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    pieces = [f"{chunk:x}\r\n".encode() + body[i : i + chunk] + b"\r\n" for i in range(0, len(body), chunk)]
    return head.encode() + b"".join(pieces) + b"0\r\n\r\n"


def gzip_bomb(megabytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join(compressor.compress(zeros) for _ in range(megabytes)) + compressor.flush()


def text_field(header: str, value_bytes: int) -> str:
    return f"{header}: {'a' * value_bytes}\r\n"


# name -> (raw request, acceptable statuses; None: the connection is dropped without an answer)
HOSTILE_HTTP = {
    # Crashed tritonserver (SIGSEGV in libevhtp's query parser), on any path: curl --data-binary's default type.
    "6 MB x-www-form-urlencoded body to embed_text": (
        lambda: post(INFER, b"a=" + b"b" * 6_000_000, "application/x-www-form-urlencoded"), {413}),
    "6 MB x-www-form-urlencoded body to embed_image": (
        lambda: post(IMAGE_INFER, b"a=" + b"b" * 6_000_000, "application/x-www-form-urlencoded"), {413}),
    "6 MB x-www-form-urlencoded body to a health endpoint": (
        lambda: post("/v2/health/ready", b"a=b&" * 1_500_000, "application/x-www-form-urlencoded"), {501}),
    "1 MB x-www-form-urlencoded body of a=b pairs": (
        lambda: post(INFER, b"a=b&" * 250_000, "application/x-www-form-urlencoded"), {400, 500}),
    "x-www-form-urlencoded and JSON Content-Type headers at once": (
        lambda: post(INFER, b"a=b&" * 250_000, "application/json",
                     "Content-Type: application/x-www-form-urlencoded\r\n"), {400, 500}),
    # Crashed tritonserver: a million tiny chunks.
    "1,000,000 one-byte chunks": (lambda: chunked(INFER, b" " * 1_000_000, 1), {400, 500}),
    # Crashed tritonserver at about 105,000 levels (recursive JSON parser on an 8 MiB thread stack).
    "JSON nested 1,000,000 deep (2 MB)": (lambda: post(INFER, b"[" * 1_000_000 + b"]" * 1_000_000), {413}),
    "JSON nested 500,000 deep (1 MB)": (lambda: post(INFER, b"[" * 500_000 + b"]" * 500_000), {400, 500}),
    "JSON objects nested 200,000 deep": (lambda: post(INFER, b'{"a":' * 200_000 + b"1" + b"}" * 200_000),
                                         {400, 413, 500}),
    "binary extension whose JSON header nests 1,000,000 deep": (
        lambda: post(INFER, b"[" * 1_000_000, "application/octet-stream",
                     "Inference-Header-Content-Length: 1000000\r\n"), {400, 500}),
    # tritonserver inflated this in memory (1 GB for 1 MB sent, 7.5 s).
    "gzip bomb: 200 MB of zeros in 200 KB": (
        lambda: post(INFER, gzip_bomb(200), "application/json", "Content-Encoding: gzip\r\n"), {415}),
    # Refused here, answered by tritonserver before (multipart and text are not KServe content types).
    "multipart/form-data": (lambda: post(INFER, text_request("a"), "multipart/form-data; boundary=x"), {415}),
    "text/plain": (lambda: post(INFER, text_request("a"), "text/plain"), {415}),
    # The binary tensor extension, lying about sizes.
    "Inference-Header-Content-Length over the JSON limit": (
        lambda: binary_request({"inputs": []}, b"", header_length=50_000_000), {413}),
    "Inference-Header-Content-Length longer than the body": (
        lambda: binary_request({"inputs": []}, b"", header_length=5_000), {400}),
    "negative Inference-Header-Content-Length": (
        lambda: binary_request({"inputs": []}, b"", header_length=-5), {413}),
    "binary_data_size larger than the data": (
        lambda: binary_request({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES",
                                            "parameters": {"binary_data_size": 10_000_000}}]}, b"abcd"), {400}),
    "BYTES length prefix past the end of the data": (
        lambda: binary_request({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES",
                                            "parameters": {"binary_data_size": 8}}]},
                               (1 << 31).to_bytes(4, "little") + b"abcd"), {400}),
    "shape promising 64 items for one": (
        lambda: binary_request({"inputs": [{"name": "text", "shape": [64, 1], "datatype": "BYTES",
                                            "parameters": {"binary_data_size": 8}}]},
                               (4).to_bytes(4, "little") + b"abcd"), {400}),
    # Headers and request lines.
    "a 100 KB header": (lambda: f"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n{text_field('X-Big', 100_000)}\r\n"
                        .encode(), {400}),
    "10,000 headers": (lambda: b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n"
                       + b"".join(f"X-H{i}: v\r\n".encode() for i in range(10_000)) + b"\r\n", {400}),
    "a 1 MB query string": (lambda: f"GET /v2/health/ready?{'a=b&' * 250_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                            {414}),
    "a 1 MB model name": (lambda: f"GET /v2/models/{'m' * 1_000_000}/ready HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                          {414}),
    "Content-Length of 100 GB": (
        lambda: post(INFER, b"{}").replace(b"Content-Length: 2", b"Content-Length: 100000000000"), {413}),
    "a NUL byte in the request line": (lambda: b"GET /v2/health/ready\0 HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "HTTP/0.9": (lambda: b"GET /v2/health/ready\r\n", {None}),
}


def served_and_unharmed(server, triton_pid: int) -> None:
    """Nothing crashed (same tritonserver, no restart), the server is ready and serves the next request."""
    import urllib.request

    assert server.triton.process.pid == triton_pid and server.triton.alive()
    assert server.events == [], server.events
    with urllib.request.urlopen(f"{server.http_url}/v2/health/ready", timeout=10) as response:
        assert response.status == 200
    with mmserve.Client(server.grpc_url, retries=0) as client:
        assert client.embed_texts(["a red circle"]).shape[0] == 1


@pytest.fixture(scope="module")
def triton_pid(server):
    served_and_unharmed(server, server.triton.process.pid)
    return server.triton.process.pid


@pytest.mark.parametrize("case", list(HOSTILE_HTTP))
def test_a_hostile_http_request_gets_an_error_and_harms_nothing(server, triton_pid, case):
    make, expected = HOSTILE_HTTP[case]
    answer = http_exchange(server, make())
    assert status_of(answer) in expected, answer[:300]
    served_and_unharmed(server, triton_pid)


def test_a_body_shorter_than_its_content_length_is_dropped_after_the_body_timeout(server, triton_pid):
    started = time.monotonic()
    answer = http_exchange(server, post(INFER, b"{").replace(b"Content-Length: 1", b"Content-Length: 100000"))
    assert status_of(answer) in (None, 408), answer[:300]
    assert time.monotonic() - started < server.options.body_timeout_s + 5
    served_and_unharmed(server, triton_pid)


def test_slow_senders_and_idle_connections_do_not_delay_others(server, triton_pid):
    """500 idle connections and 50 clients dribbling a request a byte at a time: others are served at once."""
    host, port = server.http_url.removeprefix("http://").rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(500)]
    stop = threading.Event()

    def dribble() -> None:
        request = post(INFER, text_request("slow"))
        try:
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                for byte in request:
                    if stop.is_set():
                        return
                    sock.send(bytes([byte]))
                    time.sleep(0.05)
        except OSError:
            pass  # cut off by the header timeout, as it should be

    slow = [threading.Thread(target=dribble, daemon=True) for _ in range(50)]
    try:
        for thread in slow:
            thread.start()
        time.sleep(0.5)
        with mmserve.Client(server.http_url, retries=0) as client:
            for _ in range(5):
                started = time.monotonic()
                assert client.embed_texts(["a red circle"]).shape[0] == 1
                assert time.monotonic() - started < 1.0
    finally:
        stop.set()
        for sock in idle:
            sock.close()
        for thread in slow:
            thread.join(10)
    served_and_unharmed(server, triton_pid)


def test_too_many_requests_in_flight_are_refused_at_once(server, triton_pid):
    """max_in_flight requests still arriving (slow bodies): the next one gets 503 within milliseconds."""
    host, port = server.http_url.removeprefix("http://").rsplit(":", 1)
    holders = []
    try:
        for _ in range(server.max_in_flight):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(post(INFER, b"x" * 10)[:-10].replace(b"Content-Length: 10", b"Content-Length: 1000"))
            holders.append(sock)
        time.sleep(0.3)
        started = time.monotonic()
        answer = http_exchange(server, post(INFER, text_request("one too many")))
        refused_in = time.monotonic() - started
        assert status_of(answer) == 503, answer[:300]
        assert b"Retry-After" in answer and refused_in < 0.1
    finally:
        for sock in holders:
            sock.close()
    served_and_unharmed(server, triton_pid)


def test_readme_curl_and_plain_tritonclient_work_through_the_front_door(server, local_embedder, gallery):
    """curl -d (x-www-form-urlencoded, as curl sends it) and tritonclient's binary extension, unchanged."""
    import subprocess

    import tritonclient.http as httpclient

    body = '{"inputs":[{"name":"text","shape":[1,1],"datatype":"BYTES","data":["a red circle"]}]}'
    run = subprocess.run(["curl", "-s", f"{server.http_url}/v2/models/embed_text/infer", "-d", body],
                         capture_output=True, text=True, timeout=30)
    output = json.loads(run.stdout)["outputs"][0]
    embedding = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    expected = local_embedder.embed_texts(["a red circle"])
    assert float(embedding[0] @ expected[0]) >= 0.9999

    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    try:
        image = httpclient.InferInput("image", [2, 1], "BYTES")
        image.set_data_from_numpy(np.array([[p.read_bytes()] for p in gallery[:2]], dtype=np.object_))
        served = client.infer("embed_image", [image]).as_numpy("embedding")
        assert client.is_model_ready("embed_image") and client.get_model_metadata("embed_text")["name"]
    finally:
        client.close()
    assert (served * local_embedder.embed_images(gallery[:2])).sum(axis=1).min() >= 0.9999


# -- gRPC -------------------------------------------------------------------------------------------------------


def grpc_call(server, method: str, payload: bytes, *, compression=None, timeout: float = 60.0):
    """A raw unary call (bytes in, bytes out) to the front door's gRPC port: (status code name, details)."""
    import grpc

    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(server.grpc_url.removeprefix("grpc://"), options=options) as channel:
        call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}", request_serializer=None,
                                   response_deserializer=None)
        try:
            call(payload, timeout=timeout, compression=compression)
        except grpc.RpcError as error:
            return error.code().name, error.details() or ""
    return "OK", ""


def infer_message(text_bytes: bytes, model: str = "embed_text") -> bytes:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "text", "BYTES"
    tensor.shape.extend([1, 1])
    request.raw_input_contents.append(len(text_bytes).to_bytes(4, "little") + text_bytes)
    return request.SerializeToString()


def test_grpc_refuses_oversized_compressed_and_malformed_messages(server, triton_pid):
    import grpc

    cases = {
        "100 MB message (over the 80 MiB limit)": (
            lambda: grpc_call(server, "ModelInfer", infer_message(bytes(100 << 20))), "RESOURCE_EXHAUSTED"),
        # tritonserver inflated this (1 GB from 1 MB) and the tokenizer process died of it.
        "gzip-compressed message": (
            lambda: grpc_call(server, "ModelInfer", infer_message(bytes(8 << 20)), compression=grpc.Compression.Gzip),
            "UNIMPLEMENTED"),
        "random bytes": (
            lambda: grpc_call(server, "ModelInfer", np.random.default_rng(0).bytes(100_000)), "INTERNAL"),
        "truncated message": (lambda: grpc_call(server, "ModelInfer", infer_message(b"a red circle")[:-7]), "INTERNAL"),
        # A 60 MB text once held the tokenizer for 11 s (300 MB: 97 s); now refused by its size.
        "a 60 MB text": (lambda: grpc_call(server, "ModelInfer", infer_message(b"a" * (60 << 20))),
                         "INVALID_ARGUMENT"),
        "no such method": (lambda: grpc_call(server, "NoSuchMethod", b""), "UNIMPLEMENTED"),
    }
    for name, (call, expected) in cases.items():
        started = time.monotonic()
        code, details = call()
        assert code == expected, (name, code, details)
        assert time.monotonic() - started < 30, name
        served_and_unharmed(server, triton_pid)


def test_a_text_over_the_size_limit_fails_alone(server, local_embedder):
    """The per-text limit names the item; the other requests of the same batch are served."""
    with mmserve.Client(server.grpc_url, retries=0) as client, ThreadPoolExecutor(6) as pool:
        good = [pool.submit(client.embed_texts, ["a red circle"]) for _ in range(4)]
        huge = pool.submit(client.embed_texts, ["a red circle", "x" * ((64 << 10) + 1)])
        with pytest.raises(mmserve.InvalidInputError, match="text 1: 65537 bytes exceeds the limit of 65536"):
            huge.result()
        expected = local_embedder.embed_texts(["a red circle"])
        for job in good:
            assert float(job.result()[0] @ expected[0]) >= 0.9999
