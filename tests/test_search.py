"""Cross-modal search through the real server: the Search API and the index/search/classify/info CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import mmserve
from mmserve.dev import synthetic as S
from mmserve.dev.demo import _parse_query, write_gallery
from mmserve.embedder import Embedder
from mmserve.index import Index, open_index
from mmserve.search import Search, index_files

QUERIES = ("a red circle", "a large blue square", "a green triangle on the left", "a small yellow cross",
           "a purple circle at the top", "an orange square in the center")


@pytest.fixture(scope="module")
def search_gallery(tmp_path_factory):
    directory = tmp_path_factory.mktemp("search-gallery")
    items = write_gallery(directory, 2000, seed=9)
    return directory, {item.path.name: item.scene for item in items}


def mmserve_cli(*args, server, index, timeout=600):
    env = dict(os.environ, MMSERVE_SERVER=server.grpc_url, MMSERVE_INDEX=str(index))
    return subprocess.run([sys.executable, "-m", "mmserve.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_cli_indexes_incrementally_and_finds_what_captions_name(server, search_gallery, tmp_path):
    directory, scenes = search_gallery
    index = tmp_path / "index"
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "extra" / "empty.png").write_bytes(b"")
    first_half = sorted(directory.glob("*.jpg"))  # an "interrupted" first run: only the JPEGs

    result = mmserve_cli("index", *map(str, first_half), server=server, index=index)
    assert result.returncode == 0, result.stderr
    assert f"{len(first_half)} files added ({len(first_half)} items), 0 already indexed, 0 failed" in result.stdout

    result = mmserve_cli("index", str(directory), str(tmp_path / "extra"), "--tag", "gallery",
                         server=server, index=index)
    assert result.returncode == 0, result.stderr
    half = 2000 - len(first_half)
    assert f"{half} files added ({half} items), {len(first_half)} already indexed, 2 failed" in result.stdout
    assert "broken.jpg" in result.stderr and "empty.png" in result.stderr

    precision = []
    for query in QUERIES:
        result = mmserve_cli("search", query, "-k", "5", "--json", server=server, index=index)
        assert result.returncode == 0, result.stderr
        hits = json.loads(result.stdout)
        assert len(hits) == 5 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        caption = _parse_query(query)
        precision.append(sum(S.caption_matches(caption, scenes[os.path.basename(h["uri"])]) for h in hits) / 5)
    assert sum(precision) / len(precision) >= 0.8, dict(zip(QUERIES, precision))

    probe = sorted(directory.glob("*.png"))[3]
    result = mmserve_cli("search", "--image", str(probe), "-k", "3", "--json", server=server, index=index)
    hits = json.loads(result.stdout)
    assert hits[0]["uri"] == str(probe.resolve()) and hits[0]["score"] > 0.999
    assert mmserve_cli("search", "a red circle", "--tag", "gallery", "--json", server=server,
                       index=index).returncode == 0

    result = mmserve_cli("search", "a red circle", "-k", "3", server=server, index=index)
    assert result.returncode == 0 and "of 2000 items" in result.stdout  # the rich table

    result = mmserve_cli("info", server=server, index=index)
    assert "2000 items: 2000 image" in result.stdout and "128 dimensions, f16 storage" in result.stdout


def test_classify_and_rank_pick_the_true_description(server, search_gallery, tmp_path):
    directory, scenes = search_gallery
    single = [name for name, scene in scenes.items() if len(scene.objects) == 1][:10]
    labels = [f"a {c} {s}" for c in ("red", "green", "blue", "yellow", "purple", "orange")
              for s in ("circle", "square", "triangle", "cross")]
    correct = 0
    with mmserve.Client(server.grpc_url) as client:
        search = Search(client)
        for name in single:
            scene_object = scenes[name].objects[0]
            truth = f"a {scene_object.color} {scene_object.shape}"
            ranked = search.classify(directory / name, labels)
            assert abs(sum(r.probability for r in ranked) - 1) < 1e-5
            assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
            correct += ranked[0].label == truth
            assert search.rank(directory / name, labels)[0][0] == ranked[0].label
        with pytest.raises(ValueError, match="no index"):
            search.search_text("a red circle")
    assert correct >= 9

    result = mmserve_cli("classify", str(directory / single[0]), "--labels", ",".join(labels), "--json",
                         server=server, index=tmp_path / "none")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == len(labels)


def test_search_api_with_a_python_index(server, search_gallery, tmp_path):
    directory, scenes = search_gallery
    files = sorted(directory.glob("*.png"))[:200]
    with mmserve.Client(server.grpc_url) as client:
        with Index.create(tmp_path / "index", client.model_summary().embedding_dim) as index:
            index.add(client.embed_images(files), [{"uri": str(f), "tags": ["png"]} for f in files])
            hits = Search(client, index).search_image(files[0], 3)
            assert hits[0].record.uri == str(files[0])
            assert len(Search(client, index).search_text("a red circle", 4, tags=["png"])) == 4


def test_folder_indexing_and_search_take_any_embedder(server, local_embedder, search_gallery, tmp_path):
    """The same folder indexed through the server and in-process: same report, same answers."""
    directory, _ = search_gallery
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    files = sorted(directory.glob("*.png"))[:40]
    files.insert(7, broken)
    answers = {}
    with mmserve.Client(server.grpc_url) as client:
        for name, embedder in (("remote", client), ("local", local_embedder)):
            assert isinstance(embedder, Embedder)
            with open_index(tmp_path / name, local_embedder.dim) as index:
                report = index_files(index, embedder, files, batch_size=16)
                assert report.added == 40 and [path for path, _ in report.failed] == [broken], report
                assert "PNG" in report.failed[0][1]
                assert index_files(index, embedder, files).skipped == 40
                answers[name] = [hit.record.uri for hit in Search(embedder, index).search_text("a red circle", 5)]
    assert answers["remote"] == answers["local"]


def test_cli_reports_a_missing_index_and_an_unreachable_server(tmp_path, port_factory):
    class Nowhere:
        grpc_url = f"grpc://127.0.0.1:{port_factory()}"

    result = mmserve_cli("search", "x", server=Nowhere, index=tmp_path / "none")
    assert result.returncode == 1 and "no mmserve index" in result.stderr
    result = mmserve_cli("index", str(tmp_path), server=Nowhere, index=tmp_path / "new")
    message = result.stderr.lower()
    assert result.returncode == 1 and ("unreachable" in message or "unavailable" in message), result.stderr
