"""The HTTP API: an ASGI app (FastAPI on uvicorn) in front of Triton, calling it over gRPC through the async SDK.

    app = create_app(ApiSettings(server="grpc://127.0.0.1:8001", indexes={"photos": "photos.index"}))

Routes (README, HTTP API): `POST /v1/embeddings` (OpenAI's schema), `POST /v1/search`, `POST /v1/classify`,
`POST /v1/rank`, `GET /v1/indexes`, `POST /v1/indexes/{name}/items`, `DELETE /v1/indexes/{name}/items/{key}`,
`GET /v1/indexes/{name}/items/{key}/image` or `/media` (the source file: a thumbnail, a video, a sound;
only from allowed roots), `GET /v1/models`,
`GET /health`, `GET /metrics` (Prometheus), `GET /openapi.json`, and the search page at `/`.

Errors come in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`): 400 for bad input (a refused
item names itself, `param: "input[3]"`), 401 for a missing or wrong key, 404, 413 for a body over the limit,
429 when Triton's queues are full, 503 when it is unavailable, 504 on a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import mimetypes
import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmserve.api import schemas
from mmserve.errors import (
    AuthenticationError,
    InvalidInputError,
    OverloadedError,
    RequestTimeoutError,
    ServerUnavailableError,
)

# The server's failures as the API answers them: status, message, OpenAI error type, code.
UPSTREAM_ERRORS: dict[type[Exception], tuple[int, str, str, str]] = {
    OverloadedError: (429, "the server is overloaded", "rate_limit_error", "overloaded"),
    ServerUnavailableError: (503, "the embedding server is unavailable", "server_error", "unavailable"),
    RequestTimeoutError: (504, "the embedding server did not answer in time", "server_error", "timeout"),
    AuthenticationError: (502, "the embedding server refused this API's key", "server_error", "upstream_auth"),
}
DATA_URI = re.compile(r"data:image/(?:jpeg|jpg|png|webp|gif);base64,", re.IGNORECASE)
MEDIA_URI = re.compile(r"data:(video|audio)/[\w.+-]+;base64,", re.IGNORECASE)
IMAGE_URL = re.compile(r"https?://\S+", re.IGNORECASE)


class ApiSettings(BaseModel):
    server: str = Field(default="grpc://127.0.0.1:8001", description="The Triton (or front door) gRPC URL.")
    indexes: dict[str, str] = Field(default_factory=dict, description="Search indexes by name: directories, "
                                    "milvus://HOST:PORT/COLLECTION or FILE.db locations.")
    api_keys: tuple[str, ...] = Field(default=(), description="Keys clients must send (Bearer); none: open.")
    server_api_key: str | None = Field(default=None, description="The key this API sends to the server.")
    client_options: dict[str, Any] = Field(default_factory=dict, description="More mmserve.AsyncClient options.")
    model_name: str = "mmserve"
    image_roots: tuple[Path, ...] = Field(default=(), description="Where thumbnails may be read from.")
    allow_image_hosts: tuple[str, ...] = Field(default=(), description="Hosts whose http(s) image URLs are fetched.")
    cors_origins: tuple[str, ...] = Field(default=(), description="Origins allowed cross-origin (none: closed).")
    max_body_bytes: int = Field(default=32 << 20, ge=1024)
    max_items: int = Field(default=256, ge=1, description="Items per embeddings request, per add.")
    max_k: int = Field(default=1000, ge=1)
    max_fetch_bytes: int = Field(default=16 << 20, ge=1)
    coalesce_items: int = Field(default=256, ge=1, description="Most items one shared server call carries.")


    @field_validator("indexes", mode="before")
    @classmethod
    def _locations(cls, value: object) -> object:
        """Paths as strings (a URI keeps its `//`, which `Path` would collapse)."""
        if isinstance(value, dict):
            from mmserve.index.backend import location_string

            return {name: location_string(where) if isinstance(where, (str, os.PathLike)) else where
                    for name, where in value.items()}
        return value


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param


def error_body(status: int, message: str, type: str, code: str | None = None, param: str | None = None) -> dict:
    return schemas.ErrorResponse(error=schemas.ErrorDetail(message=message, type=type, code=code,
                                                           param=param)).model_dump()


# -- the indexes ---------------------------------------------------------------------------------------------


class Collection:
    """One named index. Embedded: searches run on a read-only view; adds and removes take the writer lock, save
    atomically (a new generation), and swap in a fresh view. Milvus: one open index (one client) serves both,
    its writes saved (sent and published) before they are answered."""

    def __init__(self, name: str, location: str) -> None:
        from mmserve.index.backend import is_milvus_location

        self.name, self.location = name, location
        self._lock = asyncio.Lock()
        self._view: Any = None
        self._shared = is_milvus_location(location)
        self._reload()

    def _reload(self) -> None:
        from mmserve.index import index_exists, open_index

        if self._shared:
            if self._view is None and index_exists(self.location):
                self._view = open_index(self.location)
            return
        old, self._view = self._view, open_index(self.location, view=True) if index_exists(self.location) else None
        if old is not None:
            old.close()

    def __len__(self) -> int:
        return 0 if self._view is None else len(self._view)

    def view(self):
        if self._view is None:
            raise ApiError(404, f"index {self.name!r} is empty: add items first", code="index_empty")
        return self._view

    async def search(self, vector: np.ndarray, k: int, tags: Sequence[str] | None, *, modality: str | None = None,
                     space: str = "main", per_source: bool = True):
        from mmserve.index import SpaceMismatchError
        from mmserve.search import search_index

        view = self.view()
        if view.dim != len(vector):
            raise ApiError(400, f"index {self.name!r} holds {view.dim}-dimensional vectors, the query has "
                           f"{len(vector)}", param="vector")
        try:
            return await asyncio.to_thread(search_index, view, vector, k, tags=tags, modality=modality, space=space,
                                           per_source=per_source)
        except SpaceMismatchError as error:
            raise ApiError(400, str(error), param="modality", code="space_mismatch") from None

    async def add(self, vectors: np.ndarray, metadata: list[dict]) -> list[int]:
        from mmserve.index import open_index

        def write() -> list[int]:
            if self._shared:
                if self._view is None:
                    self._view = open_index(self.location, vectors.shape[1])
                elif self._view.dim != vectors.shape[1]:
                    raise ValueError(f"{self.location} holds {self._view.dim}-dimensional vectors; the model gives "
                                     f"{vectors.shape[1]}")
                keys = self._view.add(vectors, metadata)
                self._view.save()
                return [int(key) for key in keys]
            with open_index(self.location, vectors.shape[1]) as index:
                keys = index.add(vectors, metadata)
                index.save()
            return [int(key) for key in keys]

        async with self._lock:
            keys = await asyncio.to_thread(write)
            self._reload()
        return keys

    async def remove(self, key: int) -> bool:
        from mmserve.index import open_index

        self.view()

        def write() -> bool:
            if self._shared:
                removed = self._view.remove([key]) > 0
                if removed:
                    self._view.save()
                return removed
            with open_index(self.location) as index:
                removed = index.remove([key]) > 0
                if removed:
                    index.save()
            return removed

        async with self._lock:
            removed = await asyncio.to_thread(write)
            self._reload()
        return removed

    def close(self) -> None:
        if self._view is not None:
            self._view.close()


# -- inputs --------------------------------------------------------------------------------------------------


def decode_base64_image(value: str, param: str, kind: str = "image") -> bytes:
    """An image (or, `kind`, a video or a sound) sent as a data: URI or bare base64."""
    match = DATA_URI.match(value) if kind == "image" else MEDIA_URI.match(value)
    if match and kind != "image" and match.group(1).lower() != kind:
        match = None
    payload = value[match.end():] if match else value
    if not match and value.startswith("data:"):
        expected = ("data:image/jpeg or data:image/png" if kind == "image" else f"data:{kind}/...")
        raise ApiError(400, f"{param}: only {expected} base64 URIs are {kind}s here", param=param,
                       code="unsupported_format")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{param}: not valid base64", param=param, code="invalid") from None


class _NoForeignRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = allowed

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).hostname not in self.allowed:
            raise ApiError(400, f"image URL redirects to a host that is not allowed: {newurl}", code="url_not_allowed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_image(url: str, settings: ApiSettings, param: str) -> bytes:
    """An http(s) image, only from an allowed host, at most `max_fetch_bytes`."""
    host = urllib.parse.urlsplit(url).hostname
    if host not in settings.allow_image_hosts:
        raise ApiError(400, f"{param}: image URLs are not fetched from {host!r} (server-side request forgery); send "
                       "the image as a data:image/...;base64 URI, or start the API with --allow-image-host",
                       param=param, code="url_not_allowed")
    opener = urllib.request.build_opener(_NoForeignRedirects(settings.allow_image_hosts))
    try:
        with opener.open(url, timeout=10) as response:
            data = response.read(settings.max_fetch_bytes + 1)
    except ApiError:
        raise
    except Exception as error:  # noqa: BLE001 - any fetch failure is this item's error
        raise ApiError(400, f"{param}: cannot fetch {url}: {error}", param=param, code="unreadable") from None
    if len(data) > settings.max_fetch_bytes:
        raise ApiError(400, f"{param}: {url} is larger than {settings.max_fetch_bytes} bytes", param=param,
                       code="too_large")
    return data


class Coalescer:
    """Items of concurrent requests joined into shared server calls (the API's own dynamic batching): each
    request's items wait while `in_flight` calls are running, then go together in the next one (at most
    `max_items`). One gRPC call per many HTTP requests is what keeps the API close to direct gRPC. A call whose
    batch holds a refused item is retried request by request, so only that request gets the error."""

    def __init__(self, call, max_items: int = 256, in_flight: int = 4) -> None:
        self._call, self._max_items = call, max_items
        self._slots = asyncio.Semaphore(in_flight)
        self._pending: list[tuple[list, asyncio.Future]] = []
        self._scheduled = False

    async def submit(self, items: list) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().create_task(self._dispatch())
        return await future

    async def _dispatch(self) -> None:
        try:
            while self._pending:
                await self._slots.acquire()
                batch: list[tuple[list, asyncio.Future]] = []
                count = 0
                while self._pending and (not batch or count + len(self._pending[0][0]) <= self._max_items):
                    items, future = self._pending.pop(0)
                    batch.append((items, future))
                    count += len(items)
                asyncio.get_running_loop().create_task(self._run(batch))
        finally:
            self._scheduled = False

    async def _run(self, batch: list[tuple[list, asyncio.Future]]) -> None:
        try:
            try:
                vectors = await self._call([item for items, _ in batch for item in items])
            except InvalidInputError:
                if len(batch) == 1:
                    raise
                for items, future in batch:  # find whose item it was
                    try:
                        future.set_result(await self._call(items))
                    except Exception as error:  # noqa: BLE001 - delivered to its request
                        future.set_exception(error)
                return
            start = 0
            for items, future in batch:
                future.set_result(vectors[start : start + len(items)])
                start += len(items)
        except Exception as error:  # noqa: BLE001 - every request of the batch gets it
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        finally:
            self._slots.release()


# -- the app -------------------------------------------------------------------------------------------------


def create_app(settings: ApiSettings) -> FastAPI:
    import mmserve
    from mmserve.api.metrics import Metrics

    state: dict[str, Any] = {}
    metrics = Metrics()
    collections = {name: Collection(name, location) for name, location in settings.indexes.items()}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        options = {"api_key": settings.server_api_key, **settings.client_options}
        state["client"] = mmserve.AsyncClient(settings.server, **options)
        state["texts"] = Coalescer(state["client"].embed_texts, settings.coalesce_items)
        state["images"] = Coalescer(state["client"].embed_images, settings.coalesce_items)
        try:
            yield
        finally:
            await state["client"].close()
            for collection in collections.values():
                collection.close()

    app = FastAPI(title="mmserve", version=mmserve.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Multimodal embeddings (OpenAI-compatible) and cross-modal search.")
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])

    app.add_middleware(Measured, metrics=metrics)

    def client():
        return state["client"]

    async def authorized(request: Request) -> None:
        if not settings.api_keys:
            return
        header = request.headers.get("authorization", "")
        key = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not any(hmac.compare_digest(key.encode(), k.encode()) for k in settings.api_keys):
            raise ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)",
                           type="authentication_error", code="invalid_api_key")

    def failure(status: int, message: str, type: str, code: str | None = None, param: str | None = None):
        return JSONResponse(error_body(status, message, type, code, param), status_code=status,
                            headers={"x-mmserve-error": code or type})

    @app.exception_handler(ApiError)
    async def on_api_error(request, error: ApiError):
        return failure(error.status, error.message, error.type, error.code, error.param)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request, error: RequestValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())[1:])
        return failure(400, f"{where}: {first.get('msg')}" if where else str(first.get("msg")),
                       "invalid_request_error", "invalid_request", where or None)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request, error: StarletteHTTPException):
        return failure(error.status_code, str(error.detail), "invalid_request_error", "not_found"
                       if error.status_code == 404 else None)

    @app.exception_handler(InvalidInputError)
    async def on_invalid(request, error: InvalidInputError):
        param = getattr(error, "param", None)
        return failure(400, str(error), "invalid_request_error", error.code.value if error.code else "invalid", param)

    def upstream(status: int, what: str, type: str, code: str):
        async def handle(request, error):
            return failure(status, f"{what}: {error}", type, code)
        return handle

    for kind, (status, what, type, code) in UPSTREAM_ERRORS.items():
        app.add_exception_handler(kind, upstream(status, what, type, code))

    async def summary():
        return await client().model_summary()

    async def embed(kind: str, items: list, params: list[str]) -> np.ndarray:
        """Through the shared calls of `kind` ("texts", "images"); a refused item named by its `params` entry."""
        try:
            return await state[kind].submit(items)
        except InvalidInputError as error:
            error.param = params[error.index] if error.index is not None else None  # type: ignore[attr-defined]
            raise

    def embed_images(images: list[bytes], params: list[str]):
        return embed("images", images, params)

    async def embed_texts(texts: list[str], params: list[str], modality: str | None = None) -> np.ndarray:
        model = await summary()
        if modality is None or model.spaces.get(modality, "main") == "main":
            return await embed("texts", texts, params)
        return await named(client().embed_texts(texts, modality=modality), params)

    async def embed_media(kind: str, data: list[bytes], params: list[str]) -> np.ndarray:
        """Videos or sounds: their pooled vectors (the models batch them; the SDK splits by size)."""
        embedded = await named(client().embed_videos(data) if kind == "video" else client().embed_audio(data), params)
        return np.stack([item.embedding for item in embedded])

    async def embed_segmented(kind: str, data: bytes, param: str):
        embedded = await named(client().embed_videos([data]) if kind == "video" else client().embed_audio([data]),
                               [param])
        return embedded[0]

    async def named(call, params: list[str]):
        """`call`'s result; a refused item named by its `params` entry."""
        try:
            return await call
        except InvalidInputError as error:
            error.param = params[error.index] if error.index is not None else None  # type: ignore[attr-defined]
            raise

    def collection(name: str | None) -> Collection:
        if not collections:
            raise ApiError(404, "this API serves no index (start it with --index NAME=LOCATION)", code="no_index")
        if name is None:
            return next(iter(collections.values()))
        if name not in collections:
            raise ApiError(404, f"no index {name!r}; there are {', '.join(collections)}", code="index_not_found")
        return collections[name]

    guarded = [Depends(authorized)]

    embedding_request_schema = {"content": {"application/json": {
        "schema": schemas.EmbeddingRequest.model_json_schema()}}, "required": True}

    @app.post("/v1/embeddings", response_model=schemas.EmbeddingResponse, dependencies=guarded,
              responses={400: {"model": schemas.ErrorResponse}},
              openapi_extra={"requestBody": embedding_request_schema})
    async def embeddings(request: Request) -> Response:
        # The hot route: the body parsed with orjson and validated by the model directly (FastAPI's own body
        # handling costs more than the rest of the request on a tiny model).
        try:
            body = schemas.EmbeddingRequest.model_validate(orjson.loads(await request.body()))
        except orjson.JSONDecodeError as error:
            raise ApiError(400, f"the body is not JSON: {error}", code="invalid_json") from None
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ()))
            raise ApiError(400, f"{where}: {first.get('msg')}", param=where or None, code="invalid_request") from None
        model = await summary()
        if body.model != settings.model_name:
            raise ApiError(404, f"model {body.model!r} does not exist; this server has {settings.model_name!r}",
                           param="model", code="model_not_found")
        if body.dimensions is not None and body.dimensions != model.embedding_dim:
            raise ApiError(400, f"dimensions={body.dimensions}: this model gives {model.embedding_dim} (no "
                           "truncation)", param="dimensions", code="invalid_dimensions")
        given = [body.input] if isinstance(body.input, str) else list(body.input)
        if not given:
            raise ApiError(400, "input is empty", param="input", code="empty")
        if any(not isinstance(item, str) for item in given):
            raise ApiError(400, "token arrays are not accepted: send texts (mmserve tokenizes)", param="input",
                           code="invalid_input")
        items = [str(item) for item in given]
        if len(items) > settings.max_items:
            raise ApiError(400, f"{len(items)} inputs exceed the limit of {settings.max_items} per request",
                           param="input", code="too_many_items")
        texts, images, text_at, image_at = [], [], [], []
        media: dict[str, tuple[list[bytes], list[int]]] = {"video": ([], []), "audio": ([], [])}
        for i, item in enumerate(items):
            param = f"input[{i}]" if not isinstance(body.input, str) else "input"
            if DATA_URI.match(item):
                images.append(decode_base64_image(item, param))
                image_at.append(i)
            elif (found := MEDIA_URI.match(item)) is not None:
                kind = found.group(1).lower()
                media[kind][0].append(decode_base64_image(item, param, kind))
                media[kind][1].append(i)
            elif IMAGE_URL.fullmatch(item):
                images.append(await asyncio.to_thread(fetch_image, item, settings, param))
                image_at.append(i)
            else:
                texts.append(item)
                text_at.append(i)
        names = [f"input[{i}]" if not isinstance(body.input, str) else "input" for i in range(len(items))]
        jobs, parts = [], []
        if texts:
            jobs.append(embed_texts(texts, [names[i] for i in text_at], body.modality))
            parts.append(text_at)
        if images:
            jobs.append(embed_images(images, [names[i] for i in image_at]))
            parts.append(image_at)
        for kind, (encoded, positions) in media.items():
            if encoded:
                jobs.append(embed_media(kind, encoded, [names[i] for i in positions]))
                parts.append(positions)
        results = await asyncio.gather(*jobs)
        dims = {len(result[0]) for result in results}
        if len(dims) > 1:
            raise ApiError(400, "the inputs are embedded in spaces of different dimensions (a CLAP model's sounds "
                           "beside images or texts): send them in separate requests", param="input",
                           code="mixed_spaces")
        vectors = np.zeros((len(items), dims.pop()), dtype=np.float32)
        for positions, result in zip(parts, results):
            vectors[positions] = result
        # Serialized directly (the response model documents the shape): validating and encoding 128-float lists
        # through pydantic costs more than the rest of the request.
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
                 if body.encoding_format == "base64" else v}
                for i, v in enumerate(vectors)]
        payload = {"object": "list", "data": data, "model": settings.model_name,
                   "usage": {"prompt_tokens": len(items), "total_tokens": len(items)}}
        return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    @app.get("/v1/models", response_model=schemas.ModelList, dependencies=guarded)
    async def models() -> schemas.ModelList:
        model = await summary()
        return schemas.ModelList(data=[schemas.ModelCard(id=settings.model_name, family=model.family,
                                                         embedding_dim=model.embedding_dim,
                                                         score_function=model.score_function)])

    @app.post("/v1/search", response_model=schemas.SearchResponse, dependencies=guarded)
    async def search(body: schemas.SearchRequest) -> schemas.SearchResponse:
        given = [name for name in ("query", "image", "video", "audio", "vector") if getattr(body, name) is not None]
        if len(given) != 1:
            raise ApiError(400, "give exactly one of query (text), image, video or audio (base64) or vector",
                           code="invalid_query")
        if body.k > settings.max_k:
            raise ApiError(400, f"k={body.k} exceeds the limit of {settings.max_k}", param="k", code="k_too_large")
        target = collection(body.index)
        model = await summary()
        space = body.space
        if body.query is not None:
            vector = (await embed_texts([body.query], ["query"], body.modality))[0]
            space = model.spaces.get(body.modality or "text", "main")
        elif body.image is not None:
            vector, space = (await embed_images([decode_base64_image(body.image, "image")], ["image"]))[0], "main"
        elif body.video is not None:
            vector = (await embed_segmented("video", decode_base64_image(body.video, "video", "video"), "video")
                      ).embedding
            space = "main"
        elif body.audio is not None:
            vector = (await embed_segmented("audio", decode_base64_image(body.audio, "audio", "audio"), "audio")
                      ).embedding
            space = model.spaces.get("audio", "main")
        else:
            vector = np.asarray(body.vector, dtype=np.float32)
            if not np.isfinite(vector).all():
                raise ApiError(400, "vector has non-finite values", param="vector")
        hits = await target.search(vector, body.k, body.tags, modality=body.modality, space=space,
                                   per_source=body.per_source)
        return schemas.SearchResponse(index=target.name, data=[
            schemas.SearchHit(key=h.key, score=h.score, uri=h.record.uri, caption=h.record.caption,
                              tags=h.record.tags, modality=h.record.modality, space=h.record.space,
                              start=h.record.start, end=h.record.end) for h in hits])

    async def pair_scores(image: str, texts: list[str]) -> tuple[np.ndarray, Any]:
        if len(texts) > settings.max_items:
            raise ApiError(400, f"{len(texts)} texts exceed the limit of {settings.max_items}", code="too_many_items")
        image_vector, text_vectors = await asyncio.gather(
            embed_images([decode_base64_image(image, "image")], ["image"]),
            embed_texts(texts, [f"texts[{i}]" for i in range(len(texts))]))
        return text_vectors @ image_vector[0], (await summary()).scoring

    @app.post("/v1/classify", response_model=schemas.ClassifyResponse, dependencies=guarded)
    async def classify(body: schemas.ClassifyRequest) -> schemas.ClassifyResponse:
        try:
            prompts = [body.template.format(label) for label in body.labels]
        except (IndexError, KeyError, ValueError) as error:
            raise ApiError(400, f"template {body.template!r}: {error}", param="template") from None
        scores, scoring = await pair_scores(body.image, prompts)
        probabilities = scoring.probabilities(scores)
        order = np.argsort(-scores, kind="stable")
        return schemas.ClassifyResponse(data=[schemas.LabelScore(label=body.labels[i], score=float(scores[i]),
                                                                 probability=float(probabilities[i]))
                                              for i in order])

    @app.post("/v1/rank", response_model=schemas.RankResponse, dependencies=guarded)
    async def rank(body: schemas.RankRequest) -> schemas.RankResponse:
        scores, scoring = await pair_scores(body.image, body.texts)
        pairwise = scoring.pairwise(scores)
        return schemas.RankResponse(data=[schemas.RankedText(text=body.texts[i], score=float(pairwise[i]))
                                          for i in np.argsort(-scores, kind="stable")])

    @app.get("/v1/indexes", dependencies=guarded)
    async def indexes() -> dict[str, Any]:
        return {"object": "list", "data": [{"name": c.name, "size": len(c)} for c in collections.values()]}

    @app.post("/v1/indexes/{name}/items", response_model=schemas.AddItemsResponse, dependencies=guarded)
    async def add_items(name: str, body: schemas.AddItemsRequest) -> schemas.AddItemsResponse:
        target = collection(name)
        if len(body.items) > settings.max_items:
            raise ApiError(400, f"{len(body.items)} items exceed the limit of {settings.max_items}",
                           code="too_many_items")
        from mmserve.search import content_hash

        model = await summary()
        rows: list[tuple[np.ndarray, dict]] = []
        for i, item in enumerate(body.items):
            kind = item.modality
            param = f"items[{i}].{kind}"
            data = decode_base64_image(getattr(item, kind), param, kind)
            common = {"uri": item.uri, "caption": item.caption, "tags": item.tags, "content_hash": content_hash(data),
                      "modality": kind}
            if kind == "image":
                rows.append(((await embed_images([data], [param]))[0], common))
                continue
            embedded = await embed_segmented(kind, data, param)
            if kind == "video":  # one item per moment
                rows.extend((vector, {**common, "start": float(a), "end": float(b)})
                            for vector, (a, b) in zip(embedded.segments, embedded.times))
            else:
                rows.append((embedded.embedding, {**common, "space": model.spaces.get("audio", "main"),
                                                  "start": float(embedded.times[0, 0]),
                                                  "end": float(embedded.times[-1, 1])}))
        keys = await target.add(np.stack([vector for vector, _ in rows]), [meta for _, meta in rows])
        return schemas.AddItemsResponse(index=target.name, keys=keys, size=len(target))

    @app.delete("/v1/indexes/{name}/items/{key}", response_model=schemas.DeletedItem, dependencies=guarded)
    async def delete_item(name: str, key: int) -> schemas.DeletedItem:
        target = collection(name)
        if not await target.remove(key):
            raise ApiError(404, f"index {name!r} has no item {key}", code="item_not_found")
        return schemas.DeletedItem(index=name, key=key, deleted=True)

    @app.get("/v1/indexes/{name}/items/{key}/image", dependencies=guarded)
    @app.get("/v1/indexes/{name}/items/{key}/media", dependencies=guarded)
    async def item_image(name: str, key: int):
        target = collection(name)
        try:
            record = target.view().get(key)
        except KeyError:
            raise ApiError(404, f"index {name!r} has no item {key}", code="item_not_found") from None
        path = thumbnail_path(record.uri, settings.image_roots)
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                            headers={"cache-control": "private, max-age=3600"})

    @app.get("/health", response_model=schemas.HealthResponse)
    async def health():
        status = await client().health()
        body = schemas.HealthResponse(status="ok" if status.ready else "unavailable", server=settings.server,
                                      models_ready=status.ready, indexes={n: len(c) for n, c in collections.items()})
        return JSONResponse(body.model_dump(), status_code=200 if status.ready else 503)

    @app.get("/metrics", dependencies=guarded)
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    static = Path(str(resources.files("mmserve.api") / "static"))
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse((static / "index.html").read_text())

    return app


