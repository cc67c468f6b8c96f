"""The HTTP API (`mmserve api`) on a real uvicorn over the served bundled model, driven by real clients: OpenAI's
official Python client, plain HTTP, and (test_api_page.py) a headless browser."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import mmserve

KEY = "api-test-key"


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def data_uri(path: Path) -> str:
    kind = "png" if path.suffix == ".png" else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode()


class RunningApi:
    """uvicorn serving `create_app(settings)` in a thread, on a free port."""

    def __init__(self, settings) -> None:
        import uvicorn

        from mmserve.api import create_app
        from mmserve.serving.server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningApi:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def request(self, method: str, path: str, body=None, *, key: str | None = KEY, raw: bytes | None = None,
                headers: dict | None = None):
        """(status, parsed JSON or bytes, headers)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload, status, got = response.read(), response.status, dict(response.headers)
        except urllib.error.HTTPError as error:
            payload, status, got = error.read(), error.code, dict(error.headers)
        is_json = got.get("content-type", "").startswith("application/json")
        return status, json.loads(payload) if is_json else payload, got


@pytest.fixture(scope="module")
def photo_index(server, gallery, tmp_path_factory):
    """An index of the gallery (embedded through the SDK), and one item whose file lies outside the roots."""
    from mmserve.index import Index

    path = tmp_path_factory.mktemp("api-index") / "photos.index"
    with mmserve.Client(server.grpc_url) as client, Index.create(path, dim=client.model_summary().embedding_dim) as index:
        vectors = client.embed_images(gallery)
        index.add(vectors, [{"uri": str(p), "caption": p.stem, "tags": ["gallery"]} for p in gallery])
        index.add(vectors[:1], [{"uri": "/etc/passwd", "tags": ["outside"]}])
        index.save()
    return path


@pytest.fixture(scope="module")
def api(server, photo_index, gallery):
    from mmserve.api import ApiSettings

    settings = ApiSettings(server=server.grpc_url, indexes={"photos": photo_index}, api_keys=(KEY,),
                           image_roots=(gallery[0].parent,), max_body_bytes=4 << 20, max_items=32, max_k=50)
    with RunningApi(settings) as running:
        yield running


@pytest.fixture(scope="module")
def openai_client(api):
    import openai

    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=KEY, max_retries=0)


def test_openai_client_embeds_texts_and_data_uri_images_as_the_sdk_does(openai_client, server, gallery):
    texts = ["a large red circle on the left", "a small blue square"]
    images = [gallery[0], gallery[1]]  # a JPEG and a PNG
    response = openai_client.embeddings.create(model="mmserve", input=[texts[0], data_uri(images[0]), texts[1],
                                                                      data_uri(images[1])])
    got = np.array([item.embedding for item in response.data], dtype=np.float32)
    assert [item.index for item in response.data] == [0, 1, 2, 3] and response.model == "mmserve"
    with mmserve.Client(server.grpc_url) as client:
        want_texts, want_images = client.embed_texts(texts), client.embed_images(images)
    assert cosines(got[[0, 2]], want_texts).min() >= 0.99999
    assert cosines(got[[1, 3]], want_images).min() >= 0.99999
    assert response.usage.prompt_tokens == 4
    floats = openai_client.embeddings.create(model="mmserve", input="a green triangle", encoding_format="float")
    assert len(floats.data) == 1 and abs(np.linalg.norm(floats.data[0].embedding) - 1) < 1e-4


