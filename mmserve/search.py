"""Cross-modal search and folder indexing, over any `Embedder` (the server's client, or in-process) and any
index backend (`mmserve.index.IndexBackend`).

    search = Search(mmserve.Client("grpc://127.0.0.1:8001"), open_index("photos.index", view=True))
    search.search_text("a red circle", k=5)          # text -> images and video moments
    search.search_text("a dog barking", modality="audio")   # text -> sounds (in their model's space)
    search.search_image("query.jpg", k=5)            # image -> image
    search.search_video("clip.mp4"), search.search_audio("bark.wav")   # video or sound as the query
    search.classify("query.jpg", ["cat", "dog"])     # image -> text: zero-shot labels with probabilities
    search.rank("query.jpg", ["a cat", "a dog"])     # image -> text: the texts by similarity

Video is indexed as its moments (one item per sampled segment, with its start
and end), so a search finds the moment; by default a search returns each
video once, at its best moment (`per_source=False` returns every moment).
A query is embedded in the space of the items it searches (`modality=`), and
the index refuses to compare vectors of different spaces.

`index_files` walks folders, skips what is already indexed, embeds through
the embedder and saves as it goes. Files are identified by a hash of their
bytes, so a re-run adds only new content and an interrupted run resumes where
its last save left off (the index is saved every `save_every` files and at
the end). A file the server refuses (corrupt, truncated, too large) or that
cannot be read is reported, never fatal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from mmserve.embedder import Embedder
from mmserve.errors import InvalidInputError
from mmserve.index import MAIN_SPACE, Hit, IndexBackend, ItemMetadata
from mmserve.models.info import Scoring


class Label(BaseModel):
    label: str
    score: float  # cosine similarity between the image and the label's text
    # In the model's form: softmax over the given labels at the logit scale (CLIP), or this label's own
    # sigmoid(logit scale x cosine + logit bias) (SigLIP).
    probability: float


class Search:
    def __init__(self, client: Embedder, index: IndexBackend | None = None) -> None:
        """`client`: an `mmserve.Client`, a `LocalEmbedder`, or any `Embedder`."""
        self.client = client
        self.index = index

    def search_text(self, text: str, k: int = 10, *, tags: Sequence[str] | None = None,
                    modality: str | None = None, per_source: bool = True) -> list[Hit]:
        """Items like `text`: every modality of the main space, or only `modality` ("audio" of a CLAP model is
        queried through its own text tower)."""
        vector = (self.client.embed_texts([text], modality=modality) if modality is not None
                  else self.client.embed_texts([text]))[0]
        return self.search_vector(vector, k, space=self._space(modality), tags=tags, modality=modality,
                                  per_source=per_source)

    def search_image(self, image, k: int = 10, *, tags: Sequence[str] | None = None,
                     modality: str | None = None, per_source: bool = True) -> list[Hit]:
        return self.search_vector(self.client.embed_images([image])[0], k, tags=tags, modality=modality,
                                  per_source=per_source)

    def search_video(self, video, k: int = 10, *, tags: Sequence[str] | None = None,
                     modality: str | None = None, per_source: bool = True) -> list[Hit]:
        """Items like a video (its pooled vector: the mean of its moments')."""
        embedded = _media(self.client, "video").embed_videos([video])[0]
        return self.search_vector(embedded.embedding, k, tags=tags, modality=modality, per_source=per_source)

    def search_audio(self, sound, k: int = 10, *, tags: Sequence[str] | None = None,
                     modality: str | None = None, per_source: bool = True) -> list[Hit]:
        """Items like a sound, in the sound's space (images too, when the audio tower is bound to the main one)."""
        embedded = _media(self.client, "audio").embed_audio([sound])[0]
        return self.search_vector(embedded.embedding, k, space=self._space("audio"), tags=tags, modality=modality,
                                  per_source=per_source)

    def search_vector(self, vector: np.ndarray, k: int = 10, *, space: str = MAIN_SPACE,
                      tags: Sequence[str] | None = None, modality: str | None = None,
                      per_source: bool = True) -> list[Hit]:
        """The `k` best items for a query vector of `space`; with `per_source`, each source (a video's moments)
        once, at its best."""
        return search_index(self._index(), vector, k, space=space, tags=tags, modality=modality,
                            per_source=per_source)

    def _space(self, modality: str | None) -> str:
        space_of = getattr(self.client, "space_of", None)
        return space_of(modality) if modality is not None and space_of is not None else MAIN_SPACE

    def classify(self, image, labels: Sequence[str], *, template: str = "{}") -> list[Label]:
        """Zero-shot classification: each label (formatted with `template`, e.g. "a photo of a {}"), best first."""
        if not labels:
            raise ValueError("classify needs at least one label")
        scores = self._scores(image, [template.format(label) for label in labels])
        probabilities = self.scoring.probabilities(scores)
        order = np.argsort(-scores, kind="stable")
        return [Label(label=labels[i], score=float(scores[i]), probability=float(probabilities[i])) for i in order]

    def rank(self, image, texts: Sequence[str]) -> list[tuple[str, float]]:
        """The texts by similarity to the image, best first, each with its score in the model's form: the
        cosine (CLIP) or the pair's sigmoid probability (SigLIP)."""
        scores = self._scores(image, list(texts))
        pairwise = self.scoring.pairwise(scores)
        return [(texts[i], float(pairwise[i])) for i in np.argsort(-scores, kind="stable")]

    @property
    def scoring(self) -> Scoring:
        """The embedder's score function (`Client` and `LocalEmbedder` know their model's), else CLIP's
        softmax at its usual logit scale of 100."""
        return getattr(self.client, "scoring", None) or Scoring()

    def _scores(self, image, texts: list[str]) -> np.ndarray:
        image_vector = self.client.embed_images([image])[0]
        return self.client.embed_texts(texts) @ image_vector

    def _index(self) -> IndexBackend:
        if self.index is None:
            raise ValueError("this Search has no index: pass one to search the collection")
        return self.index


def search_index(index: IndexBackend, vector: np.ndarray, k: int = 10, *, space: str = MAIN_SPACE,
                 tags: Sequence[str] | None = None, modality: str | None = None, per_source: bool = True
                 ) -> list[Hit]:
    """`index.search`, and with `per_source` each video once, at its best moment (more candidates are fetched
    until `k` distinct sources are found or the index has no more)."""
    if not per_source or not any(m == "video" and n for (m, _), n in index.modality_counts().items()):
        return index.search(vector, k, tags=tags, modality=modality, space=space)
    fetch = k * 4
    while True:
        hits = index.search(vector, fetch, tags=tags, modality=modality, space=space)
        best: dict[str, Hit] = {}
        for hit in hits:
            best.setdefault(hit.record.content_hash or hit.record.uri or str(hit.key), hit)
        if len(best) >= k or len(hits) < fetch:
            return list(best.values())[:k]
        fetch *= 4


# -- folder indexing --------------------------------------------------------------------------------------

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".ts", ".ogv"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"}
SUFFIXES = {"image": IMAGE_SUFFIXES, "video": VIDEO_SUFFIXES, "audio": AUDIO_SUFFIXES}


@dataclasses.dataclass
class IndexingReport:
    added: int = 0  # files (a video adds one item per moment)
    skipped: int = 0  # already indexed (same content hash)
    failed: list[tuple[Path, str]] = dataclasses.field(default_factory=list)
    items: int = 0  # index items added


def modality_of(path: Path) -> str:
    """"image", "video" or "audio", by suffix ("image" for anything else: the server says if it is not)."""
    suffix = path.suffix.lower()
    return next((kind for kind, suffixes in SUFFIXES.items() if suffix in suffixes), "image")


def find_media(paths: Iterable[str | Path], modalities: Sequence[str] = ("image", "video", "audio")) -> list[Path]:
    """Files of these modalities under the given files and folders (by suffix), sorted, each once; files
    named directly are taken whatever their suffix."""
    wanted = set().union(*(SUFFIXES[m] for m in modalities))
    found: set[Path] = set()
    for path in map(Path, paths):
        if path.is_dir():
            for root, _, names in os.walk(path):
                found.update(Path(root) / n for n in names if Path(n).suffix.lower() in wanted)
        elif path.is_file():
            found.add(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    return sorted(p.resolve() for p in found)


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files under the given files and folders (by suffix), sorted, each once."""
    return find_media(paths, ("image",))


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# What one embedded file adds to the index: its vectors, and each one's metadata beyond uri, hash and tags.
Rows = list[tuple[np.ndarray, dict]]


def index_files(
    index: IndexBackend, client: Embedder, files: Sequence[Path], *, batch_size: int = 64, save_every: int = 1024,
    tags: Sequence[str] = (), progress: Callable[[int], None] | None = None,
) -> IndexingReport:
    """Embed `files` not yet in `index` through `client` and add them; `progress(n)` after each batch.

    Images add one item each, a video one per moment (modality "video", with its start and end), a sound one
    (modality "audio", in the audio model's space); the modality is taken from the suffix."""
    report = IndexingReport()
    since_save = 0
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        loaded: list[tuple[Path, bytes, str]] = []
        for path in chunk:
            try:
                data = path.read_bytes()
            except OSError as error:
                report.failed.append((path, f"cannot read: {error.strerror}"))
                continue
            loaded.append((path, data, content_hash(data)))
        known = index.find_hashes(h for _, _, h in loaded)
        fresh: dict[str, list[tuple[Path, bytes, str]]] = {}
        seen = set()
        for item in loaded:
            if item[2] in known or item[2] in seen:
                report.skipped += 1
            else:
                seen.add(item[2])
                fresh.setdefault(modality_of(item[0]), []).append(item)
        for kind, items in fresh.items():
            for (path, _, digest), rows in _embed_files(client, kind, items, report):
                vectors = np.stack([vector for vector, _ in rows])
                index.add(vectors, [ItemMetadata(uri=str(path), content_hash=digest, tags=list(tags), **extra)
                                    for _, extra in rows])
                report.added += 1
                report.items += len(rows)
                since_save += len(rows)
        if since_save >= save_every:
            index.save()
            since_save = 0
        if progress is not None:
            progress(len(chunk))
    index.save()
    return report


def _embed_files(client: Embedder, kind: str, items: list[tuple[Path, bytes, str]], report: IndexingReport
                 ) -> list[tuple[tuple[Path, bytes, str], Rows]]:
    """Each file embedded into its index rows; refused files go to `report.failed` (one at a time when the
    server does not say which item it refused)."""
    while items:
        try:
            return list(zip(items, _rows(client, kind, [data for _, data, _ in items])))
        except InvalidInputError as error:
            refused = {e.index: e.message for e in error.errors if e.index is not None}
            if not refused:
                if len(items) == 1:
                    report.failed.append((items[0][0], str(error)))
                    return []
                return [pair for item in items for pair in _embed_files(client, kind, [item], report)]
            report.failed.extend((items[i][0], refused[i]) for i in sorted(refused))
            items = [item for i, item in enumerate(items) if i not in refused]
    return []


def _rows(client: Embedder, kind: str, data: list[bytes]) -> list[Rows]:
    if kind == "image":
        return [[(vector, {})] for vector in client.embed_images(data)]
    if kind == "video":
        return [[(vector, {"modality": "video", "start": float(a), "end": float(b)})
                 for vector, (a, b) in zip(video.segments, video.times)]
                for video in _media(client, "video").embed_videos(data)]
    space = getattr(client, "space_of", lambda _: MAIN_SPACE)("audio")
    return [[(sound.embedding, {"modality": "audio", "space": space, "start": float(sound.times[0, 0]),
                                "end": float(sound.times[-1, 1])})]
            for sound in _media(client, "audio").embed_audio(data)]


def _media(client, kind: str):
    method = "embed_videos" if kind == "video" else "embed_audio"
    if not hasattr(client, method):
        raise TypeError(f"{type(client).__name__} does not embed {kind}: use an mmserve.Client or LocalEmbedder")
    return client