def app_from_environment() -> FastAPI:
    """The app of the `ApiSettings` JSON in `MMSERVE_API_SETTINGS`: for ASGI servers that import an app factory
    (`granian --interface asgi --factory mmserve.api.app:app_from_environment`)."""
    import os

    return create_app(ApiSettings.model_validate_json(os.environ.get("MMSERVE_API_SETTINGS", "{}")))


def thumbnail_path(uri: str | None, roots: Sequence[Path]) -> Path:
    """The local file of an item's URI, only inside an allowed root (symlinks and `..` resolved first)."""
    if not roots:
        raise ApiError(403, "thumbnails are off: start the API with --image-root DIR", code="no_image_roots")
    if not uri or "://" in uri:
        raise ApiError(404, "the item has no local file", code="no_file")
    path = Path(uri).resolve()
    if not any(path.is_relative_to(Path(root).resolve()) for root in roots):
        raise ApiError(403, "the item's file is outside the allowed image roots", code="outside_roots")
    if not path.is_file():
        raise ApiError(404, "the item's file is gone", code="no_file")
    return path


class Measured:
    """Every HTTP request into the metrics: its route, method, status, time and error code (pure ASGI: a
    `BaseHTTPMiddleware` costs the API a good part of its throughput)."""

    def __init__(self, app, metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": 500, "code": None}

        async def watched(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-mmserve-error":
                        seen["code"] = value.decode()
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(route, scope["method"], seen["status"], time.perf_counter() - started, seen["code"])


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, by Content-Length or while they stream in."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._drain(receive, int(length))
            return await self._refuse(send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLargeError()
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLargeError:
            await self._drain(receive, 0)
            await self._refuse(send)

    async def _drain(self, receive, announced: int) -> None:
        """Read (and drop) what the client is still sending, up to a bound, so that it reads the 413 instead of
        a connection reset mid-upload."""
        budget = max(announced, self.limit) + (64 << 20)
        while budget > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            if not message.get("more_body"):
                return

    async def _refuse(self, send) -> None:
        import json

        body = json.dumps(error_body(413, f"request body over the limit of {self.limit} bytes",
                                     "invalid_request_error", "body_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"x-mmserve-error", b"body_too_large")]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLargeError(Exception):
    pass
