"""`mmserve api`: the HTTP API (OpenAI-compatible embeddings, search, classify, rank, index items) and the search
page, in front of a running server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from mmserve.cli import app, out
from mmserve.cli.options import config_options
from mmserve.config import Settings


def parse_indexes(values: list[str] | None, default: str) -> dict[str, str]:
    """`NAME=LOCATION` pairs (a bare LOCATION is named after its folder, file or collection); none given: the
    default index as "default". A location is a path or a Milvus URI (kept as given)."""
    if not values:
        return {"default": default}
    indexes: dict[str, str] = {}
    for value in values:
        name, sep, location = value.partition("=")
        if not sep or "://" in name:
            location = value
            name = re.split(r"[/#]", location.rstrip("/"))[-1].removesuffix(".db") or "default"
        if not name or name in indexes:
            raise ValueError(f"--index {value!r}: each index needs a distinct NAME (NAME=LOCATION)")
        indexes[name] = location if "://" in location else str(Path(location).expanduser())
    return indexes


@app.command()
@config_options("server", "api_keys", "api_key_file", "ca_cert", "client_cert", "client_key")
def api(
    index: Annotated[Optional[list[str]], typer.Option(
        "--index", help="A search index as NAME=LOCATION: a directory, milvus://HOST:PORT/COLLECTION or FILE.db "
        "(repeatable; default: the configured index).")] = None,
    host: Annotated[str, typer.Option(help="Where the API listens (0.0.0.0: everywhere).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The API's port.")] = 8080,
    image_root: Annotated[Optional[list[Path]], typer.Option(
        "--image-root", help="A folder the page may show thumbnails from (repeatable; none: no thumbnails).")] = None,
    allow_image_host: Annotated[Optional[list[str]], typer.Option(
        "--allow-image-host", help="A host whose http(s) image URLs the API fetches (repeatable; default none).")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option(
        "--cors-origin", help="An origin allowed to call the API from a browser (repeatable; default none).")] = None,
    model_name: Annotated[str, typer.Option(help="The model id clients name in /v1/embeddings.")] = "mmserve",
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body.")] = 32 << 20,
    max_items: Annotated[int, typer.Option(help="Most inputs per embeddings request or add.")] = 256,
    max_k: Annotated[int, typer.Option(help="Largest k a search may ask for.")] = 1000,
    *, settings: Settings,
) -> None:
    """Serve the HTTP API and the search page, calling the server over gRPC.

    POST /v1/embeddings takes OpenAI's request (texts, and images as data:image/...;base64 URIs), so OpenAI's
    clients work unchanged; /v1/search, /v1/classify, /v1/rank and /v1/indexes/NAME/items answer cross-modal
    queries and change the index; the page at / searches in a browser. Keys given with --api-key are required
    from clients (Authorization: Bearer KEY) and the first is sent to the server. Ctrl-C stops it.
    """
    import uvicorn

    from mmserve.api import ApiSettings, create_app

    keys = settings.api_keys_in_effect()
    api_settings = ApiSettings(
        server=settings.server, indexes=parse_indexes(index, settings.index), api_keys=tuple(keys),
        server_api_key=keys[0] if keys else None,
        client_options={k: v for k, v in settings.client_options().items() if k != "api_key" and v is not None},
        model_name=model_name, image_roots=tuple(image_root or ()), allow_image_hosts=tuple(allow_image_host or ()),
        cors_origins=tuple(cors_origin or ()), max_body_bytes=max_body_bytes, max_items=max_items, max_k=max_k)
    out.print(f"mmserve api on http://{host}:{port} (server {settings.server}; indexes "
              f"{', '.join(f'{n}={p}' for n, p in api_settings.indexes.items())}; "
              f"{'keys required' if keys else 'no API key: open to anyone who reaches the port'})")
    uvicorn.run(create_app(api_settings), host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5)
