"""Index image files: walk folders, skip what is already indexed, embed through the server, save as we go.

Files are identified by a hash of their bytes, so a re-run adds only new
content and an interrupted run resumes where its last save left off (the index
is saved every `save_every` files and at the end). A file the server refuses
(corrupt, truncated, too large) or that cannot be read is reported, never fatal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from mmserve.index import Index, ItemMetadata

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
    index: Index, client, files: Sequence[Path], *, batch_size: int = 64, save_every: int = 1024,
    tags: Sequence[str] = (), progress: Callable[[int], None] | None = None,
) -> IndexingReport:
    """Embed `files` not yet in `index` through `client` and add them; `progress(n)` after each batch."""
    from mmserve.errors import InvalidInputError

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


def _embed_one_by_one(index: Index, client, items, tags, report: IndexingReport) -> list:
    from mmserve.errors import InvalidInputError

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
