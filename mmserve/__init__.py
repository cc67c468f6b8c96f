"""mmserve: multimodal (CLIP) embeddings served by Triton, with a vector index.

Importing the package is cheap: the client, runtimes (OpenVINO, ONNX Runtime)
and tritonclient load on first use, and torch only for training and export.
"""

from mmserve.errors import (
    AuthenticationError,
    ErrorCode,
    InvalidInputError,
    ItemError,
    MmserveError,
    OverloadedError,
    RequestTimeoutError,
    ServerUnavailableError,
)
from mmserve.models.clip import ClipModelInfo, default_model_dir

__version__ = "0.1.0"
__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ClipModelInfo",
    "ErrorCode",
    "InvalidInputError",
    "ItemError",
    "MmserveError",
    "OverloadedError",
    "RequestTimeoutError",
    "ServerUnavailableError",
    "__version__",
    "default_model_dir",
]
_CLIENT_NAMES = {"AsyncClient", "Client"}


def __getattr__(name: str):
    if name in _CLIENT_NAMES:
        from mmserve import client

        return getattr(client, name)
    raise AttributeError(f"module 'mmserve' has no attribute {name!r}")
