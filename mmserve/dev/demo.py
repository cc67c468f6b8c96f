"""The end-to-end demo: a synthetic photo gallery, embedded and searched across modalities.

Writes a gallery of real JPEG and PNG files with known content, embeds them
(through Triton with an `mmserve.Client`, or in-process), indexes them in an
`mmserve.Index`, then answers text-to-image, image-to-image (index searches)
and image-to-text queries, checking each hit against the ground truth and
printing timings.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from pathlib import Path

import numpy as np

from mmserve.dev import synthetic as S

TEXT_QUERIES = (
    "a large red circle on the left",
    "a small blue square at the top",
    "a green triangle",
    "a yellow cross on the right",
    "a purple shape in the center",
    "an orange square",
)


@dataclasses.dataclass(frozen=True)
class GalleryItem:
    path: Path
    scene: S.Scene

    @property
    def description(self) -> str:
        return S.full_caption(self.scene).text + f" on a {self.scene.background} background"


def write_gallery(directory: Path, count: int, size: int = 160, seed: int = 0) -> list[GalleryItem]:
    """`count` images (alternately JPEG and PNG) plus `gallery.jsonl` with their ground truth."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    items = []
    with open(directory / "gallery.jsonl", "w") as manifest:
        for i, scene in enumerate(S.gallery_scenes(count, seed)):
            suffix = "jpg" if i % 2 == 0 else "png"
            path = directory / f"img_{i:04d}.{suffix}"
            buffer = io.BytesIO()
            Image.fromarray(S.render_scene(scene, size)).save(
                buffer, format="JPEG" if suffix == "jpg" else "PNG", quality=92
            )
            path.write_bytes(buffer.getvalue())
            items.append(GalleryItem(path, scene))
            manifest.write(json.dumps({"file": path.name, "seed": scene.seed}) + "\n")
    return items


def run_demo(workdir: Path, gallery_size: int, embedder, out=print) -> dict[str, float]:
    """Run every query kind and return the figures it printed (for tests).

    `embedder` is anything with `embed_images(paths)` and `embed_texts(texts)`:
    an `mmserve.Client` talking to Triton, or an in-process `LocalEmbedder`.
    """
    timings: dict[str, float] = {}

    t = time.perf_counter()
    items = write_gallery(workdir / "gallery", gallery_size)
    out(f"wrote {len(items)} gallery images (JPEG + PNG) to {workdir / 'gallery'} "
        f"in {time.perf_counter() - t:.2f} s")

    t = time.perf_counter()
    gallery = embedder.embed_images([item.path for item in items], progress=True)
    elapsed = time.perf_counter() - t
    timings["images_per_s"] = len(items) / elapsed
    out(f"embedded {len(items)} images in {elapsed:.2f} s ({timings['images_per_s']:.0f} images/s, "
        "decode + preprocess + image tower)")

    import shutil

    from mmserve.index import Index

    shutil.rmtree(workdir / "index", ignore_errors=True)
    index = Index.create(workdir / "index", gallery.shape[1])
    index.add(gallery, [{"uri": str(item.path), "caption": item.description} for item in items])
    index.save()
    out(f"indexed them in {workdir / 'index'} (usearch HNSW + SQLite metadata; keys = gallery order)")

    out("\n== text -> image ==")
    t = time.perf_counter()
    query_emb = embedder.embed_texts(list(TEXT_QUERIES))
    timings["text_query_ms"] = (time.perf_counter() - t) * 1000 / len(TEXT_QUERIES)
    hits, possible = 0, 0
    for query, vector in zip(TEXT_QUERIES, query_emb):
        caption = _parse_query(query)
        order = [hit.key for hit in index.search(vector, 5)]
        correct = [S.caption_matches(caption, items[j].scene) for j in order]
        relevant = sum(S.caption_matches(caption, item.scene) for item in items)
        # A query with fewer than 5 true images in the gallery can score at most that many.
        hits += sum(correct[: min(5, relevant)])
        possible += min(5, relevant)
        out(f'"{query}" ({relevant} matching images in the gallery)')
        for rank, (j, ok) in enumerate(zip(order, correct), 1):
            out(f"  {rank}. {items[j].path.name}  {gallery[j] @ vector:.3f}  {'ok ' if ok else 'no '} "
                f"{items[j].description}")
    timings["text_to_image_precision_at_5"] = hits / max(possible, 1)
    out(f"precision@5 over these queries: {timings['text_to_image_precision_at_5']:.2f} "
        "(of the images that match, at most 5 per query) "
        f"({timings['text_query_ms']:.1f} ms per query embedding)")

    out("\n== image -> image ==")
    for j in (0, 1):
        order = [hit.key for hit in index.search(gallery[j], 4) if hit.key != j][:3]
        out(f"query {items[j].path.name}: {items[j].description}")
        for k in order:
            out(f"  {items[k].path.name}  {gallery[k] @ gallery[j]:.3f}  {items[k].description}")

    out("\n== image -> text (tagging with the 360 full-description labels) ==")
    labels = [S.full_caption(S.Scene((o,), "gray", 0)).text for o in S.all_combinations()]
    label_emb = embedder.embed_texts(labels)
    single = [i for i, item in enumerate(items) if len(item.scene.objects) == 1]
    top1 = [labels[int(np.argmax(label_emb @ gallery[i]))] == S.full_caption(items[i].scene).text
            for i in single]
    for i in single[:4]:
        best = np.argsort(-(label_emb @ gallery[i]))[:3]
        out(f"{items[i].path.name} ({items[i].description}):")
        out("  " + " | ".join(f"{labels[b]} {label_emb[b] @ gallery[i]:.3f}" for b in best))
    timings["image_to_text_top1"] = float(np.mean(top1))
    index.close()
    out(f"top-1 label accuracy on {len(single)} single-object images: {timings['image_to_text_top1']:.2f}")
    return timings


def _parse_query(query: str) -> S.CaptionSpec:
    """The ground-truth reading of a demo query (its words are all generator vocabulary)."""
    words = query.split()
    found: dict[str, str] = {}
    for attribute in ("color", "shape", "size"):
        for value in S.ATTRIBUTE_VALUES[attribute]:
            if value in words:
                found[attribute] = value
    for position, phrase in S.POSITION_PHRASES.items():
        if query.endswith(phrase):
            found["position"] = position
    return S.CaptionSpec(objects=(S.ObjectQuery(**found),))
