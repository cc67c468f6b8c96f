"""The Milvus index backend against the embedded one: milvus-lite as a local file and as a `milvus-lite server`
process reached over http:// (the client path a cluster takes); Search and folder indexing on top; migration
between backends through the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mmserve.index import Index, IndexBackend, ItemMetadata, SpaceMismatchError, index_exists, open_index
from mmserve.index.milvus import MilvusIndex, MilvusLocation

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

DIM = 128
COUNT = 20_000
QUERIES = 200


def clustered(count: int, seed: int, dim: int = DIM, clusters: int = 64, *, centres: int | None = None,
              spread: float = 0.5) -> np.ndarray:
    """Unit vectors around `clusters` random centres (drawn from seed `centres`, default `seed`)."""
    rng = np.random.default_rng(seed)
    middles = np.random.default_rng(seed if centres is None else centres).standard_normal((clusters, dim))
    vectors = middles[rng.integers(0, clusters, count)] + spread * rng.standard_normal((count, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def metadata(count: int) -> list[ItemMetadata]:
    """Images, video moments (every 25th: 800) and sounds in a CLAP space (every 10th, offset 3: 2,000)."""
    items = []
    for i in range(count):
        tags = ["even" if i % 2 == 0 else "odd", f"t{i % 5}"]
        if i % 25 == 0:
            items.append(ItemMetadata(uri=f"clip{i // 100}.mp4", content_hash=f"v{i}", tags=tags, modality="video",
                                      start=float(i % 100), end=float(i % 100) + 1))
        elif i % 10 == 3:
            items.append(ItemMetadata(uri=f"sound{i}.wav", content_hash=f"a{i}", tags=tags, modality="audio",
                                      space="clap", start=0.0, end=5.0))
        else:
            items.append(ItemMetadata(uri=f"image{i}.jpg", content_hash=f"h{i}", caption=f"caption {i}", tags=tags))
    return items


def queries(count: int, seed: int) -> np.ndarray:
    """Points around the corpus's clusters (seed 7) but six times as spread out: many neighbours at similar
    distances, which is hard for a graph (queries near the items give recall 1.0 on both backends)."""
    return clustered(count, seed, centres=7, spread=3.0)


def same_top_k(reference, found, stored: dict[int, np.ndarray], query: np.ndarray) -> None:
    """Keys and scores equal within 1e-5; where two keys trade places, their true scores (on the stored
    vectors) tie within 1e-5."""
    assert len(found) == len(reference)
    for want, got in zip(reference, found):
        assert abs(want.score - got.score) <= 1e-5, (want, got)
        if want.key != got.key:
            true = [float(stored[key].astype(np.float64) @ query) for key in (want.key, got.key)]
            assert abs(true[0] - true[1]) <= 1e-5, (want.key, got.key, true)


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory, port_factory):
    """`milvus-lite server` on a loopback port: the URL a client reaches it at."""
    data = tmp_path_factory.mktemp("milvus-server")
    port = port_factory()
    log = open(data / "server.log", "w")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data / "data"),
                                "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    from pymilvus import MilvusClient

    while True:
        assert process.poll() is None, (data / "server.log").read_text()
        try:
            MilvusClient(uri=url, timeout=2).close()
            break
        except Exception:  # noqa: BLE001 - not listening yet
            assert time.monotonic() < deadline, "milvus-lite server did not start in 60 s"
            time.sleep(0.2)
    yield url
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, milvus_server):
    """The same 20,000 clustered vectors and metadata in the embedded index and on the Milvus server (both f16)."""
    vectors = clustered(COUNT, 7)
    items = metadata(COUNT)
    embedded = Index.create(tmp_path_factory.mktemp("embedded") / "index", DIM)
    started = time.perf_counter()
    embedded.add(vectors, items)
    embedded.save()
    embedded_s = time.perf_counter() - started
    started = time.perf_counter()
    milvus = open_index(f"{milvus_server}/corpus", DIM, storage="f16", model="test")
    milvus.add(vectors, items)
    milvus.save()
    milvus_s = time.perf_counter() - started
    print(f"\n20,000 items added and saved: embedded {embedded_s:.1f} s, Milvus (lite server) {milvus_s:.1f} s")
    stored = {int(k): v for k, v in zip(embedded.keys(), embedded.matrix.decoded(0, COUNT))}
    yield vectors, embedded, milvus, stored
    embedded.close()
    milvus.close()


def test_locations_and_dispatch(tmp_path):
    assert MilvusLocation.parse("milvus://db.example:19531/photos") == MilvusLocation("http://db.example:19531",
                                                                                     "photos")
    where = MilvusLocation.parse("https://user:secret@db.example/prod/photos")
    assert (where.uri, where.database, where.collection, where.token) == ("https://db.example:443", "prod", "photos",
                                                                         "user:secret")
    assert "secret" not in str(where) and "secret" not in repr(where)
    assert MilvusLocation.parse(tmp_path / "x.db").collection == "mmserve"
    assert MilvusLocation.parse(f"{tmp_path}/x.db#clips") == MilvusLocation(str(tmp_path / "x.db"), "clips")
    with pytest.raises(ValueError, match="collection name"):
        MilvusLocation.parse("milvus://h:1/bad-name")
    from pathlib import Path

    from mmserve.cli.api import parse_indexes
    from mmserve.config import Settings
    from mmserve.index.backend import is_milvus_location

    assert Settings(index="milvus://h:1/c").index == "milvus://h:1/c"
    assert Settings(index=Path("milvus://h:1/c")).index == "milvus://h:1/c"  # what Path collapsed, restored
    assert parse_indexes(["milvus://h:1/photos", "clips=x.db#clips", str(tmp_path / "idx")], "") == {
        "photos": "milvus://h:1/photos", "clips": "x.db#clips", "idx": str(tmp_path / "idx")}
    assert is_milvus_location("x.db") and is_milvus_location("http://h/c") and not is_milvus_location(tmp_path)
    embedded_named_db = tmp_path / "old.db"
    Index.create(embedded_named_db, 4).close()
    assert not is_milvus_location(embedded_named_db)  # an embedded index stays embedded whatever its name
    with pytest.raises(ValueError, match="unknown scheme"):
        is_milvus_location("grpc://h:1/c")


def test_exact_search_equals_the_embedded_index(corpus):
    vectors, embedded, milvus, stored = corpus
    assert isinstance(milvus, IndexBackend) and len(milvus) == COUNT and milvus.dim == DIM
    assert milvus.modality_counts() == embedded.modality_counts() == {
        ("audio", "clap"): 2000, ("image", "main"): 17_200, ("video", "main"): 800}
    started = time.perf_counter()
    milvus.search(vectors[0], 1, exact=True)  # the first exact search fetches the vectors (the mirror)
    mirror_s = time.perf_counter() - started
    probes = queries(QUERIES, 1)
    identical = 0
    started = time.perf_counter()
    for query in probes:
        reference = embedded.search(query, 10, exact=True)
        found = milvus.search(query, 10, exact=True)
        same_top_k(reference, found, stored, query)
        identical += [h.key for h in found] == [h.key for h in reference]
        assert all(f.record.model_dump(exclude={"created", "updated"}) == r.record.model_dump(
            exclude={"created", "updated"}) for f, r in zip(found, reference) if f.key == r.key)
    per_query_ms = (time.perf_counter() - started) / QUERIES * 1000
    for query in probes[:20]:  # exact=None: exact at this size, as the embedded index
        assert [h.key for h in milvus.search(query, 10)] == [h.key for h in embedded.search(query, 10)]
    print(f"\nexact top-10 on {QUERIES} queries: {identical} identical key lists, all scores within 1e-5; mirror "
          f"fetched in {mirror_s:.1f} s, then {per_query_ms:.1f} ms per query (embedded + Milvus)")
    assert identical >= QUERIES - 2


def test_hnsw_recall_against_exact(corpus, monkeypatch):
    vectors, embedded, milvus, stored = corpus
    probes = queries(QUERIES, 2)
    recalls, embedded_recalls = [], []
    started = time.perf_counter()
    for query in probes:
        truth = {h.key for h in embedded.search(query, 10, exact=True)}
        embedded_recalls.append(len(truth & {h.key for h in embedded.search(query, 10, exact=False)}) / 10)
        found = milvus.search(query, 10, exact=False)
        assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)
        for hit in found:  # the server's score is the inner product with the stored vector
            assert abs(hit.score - float(stored[hit.key] @ query)) <= 1e-5
        recalls.append(len(truth & {h.key for h in found}) / 10)
    per_query_ms = (time.perf_counter() - started) / QUERIES * 1000
    recall = float(np.mean(recalls))
    monkeypatch.setattr("mmserve.index.milvus.CANDIDATES_PER_RESULT", 1)  # the graph's own: 10 candidates for 10
    graph = float(np.mean([len({h.key for h in embedded.search(q, 10, exact=True)} &
                               {h.key for h in milvus.search(q, 10, exact=False)}) / 10 for q in probes[:50]]))
    print(f"\nHNSW recall@10 against exact over {QUERIES} queries: Milvus {recall:.4f} (ef 128, 40 candidates; "
          f"{graph:.4f} with 10), embedded {np.mean(embedded_recalls):.4f}; {per_query_ms:.0f} ms per query (both)")
    assert recall >= 0.95


def test_filters_and_spaces_as_the_embedded_index(corpus, milvus_server):
    vectors, embedded, milvus, stored = corpus
    probes = clustered(6, 3, centres=7)  # near the items: a filter's best matches stand out
    cases = [dict(tags=["even", "t3"]), dict(modality="video"), dict(modality="image", tags=["odd"]),
             dict(modality="audio", space="clap"), dict(tags=["t1"], space="clap")]
    for case in cases:
        for query in probes[:3]:
            reference = embedded.search(query, 10, exact=True, **case)
            found = milvus.search(query, 10, exact=True, **case)
            same_top_k(reference, found, stored, query)
            assert all(set(case.get("tags", ())) <= set(h.record.tags) for h in found)
            assert all(h.record.modality == case.get("modality", h.record.modality) for h in found)
    # The server's filtered HNSW search (milvus-lite scans arrays for array_contains_all: slow, so few queries).
    filtered = {}
    for case, probed in ((dict(modality="video"), probes), (dict(tags=["even", "t3"]), probes[:2])):
        recalls = []
        for query in probed:
            truth = {h.key for h in embedded.search(query, 10, exact=True, **case)}
            found = milvus.search(query, 10, exact=False, **case)
            assert all(set(case.get("tags", ())) <= set(h.record.tags) for h in found)
            assert all(h.record.modality == case.get("modality", h.record.modality) for h in found)
            recalls.append(len(truth & {h.key for h in found}) / 10)
        filtered[str(case)] = float(np.mean(recalls))
    print(f"\nfiltered HNSW recall@10: {filtered}")
    assert min(filtered.values()) >= 0.6, filtered  # milvus-lite's graph under a 4% filter is weak (exact=None
    # would scan those 800 exactly)
    for backend in (embedded, milvus):
        with pytest.raises(SpaceMismatchError, match="'main' space but the audio items"):
            backend.search(probes[0], 5, modality="audio")
        with pytest.raises(SpaceMismatchError, match="'clap' space but the image items"):
            backend.search(probes[0], 5, modality="image", space="clap")
        with pytest.raises(ValueError, match="modality must be one of"):
            backend.search(probes[0], 5, modality="smell")
    # Streamed exact search (past exact_limit there is no mirror): a page of vectors at a time.
    with MilvusIndex.open(f"{milvus_server}/corpus", view=True, exact_limit=1000) as small:
        started = time.perf_counter()
        same_top_k(embedded.search(probes[1], 10, exact=True), small.search(probes[1], 10, exact=True), stored,
                   probes[1])
        streamed_s = time.perf_counter() - started
        # exact=None: 800 video moments are "few", so exact; all 20,000 are not, so HNSW.
        same_top_k(embedded.search(probes[2], 5, modality="video"), small.search(probes[2], 5, modality="video"),
                   stored, probes[2])
        assert len(small.search(probes[2], 5)) == 5
    print(f"\nstreamed exact search over 20,000 vectors: {streamed_s:.1f} s")


def test_writes_reopen_and_views(tmp_path):
    path = f"{tmp_path}/small.db#items"
    vectors = clustered(40, 11, dim=16)
    items = [ItemMetadata(uri=f"f{i}.jpg", content_hash=f"h{i}", caption=f"c{i}",
                          tags=["even" if i % 2 == 0 else "odd", "all", 'quote"and\\slash']) for i in range(40)]
    assert not index_exists(path)
    with pytest.raises(FileNotFoundError, match="no mmserve index"):
        open_index(path)
    with open_index(path, 16, storage="f32", model="m") as index:
        keys = index.add(vectors[:30], items[:30])
        assert list(keys) == list(range(30)) and len(index) == 30 and index.storage == "f32"
        assert index.get(7).uri == "f7.jpg" and index.get(7).tags == ["all", "odd", 'quote"and\\slash']
        with Index.create(tmp_path / "embedded", 16) as embedded:  # the same checks, the same messages
            for bad, message in ((np.zeros((1, 16)), "zero vectors have no direction"),
                                 (np.full((1, 16), np.nan), "NaN or infinity"), (np.ones((1, 15)), r"\[N, 16\]")):
                for backend in (index, embedded):
                    with pytest.raises(ValueError, match=message):
                        backend.add(bad)
                    with pytest.raises(ValueError, match=message):
                        backend.search(bad[0], 3)
        with pytest.raises(ValueError, match="uri is 9000 bytes"):
            index.add(vectors[:1], [{"uri": "x" * 9000}])
        assert index.remove([3, 4, 999]) == 2 and len(index) == 28
        index.update(5, caption="new", tags=["five"], vector=vectors[0])
        with pytest.raises(KeyError):
            index.update(3, caption="gone")
        assert index.find_hashes(["h5", "h3", "h29", "nope"]) == {"h5": 5, "h29": 29}
        assert [h.key for h in index.search(vectors[0], 2, exact=True)] in ([0, 5], [5, 0])
        assert [h.key for h in index.search(vectors[1], 3, tags=['quote"and\\slash', "odd"], exact=False)][0] == 1
        assert index.tags()["all"] == 27 and index.tags()["five"] == 1
        assert index.remove([29]) == 1  # the highest key: never handed out again
        index.save()
    with open_index(path, view=True) as view:
        assert len(view) == 27 and view.get(5).caption == "new" and view.get(5).tags == ["five"]
        assert view.model == "m" and view.modality_counts() == {("image", "main"): 27}
        assert [r.key for _, records in view.items(10) for r in records] == [k for k in range(29) if k not in (3, 4)]
        for write in (lambda: view.add(vectors[:1]), lambda: view.remove([1]), lambda: view.update(1, caption="x"),
                      view.save, lambda: view.restore(vectors[:1], [view.get(1)])):
            with pytest.raises(PermissionError, match="read-only"):
                write()
    with open_index(path, 16) as index:  # closed without save(): close saves a Milvus index
        assert list(index.add(vectors[30:32], items[30:32])) == [1024, 1025]  # keys come in reserved blocks
        with pytest.raises(ValueError, match="restored keys must ascend from 1026"):
            index.restore(vectors[:1], [index.get(1)])
    with open_index(path, view=True) as view:
        assert len(view) == 29 and view.get(1025).uri == "f31.jpg"
    with pytest.raises(ValueError, match="16-dimensional"):
        open_index(path, 8)


def test_a_milvus_lite_file_is_held_by_one_process(tmp_path):
    path = str(tmp_path / "held.db")
    with open_index(path, 4) as index:
        index.add(np.eye(4, dtype=np.float32))
        index.save()
        result = subprocess.run([sys.executable, "-m", "mmserve.cli", "index", "migrate", path,
                                 str(tmp_path / "copy")], capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, result.stderr
        assert "open in another process" in result.stderr and "milvus-lite server --data-dir" in result.stderr
    with open_index(path, view=True) as view:  # closing released it: this process opens it again
        assert len(view) == 4


def test_search_and_folder_indexing_over_milvus(server, gallery, milvus_server):
    import mmserve
    from mmserve.search import Search, index_files

    location = f"{milvus_server}/gallery"
    with mmserve.Client(server.grpc_url) as client:
        dim = client.model_summary().embedding_dim
        with open_index(location, dim, storage="f16") as store:
            report = index_files(store, client, gallery, batch_size=5, tags=["gallery"])
            assert (report.added, report.skipped, report.failed) == (len(gallery), 0, [])
        with open_index(location, dim) as store:
            again = index_files(store, client, gallery, batch_size=5)
            assert (again.added, again.skipped, len(store)) == (0, len(gallery), len(gallery))
        with open_index(location, view=True) as view:
            finder = Search(client, view)
            hits = finder.search_image(gallery[3], 3)
            assert hits[0].record.uri == str(gallery[3]) and hits[0].score > 0.99
            assert len(finder.search_text("a red circle", 4, tags=["gallery"])) == 4
    env = dict(os.environ, MMSERVE_SERVER=server.grpc_url, MMSERVE_INDEX=location)
    result = subprocess.run([sys.executable, "-m", "mmserve.cli", "search", "--image", str(gallery[3]), "-k", "2",
                             "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["uri"] == str(gallery[3])
    env["MMSERVE_INDEX"] = f"{milvus_server}/gallery_cli"
    for expected in (f"{len(gallery)} files added", f"0 files added (0 items), {len(gallery)} already indexed"):
        result = subprocess.run([sys.executable, "-m", "mmserve.cli", "index", str(gallery[0].parent)],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0 and expected in result.stdout, (result.stdout, result.stderr)


def test_the_api_collection_keeps_one_client(milvus_server):
    from mmserve.api.app import ApiError, Collection

    vectors = clustered(6, 12, dim=8)

    async def scenario():
        collection = Collection("api", f"{milvus_server}/api")
        with pytest.raises(ApiError, match="is empty"):
            collection.view()
        keys = await collection.add(vectors, [{"uri": f"u{i}", "tags": ["t"]} for i in range(6)])
        assert keys == list(range(6)) and len(collection) == 6
        hits = await collection.search(vectors[2], 2, ["t"])
        assert hits[0].key == 2
        assert await collection.remove(2) and not await collection.remove(2) and len(collection) == 5
        collection.close()

    asyncio.run(scenario())
    with open_index(f"{milvus_server}/api", view=True) as view:  # what the API wrote is saved for others
        assert len(view) == 5


def test_migrate_embedded_to_milvus_and_back(tmp_path, milvus_server):
    vectors = clustered(500, 13)
    source = tmp_path / "source"
    with Index.create(source, DIM, model="test model") as index:
        index.add(vectors, metadata(500))
        index.remove([10, 499])
        index.update(11, caption="edited", tags=["x"])
        index.save()

    def migrate(*args):
        result = subprocess.run([sys.executable, "-m", "mmserve.cli", "index", "migrate", *map(str, args)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout

    lite, back = f"{tmp_path}/copy.db", tmp_path / "back"
    started = time.perf_counter()
    assert "498 items copied" in migrate(source, lite)
    assert "498 items copied" in migrate(lite, back)
    print(f"\nmigrate 498 items embedded -> milvus-lite -> embedded (two CLI runs): {time.perf_counter() - started:.1f} s")
    refused = subprocess.run([sys.executable, "-m", "mmserve.cli", "index", "migrate", str(source), lite],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "holds 498 items already: give --append" in refused.stderr
    assert "498 items copied" in migrate(source, f"{milvus_server}/migrated")

    def everything(location):
        with open_index(location, view=True) as index:
            assert index.model == "test model"
            parts = list(index.items(128))
            return np.concatenate([v for v, _ in parts]), [r for _, records in parts for r in records]

    original_vectors, original_records = everything(source)
    for copy in (back, lite, f"{milvus_server}/migrated"):
        copied_vectors, copied_records = everything(copy)
        assert copied_records == original_records  # keys, metadata and times
        assert np.array_equal(copied_vectors, original_vectors)  # bit for bit
    with open_index(f"{milvus_server}/migrated") as target:
        assert target.storage == "f16"
        vectors3, records3 = next(target.items(3))
        keys = target.restore(vectors3, records3, keep_keys=False)  # --append's path: new keys, same times
        assert len(target) == 501 and min(keys) > 498
        assert target.get(int(keys[0])).model_dump(exclude={"key"}) == records3[0].model_dump(exclude={"key"})
