"""Typed errors, and how a per-item error travels from a Triton model to the client.

A model that refuses some items of a request answers INVALID_ARGUMENT with a
JSON payload instead of prose:

    {"errors": [{"index": 3, "code": "corrupt", "message": "corrupt JPEG: premature end of data"}]}

`index` is the item's position in that request (null when the whole request is
at fault, for example a tensor of the wrong shape); the SDK maps it back to the
caller's list and raises `InvalidInputError` with `.index`, `.item`, `.code`
and, for every refused item, `.errors`. Nobody parses the message text.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from enum import StrEnum


class ErrorCode(StrEnum):
    """Why an item was refused (stable strings: clients may branch on them)."""

    EMPTY = "empty"  # no bytes
    TOO_LARGE = "too_large"  # over a size limit (encoded image, text)
    UNSUPPORTED_FORMAT = "unsupported_format"  # not a format the server decodes
    INVALID = "invalid"  # not a valid file of its format
    CORRUPT = "corrupt"  # damaged or truncated data
    TOO_MANY_PIXELS = "too_many_pixels"  # a decompression bomb or absurd dimensions
    TOO_LONG = "too_long"  # a video or sound over the duration limit
    TOO_MANY_FRAMES = "too_many_frames"  # a video that needs more decoding than allowed (absurd frame rates)
    INVALID_UTF8 = "invalid_utf8"
    WRONG_TYPE = "wrong_type"  # not str / bytes / an image object
    INVALID_TOKENS = "invalid_tokens"  # token ids outside the vocabulary, bad lengths or shapes
    UNREADABLE = "unreadable"  # a file the client could not read
    INTERNAL = "internal"


@dataclasses.dataclass(frozen=True)
class ItemError:
    index: int | None  # None: the request as a whole
    code: ErrorCode
    message: str

    def describe(self, kind: str = "item") -> str:
        return self.message if self.index is None else f"{kind} {self.index}: {self.message}"


def to_wire(errors: list[ItemError]) -> str:
    """The error message a model sends for the refused items of one request."""
    return json.dumps({"errors": [{"index": e.index, "code": e.code.value, "message": e.message}
                                  for e in errors]})


def from_wire(message: str) -> list[ItemError] | None:
    """The per-item errors inside an error message (Triton may prefix it, "in ensemble 'embed_image', ..."),
    or None when it carries none."""
    start = message.find('{"errors"')
    if start < 0:
        return None
    try:
        payload, _ = json.JSONDecoder().raw_decode(message[start:])
        return [ItemError(None if e.get("index") is None else int(e["index"]), _code(e.get("code")),
                          str(e.get("message", "")))
                for e in payload["errors"]]
    except (ValueError, KeyError, TypeError):
        return None


def _code(value) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.INTERNAL


class MmserveError(Exception):
    """Base class of the client's errors."""


class InvalidInputError(MmserveError, ValueError):
    """The server (or local preprocessing) refused an input.

    `index` and `item` name the first refused item of the caller's list when known, `code` says why
    (an `ErrorCode`), and `errors` lists every refused item of the request (indices in the caller's list).
    """

    def __init__(self, message: str, index: int | None = None, item: object = None,
                 code: ErrorCode | None = None, errors: list[ItemError] | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.item = item
        self.code = code
        self.errors = errors or []

    @classmethod
    def for_items(cls, kind: str, errors: list[ItemError],
                  items: Sequence[object] | Mapping[int, object] | None = None) -> InvalidInputError:
        """One error for the refused items of a batch, naming each ("image 3: corrupt JPEG ...")."""
        first = errors[0]
        item = None if first.index is None or items is None else items[first.index]
        return cls("; ".join(e.describe(kind) for e in errors), first.index, item, first.code, errors)


class ServerUnavailableError(MmserveError, ConnectionError):
    """The server cannot be reached, is not ready or is restarting a model (after retries)."""


class OverloadedError(MmserveError):
    """The server's queue stayed full (after retries): slow down or add capacity."""


class RequestTimeoutError(MmserveError, TimeoutError):
    """No answer within the client's timeout."""


class AuthenticationError(MmserveError, PermissionError):
    """The server wants an API key (or client certificate) and this one is missing or wrong."""