def test_openai_errors_are_in_openai_shape(openai_client, api, gallery):
    import openai

    with pytest.raises(openai.BadRequestError, match="dimensions=7") as bad:
        openai_client.embeddings.create(model="mmserve", input="x", dimensions=7)
    assert bad.value.status_code == 400
    with pytest.raises(openai.NotFoundError, match="model 'gpt-4' does not exist"):
        openai_client.embeddings.create(model="gpt-4", input="x")
    import openai as client_module

    wrong = client_module.OpenAI(base_url=f"{api.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.embeddings.create(model="mmserve", input="x")
    # A corrupt image is refused by name; the request's other items do not matter, the next request works.
    truncated = "data:image/jpeg;base64," + base64.b64encode(gallery[0].read_bytes()[:200]).decode()
    status, body, _ = api.request("POST", "/v1/embeddings", {"model": "mmserve", "input": ["fine", truncated]})
    assert status == 400 and body["error"]["param"] == "input[1]" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] in ("corrupt", "invalid")
    status, body, _ = api.request("POST", "/v1/embeddings", {"model": "mmserve", "input": [[1, 2, 3]]})
    assert status == 400 and "token arrays" in body["error"]["message"]
    status, body, _ = api.request("POST", "/v1/embeddings", {"model": "mmserve", "input": ["x"] * 33})
    assert status == 400 and body["error"]["code"] == "too_many_items"
    status, body, _ = api.request("POST", "/v1/embeddings", {"model": "mmserve", "input": "http://169.254.169.254/x"})
    assert status == 400 and body["error"]["code"] == "url_not_allowed"
    status, body, _ = api.request("POST", "/v1/embeddings", raw=b"{" + b" " * (5 << 20) + b"}")
    assert status == 413 and body["error"]["code"] == "body_too_large"
    status, _, _ = api.request("POST", "/v1/embeddings", {"model": "mmserve", "input": "still serving"})
    assert status == 200


def test_search_by_text_image_and_vector(api, server, gallery):
    status, body, _ = api.request("POST", "/v1/search", {"query": "a red circle", "k": 5})
    assert status == 200 and body["index"] == "photos" and len(body["data"]) == 5
    scores = [hit["score"] for hit in body["data"]]
    assert scores == sorted(scores, reverse=True) and {"key", "uri", "caption", "tags"} <= set(body["data"][0])
    image = base64.b64encode(gallery[3].read_bytes()).decode()
    status, body, _ = api.request("POST", "/v1/search", {"image": image, "k": 3, "tags": ["gallery"]})
    assert status == 200 and body["data"][0]["uri"] == str(gallery[3]) and body["data"][0]["score"] > 0.99
    with mmserve.Client(server.grpc_url) as client:
        vector = client.embed_images([gallery[3]])[0].tolist()
    status, body, _ = api.request("POST", "/v1/search", {"vector": vector, "k": 1})
    assert status == 200 and body["data"][0]["uri"] == str(gallery[3])
    for bad, code in (({"query": "x", "k": 51}, "k_too_large"), ({"query": "x", "vector": vector}, "invalid_query"),
                      ({"vector": [0.1, 0.2]}, None), ({"query": "x", "index": "nope"}, "index_not_found")):
        status, body, _ = api.request("POST", "/v1/search", bad)
        assert status in (400, 404) and "error" in body and (code is None or body["error"]["code"] == code), bad


def test_classify_and_rank_match_the_sdk(api, server, gallery):
    from mmserve.search import Search

    labels = ["red", "blue", "green"]
    image = base64.b64encode(gallery[2].read_bytes()).decode()
    status, body, _ = api.request("POST", "/v1/classify", {"image": image, "labels": labels,
                                                           "template": "a {} shape"})
    assert status == 200
    with mmserve.Client(server.grpc_url) as client:
        want = Search(client).classify(gallery[2], labels, template="a {} shape")
        ranked = Search(client).rank(gallery[2], labels)
    assert [(x["label"], round(x["probability"], 4)) for x in body["data"]] == [
        (x.label, round(x.probability, 4)) for x in want]
    status, body, _ = api.request("POST", "/v1/rank", {"image": image, "texts": labels})
    assert status == 200 and [x["text"] for x in body["data"]] == [t for t, _ in ranked]


