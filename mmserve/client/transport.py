"""The one place that tells gRPC from HTTP.

tritonclient has four clients (gRPC or HTTP, blocking or asyncio) whose
methods differ in keywords (`as_json`, `client_timeout`) and in the shape of
what they return. `Transport` puts one interface over all four: a method
returns the value on a blocking transport and an awaitable of the same value
on an asyncio one, so the sync and async clients, the load generator and the
CLI share every call.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mmserve.client.options import ClientOptions


def _then(value: Any, then: Callable[[Any], Any]) -> Any:
    """`then(value)`, or, for an awaitable, an awaitable of it."""
    if inspect.isawaitable(value):
        async def chained():
            return then(await value)

        return chained()
    return then(value)


class Transport:
    """A tritonclient client for `options` (protocol and TLS from the URL, credentials, timeouts)."""

    def __init__(self, options: ClientOptions, *, aio: bool = False, **extra: Any) -> None:
        self.options, self.aio = options, aio
        self.grpc = options.protocol == "grpc"
        self.tc = importlib.import_module(f"tritonclient.{options.protocol}{'.aio' if aio else ''}")
        self.client = self._connect(extra)
        self._headers = options.headers
        self._timeout = {"client_timeout": options.timeout_s} if self.grpc else {}
        self._json = {"as_json": True} if self.grpc else {}

    def infer(self, model: str, input_name: str, array: np.ndarray, datatype: str,
              output: str | tuple[str, ...] = "embedding"):
        """One inference of one input tensor; the output as numpy (a tuple of them for a tuple of names)."""
        tensor = self.tc.InferInput(input_name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        names = (output,) if isinstance(output, str) else output
        call = self.client.infer(model, [tensor], outputs=[self.tc.InferRequestedOutput(name) for name in names],
                                 headers=self._headers, **self._timeout)
        if isinstance(output, str):
            return _then(call, lambda result: result.as_numpy(output))
        return _then(call, lambda result: tuple(result.as_numpy(name) for name in names))

    def model_config(self, name: str):
        """The model's config as a dict (the JSON form of model_config.proto)."""
        call = self.client.get_model_config(name, headers=self._headers, **self._json, **self._timeout)
        return _then(call, lambda config: config["config"] if self.grpc else config)

    def statistics(self, model: str = ""):
        """Triton's inference statistics (per model: counts, batch sizes, queue and compute times)."""
        return self.client.get_inference_statistics(model, headers=self._headers, **self._json)

    def server_live(self):
        return self.client.is_server_live(headers=self._headers)

    def server_ready(self):
        return self.client.is_server_ready(headers=self._headers)

    def server_ready_within(self, seconds: float):
        """Readiness with its own deadline (gRPC; HTTP uses the connection's timeouts)."""
        if self.grpc:
            return self.client.is_server_ready(headers=self._headers, client_timeout=seconds)
        return self.client.is_server_ready(headers=self._headers)

    def model_ready(self, name: str):
        return self.client.is_model_ready(name, headers=self._headers)

    def close(self):
        return self.client.close()

    def _connect(self, extra: dict[str, Any]):
        options, tls = self.options, self.options.tls
        if self.grpc:
            if tls:
                extra = {"ssl": True, "root_certificates": _path(options.ca_cert),
                         "private_key": _path(options.client_key), "certificate_chain": _path(options.client_cert),
                         **extra}
            return self.tc.InferenceServerClient(options.address, **extra)
        if self.aio:
            if tls:
                extra = {"ssl": True, "ssl_context": ssl_context(options), **extra}
            return self.tc.InferenceServerClient(options.address, conn_timeout=options.timeout_s, **extra)
        if tls:
            ssl_options: dict[str, str] = {}
            if options.ca_cert is not None:
                ssl_options["ca_certs"] = str(options.ca_cert)
            if options.client_cert is not None:
                ssl_options.update(certfile=str(options.client_cert),
                                   keyfile=str(options.client_key or options.client_cert))
            extra = {"ssl": True, "ssl_options": ssl_options, **extra}
        return self.tc.InferenceServerClient(options.address, connection_timeout=options.timeout_s,
                                             network_timeout=options.timeout_s, **extra)


def ssl_context(options: ClientOptions):
    """An SSL context that verifies the server (against ca_cert, or the system's store) and presents client_cert."""
    import ssl

    context = ssl.create_default_context(cafile=_path(options.ca_cert))
    if options.client_cert is not None:
        context.load_cert_chain(str(options.client_cert), _path(options.client_key))
    return context


def grpc_credentials(options: ClientOptions):
    """gRPC channel credentials for a grpcs:// URL, from the same options."""
    import grpc

    def read(path: Path | None) -> bytes | None:
        return None if path is None else Path(path).read_bytes()

    return grpc.ssl_channel_credentials(read(options.ca_cert), read(options.client_key), read(options.client_cert))


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)
