"""Cross-modal search and folder indexing, over any `Embedder` (the server's client, or in-process) and any
index backend (`mmserve.index.IndexBackend`).

    search = Search(mmserve.Client("grpc://127.0.0.1:8001"), open_index("photos.index", view=True))
    search.search_text("a red circle", k=5)          # text -> image
    search.search_image("query.jpg", k=5)            # image -> image
    search.classify("query.jpg", ["cat", "dog"])     # image -> text: zero-shot labels with probabilities
    search.rank("query.jpg", ["a cat", "a dog"])     # image -> text: the texts by similarity

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
from mmserve.index import Hit, IndexBackend, ItemMetadata
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

    def search_text(self, text: str, k: int = 10, *, tags: Sequence[str] | None = None) -> list[Hit]:
        return self._index().search(self.client.embed_texts([text])[0], k, tags=tags)

    def search_image(self, image, k: int = 10, *, tags: Sequence[str] | None = None) -> list[Hit]:
        return self._index().search(self.client.embed_images([image])[0], k, tags=tags)

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


# -- folder indexing --------------------------------------------------------------------------------------

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png"}


@dataclasses.dataclass
class IndexingReport:
    added: int = 0
    skipped: int = 0  # already indexed (same content hash)
    failed: list[tuple[Path, str]] = dataclasses.field(default_factory=list)


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files under the given files and folders (by suffix), sorted, each once."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if path.is_dir():
            for root, _, names in os.walk(path):
                found.update(Path(root) / n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.add(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    return sorted(p.resolve() for p in found)


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def index_files(
    index: IndexBackend, client: Embedder, files: Sequence[Path], *, batch_size: int = 64, save_every: int = 1024,
    tags: Sequence[str] = (), progress: Callable[[int], None] | None = None,
) -> IndexingReport:
    """Embed `files` not yet in `index` through `client` and add them; `progress(n)` after each batch."""
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
        fresh, seen = [], set()
        for item in loaded:
            if item[2] in known or item[2] in seen:
                report.skipped += 1
            else:
                seen.add(item[2])
                fresh.append(item)
        while fresh:
            try:
                vectors = client.embed_images([data for _, data, _ in fresh])
            except InvalidInputError as error:
                refused = {e.index: e.message for e in error.errors if e.index is not None}
                if not refused:  # cannot tell which: fall back to one at a time
                    fresh = _embed_one_by_one(index, client, fresh, tags, report)
                    continue
                report.failed.extend((fresh[i][0], refused[i]) for i in sorted(refused))
                fresh = [item for i, item in enumerate(fresh) if i not in refused]
                continue
            index.add(vectors, [_metadata(path, digest, tags) for path, _, digest in fresh])
            report.added += len(fresh)
            since_save += len(fresh)
            fresh = []
        if since_save >= save_every:
            index.save()
            since_save = 0
        if progress is not None:
            progress(len(chunk))
    index.save()
    return report


def _embed_one_by_one(index: IndexBackend, client: Embedder, items, tags, report: IndexingReport) -> list:
    for path, data, digest in items:
        try:
            vector = client.embed_images([data])
        except InvalidInputError as error:
            report.failed.append((path, str(error)))
            continue
        index.add(vector, [_metadata(path, digest, tags)])
        report.added += 1
    return []


def _metadata(path: Path, digest: str, tags: Sequence[str]) -> ItemMetadata:
    return ItemMetadata(uri=str(path), content_hash=digest, tags=list(tags))