def test_items_are_added_and_removed_and_saved(api, gallery, photo_index):
    from mmserve.index import Index

    status, before, _ = api.request("GET", "/v1/indexes")
    size = before["data"][0]["size"]
    items = [{"image": data_uri(gallery[4]), "uri": "added.jpg", "caption": "added", "tags": ["new"]}]
    status, body, _ = api.request("POST", "/v1/indexes/photos/items", {"items": items})
    assert status == 200 and body["size"] == size + 1
    key = body["keys"][0]
    status, body, _ = api.request("POST", "/v1/search", {"query": "anything", "k": 50, "tags": ["new"]})
    assert [hit["key"] for hit in body["data"]] == [key]
    with Index.open(photo_index, view=True) as view:  # on disk, saved
        assert key in view
    status, body, _ = api.request("DELETE", f"/v1/indexes/photos/items/{key}")
    assert status == 200 and body["deleted"]
    status, body, _ = api.request("DELETE", f"/v1/indexes/photos/items/{key}")
    assert status == 404 and body["error"]["code"] == "item_not_found"
    bad = [{"image": base64.b64encode(b"not an image").decode()}]
    status, body, _ = api.request("POST", "/v1/indexes/photos/items", {"items": bad})
    assert status == 400 and body["error"]["param"] == "items[0].image"
    assert api.request("GET", "/v1/indexes")[1]["data"][0]["size"] == size


def test_thumbnails_only_from_allowed_roots(api, gallery):
    status, body, _ = api.request("POST", "/v1/search", {"query": "x", "k": 50})
    by_uri = {hit["uri"]: hit["key"] for hit in body["data"]}
    status, image, headers = api.request("GET", f"/v1/indexes/photos/items/{by_uri[str(gallery[0])]}/image")
    assert status == 200 and image == gallery[0].read_bytes() and headers["content-type"].startswith("image/")
    status, body, _ = api.request("GET", f"/v1/indexes/photos/items/{by_uri['/etc/passwd']}/image")
    assert status == 403 and body["error"]["code"] == "outside_roots"
    assert api.request("GET", f"/v1/indexes/photos/items/{by_uri[str(gallery[0])]}/image", key=None)[0] == 401


def test_thumbnail_paths_refuse_traversal(tmp_path):
    from mmserve.api.app import ApiError, thumbnail_path

    root = tmp_path / "photos"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("no")
    (root / "link.jpg").symlink_to(tmp_path / "secret.txt")
    assert thumbnail_path(str(root / "a.jpg"), [root]) == (root / "a.jpg").resolve()
    for uri in (str(root / ".." / "secret.txt"), str(root / "link.jpg"), "/etc/passwd"):
        with pytest.raises(ApiError, match="outside the allowed image roots"):
            thumbnail_path(uri, [root])
    with pytest.raises(ApiError, match="thumbnails are off"):
        thumbnail_path(str(root / "a.jpg"), [])


def test_models_health_metrics_openapi_and_closed_cors(api):
    status, body, _ = api.request("GET", "/v1/models")
    assert status == 200 and body["data"][0]["id"] == "mmserve" and body["data"][0]["embedding_dim"] == 128
    status, body, _ = api.request("GET", "/health", key=None)
    assert status == 200 and body["status"] == "ok" and body["indexes"]["photos"] >= 12
    status, text, _ = api.request("GET", "/metrics")
    text = text.decode()
    assert 'mmserve_api_requests_total{method="POST",route="/v1/embeddings",status="200"}' in text
    assert "mmserve_api_request_seconds_bucket" in text and 'mmserve_api_errors_total{code="body_too_large"' in text
    assert api.request("GET", "/metrics", key=None)[0] == 401
    status, schema, _ = api.request("GET", "/openapi.json", key=None)
    assert status == 200 and {"/v1/embeddings", "/v1/search", "/v1/classify", "/v1/rank"} <= set(schema["paths"])
    status, _, headers = api.request("OPTIONS", "/v1/embeddings", key=None, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in {k.lower() for k in headers}
    status, page, _ = api.request("GET", "/", key=None)
    assert status == 200 and b"<script src=\"/static/app.js\">" in page and b"http" not in page.split(b"<body>")[1]


def test_a_bad_item_fails_only_its_own_request_when_requests_share_a_server_call(api, gallery):
    """The API joins concurrent requests into shared server calls; a refused image must still fail only its
    request, and every other gets its own vectors."""
    from concurrent.futures import ThreadPoolExecutor

    truncated = "data:image/jpeg;base64," + base64.b64encode(gallery[0].read_bytes()[:300]).decode()
    bodies = [{"model": "mmserve", "input": [data_uri(gallery[i % 6]), f"text {i}"]} for i in range(12)]
    bodies[5] = {"model": "mmserve", "input": ["fine", truncated]}
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda body: api.request("POST", "/v1/embeddings", body), bodies))
    assert answers[5][0] == 400 and answers[5][1]["error"]["param"] == "input[1]"
    ok = [answer for i, answer in enumerate(answers) if i != 5]
    assert all(status == 200 for status, _, _ in ok)
    first = np.array(answers[0][1]["data"][0]["embedding"])
    again = np.array(answers[6][1]["data"][0]["embedding"])  # bodies 0 and 6 send the same image
    assert cosines(first[None], again[None])[0] > 0.99999


