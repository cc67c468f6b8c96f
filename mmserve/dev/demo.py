"""The end-to-end demo: a synthetic photo gallery, embedded and searched across modalities.

Writes a gallery of real JPEG and PNG files with known content, embeds them
(through Triton with an `mmserve.Client`, or in-process), indexes them in an
`mmserve.Index`, then answers text-to-image, image-to-image (index searches)
and image-to-text queries, then text-to-video-moment queries over videos of
the same scenes (and, with an audio model, text-to-sound and sound-to-image),
checking each hit against the ground truth and printing timings.
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
    if hasattr(embedder, "embed_videos"):
        timings |= _video_demo(workdir, embedder, out)
    if hasattr(embedder, "embed_audio") and _has_audio(embedder):
        timings |= _audio_demo(workdir, embedder, gallery, items, out)
    return timings


SOUND_QUERIES = ("a red circle", "a small blue triangle", "a large cross", "a square on a white background")


def _sound_words(sound) -> str:
    a = sound.attributes
    return f"{a.pitch} {a.timbre}, {a.rhythm}, {a.noise} noise"


def _has_audio(embedder) -> bool:
    summary = getattr(embedder, "model_summary", None)
    if summary is not None:
        return "audio" in summary().spaces
    return getattr(embedder, "settings", None) is not None and embedder.settings.audio_dir() is not None


def _audio_demo(workdir: Path, embedder, gallery: np.ndarray, items: list[GalleryItem], out) -> dict[str, float]:
    """Text -> sound and sound -> image with the bundled audio tower, checked against the generated truth: a
    sound's attributes are bound to caption words (pitch -> color, timbre -> shape, rhythm -> size, noise ->
    background; `mmserve.dev.sounds`)."""
    import shutil

    from mmserve.dev import sounds as A
    from mmserve.index import Index
    from mmserve.search import Search, index_files

    directory = workdir / "sounds"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    generated = A.heldout_sounds(1, start=5000)[::3]  # 96 sounds, every attribute value several times
    for i, sound in enumerate(generated):
        A.write_wav(sound, directory / f"sound_{i:03d}.wav")
    space = embedder.space_of("audio")
    out(f"\n== text -> sound ({space} space: the bundled audio tower, bound to the image-text space) ==")
    t = time.perf_counter()
    shutil.rmtree(workdir / "sound-index", ignore_errors=True)
    index = Index.create(workdir / "sound-index", gallery.shape[1])
    report = index_files(index, embedder, sorted(directory.glob("*.wav")))
    seconds = sum(len(sound.samples) / sound.sample_rate for sound in generated)
    elapsed = time.perf_counter() - t
    out(f"indexed {report.added} WAV files ({seconds:.0f} s of sound) in {elapsed:.2f} s "
        f"({seconds / elapsed:.0f} audio seconds/s)")
    by_uri = {str((directory / f"sound_{i:03d}.wav").resolve()): sound for i, sound in enumerate(generated)}
    search = Search(embedder, index)
    hits_ok, shown = 0, 0
    for query in SOUND_QUERIES:
        caption = _parse_query(query) if "background" not in query else A.caption_naming(
            {"shape": query.split()[1], "background": query.split()[-2]})
        found = search.search_text(query, 3, modality="audio")
        marks = [A.caption_matches_sound(caption, by_uri[hit.record.uri or ""]) for hit in found]
        relevant = sum(A.caption_matches_sound(caption, sound) for sound in generated)
        hits_ok += sum(marks[: min(3, relevant)])  # of the sounds that match, at most 3 per query
        shown += min(3, relevant)
        out(f'"{query}" ({relevant} matching sounds): ' + "  ".join(f"{Path(hit.record.uri or '').name} {hit.score:.3f} {'ok' if ok else 'no'}"
                                       f" ({_sound_words(by_uri[hit.record.uri or ''])})"
                                       for hit, ok in zip(found, marks)))
    out("\n== sound -> image (the gallery; the image shares the sound's bound color, shape and size) ==")
    vectors = embedder.embed_audio([directory / f"sound_{i:03d}.wav" for i in range(4)])
    shares = []
    for i, embedded in enumerate(vectors):
        words = generated[i].attributes.words()
        best = int(np.argmax(gallery @ embedded.embedding))
        obj = items[best].scene.objects[0]
        same = [a for a in ("color", "shape", "size") if obj.attribute(a) == words[a]]
        shares.append(len(same))
        out(f"sound_{i:03d}.wav ({_sound_words(generated[i])}): {items[best].path.name} "
            f"({items[best].description}); shares {', '.join(same) or 'nothing'}")
    index.close()
    out(f"text -> sound precision@3: {hits_ok / max(shown, 1):.2f} (of the sounds that match, at most 3 per query)")
    return {"text_to_sound_precision_at_3": hits_ok / max(shown, 1),
            "sound_to_image_shared_attributes": float(np.mean(shares)), "audio_seconds_per_s": seconds / elapsed}


VIDEO_QUERIES = ("a large blue square", "a large yellow circle", "a large green triangle", "a large red cross")


def write_videos(directory: Path, count: int = 4, scenes_per_video: int = 4, seconds_per_scene: float = 2.0,
                 seed: int = 0) -> list[tuple[Path, list[S.Scene]]]:
    """Videos (MP4/H.264 and WebM/VP9, alternately) that each show `scenes_per_video` single-object scenes in
    turn, and what each shows."""
    from mmserve.dev.videos import write_scene_video

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    combinations = [(c, sh) for c in S.COLORS for sh in S.SHAPES]
    written = []
    for i in range(count):
        picks = rng.choice(len(combinations), scenes_per_video, replace=False)
        scenes = [S.scene_with([S.SceneObject(combinations[p][0], combinations[p][1], "large", "center")], "white",
                               seed * 1000 + i * 10 + j) for j, p in enumerate(picks)]
        path = directory / f"video_{i:02d}.{'mp4' if i % 2 == 0 else 'webm'}"
        write_scene_video(path, scenes, seconds_per_scene=seconds_per_scene)
        written.append((path, scenes))
    return written


def _video_demo(workdir: Path, embedder, out) -> dict[str, float]:
    """Text -> video moment: each query's best moment checked against the scene on screen then."""
    import shutil

    from mmserve.index import Index
    from mmserve.search import Search, index_files

    seconds_per_scene = 2.0
    videos = write_videos(workdir / "videos", seconds_per_scene=seconds_per_scene)
    # Every query names a scene that one of the videos shows.
    shown = {S.full_caption(scene).text for _, scenes in videos for scene in scenes}
    queries = [q for q in VIDEO_QUERIES if any(q.split(" ", 2)[2] in text for text in shown)] or [
        "a " + next(iter(shown)).split(" ", 1)[1]]
    out("\n== text -> video moment ==")
    query_vectors = embedder.embed_texts(queries)
    t = time.perf_counter()
    shutil.rmtree(workdir / "video-index", ignore_errors=True)
    index = Index.create(workdir / "video-index", query_vectors.shape[1])
    report = index_files(index, embedder, [path for path, _ in videos])
    seconds = sum(len(scenes) * seconds_per_scene for _, scenes in videos)
    elapsed = time.perf_counter() - t
    out(f"indexed {len(videos)} videos ({seconds:.0f} s of MP4 and WebM) as {report.items} moments in "
        f"{elapsed:.2f} s ({seconds / elapsed:.0f} video seconds/s; {report.skipped} already indexed)")
    search = Search(embedder, index)
    by_path = {str(path): scenes for path, scenes in videos}
    correct = 0
    for query, vector in zip(queries, query_vectors):
        hit = search.search_vector(vector, 1, modality="video")[0]
        scenes = by_path[hit.record.uri or ""]
        middle = ((hit.record.start or 0.0) + (hit.record.end or 0.0)) / 2
        scene = scenes[min(int(middle // seconds_per_scene), len(scenes) - 1)]
        ok = S.caption_matches(_parse_query(query), scene)
        correct += ok
        out(f'"{query}": {Path(hit.record.uri or "").name} at {hit.record.start:.0f}-{hit.record.end:.0f} s  '
            f"{hit.score:.3f}  {'ok ' if ok else 'no '} (on screen: {S.full_caption(scene).text})")
    index.close()
    return {"video_moment_accuracy": correct / len(queries), "video_seconds_per_s": seconds / elapsed}


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
