"""How a client reaches the server: URL, credentials, timeouts, retries and request sizes."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_URL = "grpc://127.0.0.1:8001"


class ClientOptions(BaseModel):
    """How a client talks to the server; every field is a keyword of `Client(...)`."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(default=DEFAULT_URL, description="grpc://, grpcs:// (TLS), http:// or https:// + HOST:PORT; "
                     "several replicas comma-separated (the client balances over them).")
    api_key: str | None = Field(
        default_factory=lambda: os.environ.get("MMSERVE_API_KEY") or None,
        description="Sent as 'authorization: Bearer KEY' (default: MMSERVE_API_KEY).", repr=False)
    ca_cert: Path | None = Field(default=None, description="TLS: CA file to verify the server (default: system).")
    client_cert: Path | None = Field(default=None, description="TLS: this client's certificate (mutual TLS).")
    client_key: Path | None = Field(default=None, description="TLS: the key of client_cert.")
    timeout_s: float = Field(default=60.0, gt=0, description="Per request.")
    retries: int = Field(default=6, ge=0, description="Retries on unavailable or overloaded, with backoff.")
    backoff_s: float = Field(default=0.05, ge=0, description="First retry delay; doubles each retry (jittered).")
    max_in_flight: int = Field(default=4, ge=1, description="Concurrent requests per embed call.")
    batch_size: int | None = Field(default=None, ge=1, description="Items per request; default the server's max.")
    max_request_bytes: int = Field(
        default=32 << 20, ge=1, description="Encoded images per request add up to at most this (one larger image "
        "goes alone); below the server's body limit (80 MiB by default).")
    preprocess: Literal["server", "local"] = Field(
        default="server", description="'local': decode and resize in this process (C++), send uint8 pixels."
    )
    exact_preprocessing: bool = Field(default=False, description="Local preprocessing: bit-exact Pillow mode.")
    eject_s: float = Field(default=1.0, gt=0, description="Replicas: how long one that failed 'unavailable' is "
                           "left out (doubled per further failure, 30 s at most) before a health check re-admits it.")
    health_interval_s: float = Field(default=1.0, gt=0, description="Replicas: how often each is asked whether it "
                                     "is ready (only with more than one).")

    @field_validator("url", mode="before")
    @classmethod
    def _known_scheme(cls, url: object) -> object:
        if isinstance(url, (list, tuple)):
            url = ",".join(str(u) for u in url)
        if isinstance(url, str):
            for one in url.split(","):
                split_url(one.strip())
            url = ",".join(one.strip() for one in url.split(","))
        return url

    @property
    def urls(self) -> tuple[str, ...]:
        """Each replica's URL (one for a single server)."""
        return tuple(self.url.split(","))

    @property
    def protocol(self) -> Literal["grpc", "http"]:
        return split_url(self.urls[0])[0]

    @property
    def tls(self) -> bool:
        return split_url(self.urls[0])[1]

    @property
    def address(self) -> str:
        """HOST:PORT of the (first) server."""
        return split_url(self.urls[0])[2]

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def split_url(url: str) -> tuple[Literal["grpc", "http"], bool, str]:
    """(protocol, TLS, HOST:PORT) of grpc://, grpcs://, http:// or https:// URLs (no scheme: gRPC)."""
    match = re.fullmatch(r"(?:(grpcs?|https?)://)?([^/]+?)/?", url)
    if match is None:
        raise ValueError(f"server URL must look like grpc://HOST:PORT or http://HOST:PORT (grpcs://, https:// "
                         f"for TLS), got {url!r}")
    scheme = match.group(1) or "grpc"
    return ("grpc" if scheme.startswith("grpc") else "http"), scheme.endswith("s"), match.group(2)