def test_a_server_that_is_down_is_a_503_in_openai_shape(tmp_path):
    from mmserve.api import ApiSettings
    from mmserve.serving.server import free_port

    settings = ApiSettings(server=f"grpc://127.0.0.1:{free_port()}", client_options={"retries": 0, "timeout_s": 5})
    with RunningApi(settings) as running:
        status, body, headers = running.request("POST", "/v1/embeddings", {"model": "mmserve", "input": "x"}, key=None)
        assert status == 503 and body["error"]["code"] == "unavailable" and body["error"]["type"] == "server_error"
        assert running.request("GET", "/health", key=None)[0] == 503


def test_video_moments_through_the_api(server, tmp_path):
    """Videos added over the API become moments; a text finds the moment; OpenAI's client embeds a video URI;
    the page's media route serves the file."""
    from openai import OpenAI

    from mmserve.api import ApiSettings
    from mmserve.dev import synthetic
    from mmserve.dev.videos import scene_video

    scenes = [synthetic.scene_with([synthetic.SceneObject(color, shape, "large", "center")], "white", seed)
              for seed, (color, shape) in enumerate([("red", "circle"), ("blue", "square"), ("green", "triangle")])]
    video = scene_video(scenes, seconds_per_scene=2.0)
    path = tmp_path / "scenes.mp4"
    path.write_bytes(video)
    settings = ApiSettings(server=server.grpc_url, indexes={"media": tmp_path / "media.index"}, api_keys=(KEY,),
                           image_roots=(tmp_path,))
    with RunningApi(settings) as api:
        encoded = base64.b64encode(video).decode()
        status, added, _ = api.request("POST", "/v1/indexes/media/items",
                                       {"items": [{"video": encoded, "uri": str(path), "tags": ["clips"]}]})
        assert status == 200 and len(added["keys"]) == 6 and added["size"] == 6, added
        status, found, _ = api.request("POST", "/v1/search", {"query": "a large blue square", "k": 3,
                                                              "modality": "video"})
        assert status == 200 and len(found["data"]) == 1, found  # one video, at its best moment
        best = found["data"][0]
        assert best["modality"] == "video" and best["uri"] == str(path) and 2.0 <= best["start"] < 4.0, best
        status, moments, _ = api.request("POST", "/v1/search", {"query": "a large blue square", "k": 3,
                                                                "per_source": False})
        assert status == 200 and len(moments["data"]) == 3 and moments["data"][0]["start"] == best["start"]
        status, body, headers = api.request("GET", f"/v1/indexes/media/items/{best['key']}/media")
        assert status == 200 and body == video and headers["content-type"] == "video/mp4"
        status, refused, _ = api.request("POST", "/v1/indexes/media/items",
                                         {"items": [{"video": base64.b64encode(b"\x1a\x45\xdf\xa3junk").decode()}]})
        assert status == 400 and refused["error"]["param"] == "items[0].video", refused
        status, both, _ = api.request("POST", "/v1/indexes/media/items", {"items": [{"video": encoded,
                                                                                      "image": encoded}]})
        assert status == 400

        client = OpenAI(base_url=api.url + "/v1", api_key=KEY)
        response = client.embeddings.create(model="mmserve", input=[
            "data:video/mp4;base64," + encoded, "a large red circle"])
        vectors = np.array([item.embedding for item in response.data], dtype=np.float32)
    with mmserve.Client(server.grpc_url) as sdk:
        pooled = sdk.embed_videos([video])[0].embedding
        text = sdk.embed_texts(["a large red circle"])[0]
    assert cosines(vectors, np.stack([pooled, text])).min() > 0.9999
