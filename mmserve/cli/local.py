"""export, quality, embed-text, embed-image: in this process, no server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from mmserve.cli import app, err, out
from mmserve.cli.options import MODEL, config_options
from mmserve.config import Settings


@app.command()
@config_options("model_dir", "cache_dir", "audio_model_dir")
def export(
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output directory (default: the cache).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Export even when a current export exists.")] = False,
    *, settings: Settings,
) -> None:
    """Export the towers to ONNX (needs the train extra: torch, transformers): the image and text towers, and
    the audio model's (the bundled one, or --audio-model-dir) into the cache."""
    import importlib.util

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        err.print("export needs torch and transformers: pip install 'mmserve[train]'")
        raise typer.Exit(2)
    from mmserve.models.export import export_towers

    target = out_dir or settings.export_dir()
    t = time.perf_counter()
    export_towers(settings.model_dir, target, force=force)
    out.print(f"towers of {settings.model_dir} in {target} ({time.perf_counter() - t:.1f} s)")
    audio_dir = settings.audio_dir()
    if audio_dir is not None:
        from mmserve.models.clap import export_audio

        t = time.perf_counter()
        audio_target = settings.audio_export_dir(audio_dir)
        export_audio(audio_dir, audio_target, force=force)
        out.print(f"audio towers of {audio_dir} in {audio_target} ({time.perf_counter() - t:.1f} s)")


@app.command()
@config_options(*MODEL)
def quality(
    per_combination: Annotated[int, typer.Option(help="Held-out images per attribute combination.")] = 5,
    *, settings: Settings,
) -> None:
    """Held-out zero-shot accuracy and text->image precision@5 of the model (in-process)."""
    from mmserve.dev.quality import evaluate
    from mmserve.embedder import LocalEmbedder

    embedder = LocalEmbedder(settings)
    report = evaluate(embedder.embed_pixels, embedder.embed_texts, image_size=embedder.info.image_size,
                      per_combination=per_combination)
    out.print(f"held-out images: {report.images}")
    for line in report.lines():
        out.print(line)


@app.command("embed-text")
@config_options(*MODEL, "batch_size")
def embed_text(
    texts: Annotated[list[str], typer.Argument(help="Texts to embed.")], *, settings: Settings,
) -> None:
    """Print text embeddings as JSON lines (in-process)."""
    from mmserve.embedder import LocalEmbedder

    _print_rows("text", texts, LocalEmbedder(settings).embed_texts(texts))


@app.command("embed-image")
@config_options(*MODEL, "batch_size")
def embed_image(
    files: Annotated[list[Path], typer.Argument(help="Image files (JPEG or PNG).")], *, settings: Settings,
) -> None:
    """Print image embeddings as JSON lines (in-process)."""
    from mmserve.embedder import LocalEmbedder

    _print_rows("file", [str(path) for path in files], LocalEmbedder(settings).embed_images(files))


def _print_rows(key: str, items: list[str], vectors) -> None:
    """One JSON line per item: the item under `key`, its embedding rounded to 6 decimals."""
    for item, vector in zip(items, vectors):
        print(json.dumps({key: item, "embedding": [round(float(v), 6) for v in vector]}))
