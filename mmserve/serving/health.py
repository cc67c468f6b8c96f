"""Health as the supervisor sees it, served over HTTP and gRPC on loopback (the front door routes probes here).

tritonserver reports a model READY while its model process is dead, so the
KServe v2 health endpoints are answered from `HealthState` instead:

- live: the supervisor is running its checks (a heartbeat younger than
  `HEARTBEAT_LIMIT_S`) and has not given up restarting;
- ready: live, tritonserver up and every model answering;
- a model ready: live, tritonserver up, the model and every model it chains
  (an ensemble's steps) answering.

HTTP answers 200, or 503 with a JSON body saying why; gRPC answers the
`ServerLive` / `ServerReady` / `ModelReady` messages of Triton's own protocol.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEARTBEAT_LIMIT_S = 10.0
_MODEL_READY_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/[^/]+)?/ready")


class HealthState:
    """Thread-safe: the supervisor writes it, the health service reads it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._steps: dict[str, tuple[str, ...]] = {}  # model -> the models it needs (itself included)
        self._down: dict[str, str] = {}  # model -> why it cannot answer
        self._triton_down: str | None = "tritonserver is starting"
        self._given_up: str | None = None
        self._heartbeat = time.monotonic()

    def set_models(self, steps: dict[str, tuple[str, ...]]) -> None:
        with self._lock:
            self._steps = dict(steps)

    def beat(self) -> None:
        with self._lock:
            self._heartbeat = time.monotonic()

    def triton_down(self, reason: str | None) -> None:
        """`None`: tritonserver is up."""
        with self._lock:
            self._triton_down = reason

    def model_down(self, model: str, reason: str | None) -> None:
        """`None`: the model answers again."""
        with self._lock:
            if reason is None:
                self._down.pop(model, None)
            else:
                self._down[model] = reason

    def give_up(self, reason: str) -> None:
        with self._lock:
            self._given_up = reason

    def live(self) -> tuple[bool, str]:
        with self._lock:
            return self._live()

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            serving, why = self._serving()
            if not serving:
                return False, why
            if not self._steps:
                return False, "no models loaded yet"
            if self._down:
                return False, "; ".join(f"{model}: {reason}" for model, reason in sorted(self._down.items()))
            return True, "ready"

    def model_ready(self, model: str) -> tuple[bool, str]:
        with self._lock:
            serving, why = self._serving()
            if not serving:
                return False, why
            if model not in self._steps:
                return False, f"unknown model {model!r}"
            for step in self._steps[model]:
                if step in self._down:
                    return False, f"{step}: {self._down[step]}"
            return True, "ready"

    def _serving(self) -> tuple[bool, str]:
        live, why = self._live()
        if live and self._triton_down:
            return False, self._triton_down
        return live, why

    def _live(self) -> tuple[bool, str]:
        if self._given_up:
            return False, self._given_up
        age = time.monotonic() - self._heartbeat
        if age > HEARTBEAT_LIMIT_S:
            return False, f"the supervisor has not checked the server for {age:.0f} s"
        return True, "live"


class HealthService:
    """The HTTP and gRPC health endpoints for `state`, on loopback ports (0: any free one)."""

    def __init__(self, state: HealthState, http_port: int = 0, grpc_port: int = 0) -> None:
        self.state = state
        self._http = ThreadingHTTPServer(("127.0.0.1", http_port), _handler_for(state))
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        self._grpc, self.grpc_port = _grpc_server(state, grpc_port)
        self._thread = threading.Thread(target=self._http.serve_forever, name="mmserve-health", daemon=True)

    def start(self) -> HealthService:
        self._thread.start()
        self._grpc.start()
        return self

    def stop(self) -> None:
        self._grpc.stop(grace=None)
        self._http.shutdown()
        self._http.server_close()


def _handler_for(state: HealthState):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/v2/health/live":
                ok, why = state.live()
            elif path == "/v2/health/ready":
                ok, why = state.ready()
            elif (match := _MODEL_READY_PATH.fullmatch(path)) is not None:
                ok, why = state.model_ready(match.group(1))
            else:
                self._answer(404, {"error": "no such health endpoint"})
                return
            self._answer(200, None) if ok else self._answer(503, {"error": why})

        do_HEAD = do_GET  # noqa: N815

        def _answer(self, status: int, body: dict | None) -> None:
            data = b"" if body is None else json.dumps(body).encode() + b"\n"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def log_message(self, *args) -> None:  # probes every few seconds: not worth a log line each
            pass

    return Handler


def _grpc_server(state: HealthState, port: int):
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
        def ServerLive(self, request, context):  # noqa: N802 - the protocol's names
            return service_pb2.ServerLiveResponse(live=state.live()[0])

        def ServerReady(self, request, context):  # noqa: N802
            return service_pb2.ServerReadyResponse(ready=state.ready()[0])

        def ModelReady(self, request, context):  # noqa: N802
            return service_pb2.ModelReadyResponse(ready=state.model_ready(request.name)[0])

    server = grpc.server(ThreadPoolExecutor(4, thread_name_prefix="mmserve-health-grpc"))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the gRPC health service to 127.0.0.1:{port}")
    return server, bound
