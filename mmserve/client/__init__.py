"""Python client SDK for an mmserve Triton server (gRPC by default, HTTP by choice).

    with mmserve.Client("grpc://127.0.0.1:8001") as client:
        texts = client.embed_texts(["a red circle", "a small blue square"])   # float32 [2, D]
        images = client.embed_images(["photo.jpg", png_bytes, pil_image])      # float32 [3, D]
        video, = client.embed_videos(["clip.mp4"])      # .embedding [D], .segments [S, D], .times [S, 2]
        sound, = client.embed_audio(["bark.wav"])       # the same, per window

Inputs are split into requests of at most the server's batch size (and
`max_request_bytes`) and several requests are kept in flight, so Triton's
dynamic batcher sees enough work. Requests refused because the server is
unavailable, restarting a model, or its queue is full are retried with
exponential backoff; a bad input raises `InvalidInputError` naming the item
(`.index`, `.item`, `.code`, and `.errors` for every refused item).
`AsyncClient` offers the same API for asyncio.

A server started with API keys needs one (`api_key=`, or `MMSERVE_API_KEY`);
`grpcs://` and `https://` URLs use TLS and verify the server's certificate
(against the system's trust store, or `ca_cert=`); `client_cert=` and
`client_key=` answer a server that asks for client certificates.

Layout: `options` (ClientOptions), `transport` (the one gRPC/HTTP switch over
tritonclient), `core` (planning, errors, retries; no I/O), `sync` and `aio`
(the two faces).
"""

from mmserve.client.aio import AsyncClient
from mmserve.client.core import MODELS, Health, ModelSummary
from mmserve.client.options import DEFAULT_URL, ClientOptions
from mmserve.client.sync import Client
from mmserve.client.transport import Transport
from mmserve.errors import (
    AuthenticationError,
    InvalidInputError,
    MmserveError,
    OverloadedError,
    RequestTimeoutError,
    ServerUnavailableError,
)
from mmserve.modalities import SegmentedEmbedding
from mmserve.modalities.image import encode_image

__all__ = [
    "DEFAULT_URL", "MODELS", "AsyncClient", "AuthenticationError", "Client", "ClientOptions", "Health",
    "InvalidInputError", "MmserveError", "ModelSummary", "OverloadedError", "RequestTimeoutError",
    "SegmentedEmbedding", "ServerUnavailableError", "Transport", "encode_image",
]
