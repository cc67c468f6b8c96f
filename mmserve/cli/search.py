"""index, search, classify, info: the index and cross-modal queries through a running server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from mmserve.cli import app, err, out
from mmserve.cli.options import CLIENT, MODEL, config_options
from mmserve.config import Settings


def connect(settings: Settings):
    """An SDK client for the configured server (URL, key, TLS files, batch size)."""
    import mmserve

    return mmserve.Client(settings.server, batch_size=settings.batch_size, **settings.client_options())


@app.command("index")
@config_options("index", *CLIENT, "batch_size")
def index_command(
    paths: Annotated[list[Path], typer.Argument(help="Image files and folders (walked recursively).")],
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Tag every added image (repeatable).")] = None,
    storage: Annotated[str, typer.Option(help="Vector storage of a new index: f16 or i8.")] = "f16",
    *, settings: Settings,
) -> None:
    """Embed images through the server and add them to the index.

    Files already indexed (same content hash) are skipped, so a re-run is incremental and an interrupted run
    resumes. Unreadable or refused files are listed at the end; they do not stop the run.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mmserve.index import open_index
    from mmserve.search import find_images, index_files

    files = find_images(paths)
    with connect(settings) as client:
        summary = client.model_summary()
        store = open_index(settings.index, summary.embedding_dim, storage=storage,
                           model=f"dim {summary.embedding_dim}, image {summary.image_size}px")
        with store, Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                             console=err, transient=True) as bar:
            task = bar.add_task("files", total=len(files))
            try:
                report = index_files(store, client, files, batch_size=settings.batch_size, tags=tag or (),
                                     progress=lambda n: bar.advance(task, n))
            except KeyboardInterrupt:
                store.save()
                err.print(f"interrupted: {len(store)} images are indexed and saved; run again to resume")
                raise
    out.print(f"{report.added} added, {report.skipped} already indexed, {len(report.failed)} failed; "
              f"{len(store)} images in {settings.index}")
    for path, reason in report.failed:
        err.print(f"  failed: {path}: {reason}")


@app.command()
@config_options("index", *CLIENT)
def search(
    text: Annotated[Optional[str], typer.Argument(help="What to look for (text -> image).")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="Find images like this one instead.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 10,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Only images with this tag (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
    *, settings: Settings,
) -> None:
    """Search the index with a text or an image; best matches first."""
    from mmserve.index import open_index
    from mmserve.search import Search

    if (text is None) == (image is None):
        raise typer.BadParameter("give a text or --image FILE (one of them)")
    with open_index(settings.index, view=True) as store, connect(settings) as client:
        finder = Search(client, store)
        hits = finder.search_text(text, k, tags=tag) if text is not None else finder.search_image(image, k, tags=tag)
    if as_json:
        print(json.dumps([{"key": h.key, "score": round(h.score, 6), "uri": h.record.uri,
                           "caption": h.record.caption, "tags": h.record.tags} for h in hits], indent=2))
        return
    table = Table("rank", "score", "uri", "tags", title=f"{len(hits)} of {len(store)} images")
    for rank, hit in enumerate(hits, 1):
        table.add_row(str(rank), f"{hit.score:.3f}", hit.record.uri or str(hit.key), ",".join(hit.record.tags))
    out.print(table)


@app.command()
@config_options(*CLIENT)
def classify(
    image: Annotated[Path, typer.Argument(help="Image file.")],
    labels: Annotated[str, typer.Option(help="Comma-separated labels, e.g. 'cat,dog,car'.")],
    template: Annotated[str, typer.Option(help="Prompt template for each label.")] = "{}",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    *, settings: Settings,
) -> None:
    """Zero-shot image -> text: score each label against the image (probabilities at CLIP's temperature)."""
    from mmserve.search import Search

    names = [label.strip() for label in labels.split(",") if label.strip()]
    with connect(settings) as client:
        results = Search(client).classify(image, names, template=template)
    if as_json:
        print(json.dumps([r.model_dump() for r in results], indent=2))
        return
    table = Table("label", "score", "probability")
    for result in results:
        table.add_row(result.label, f"{result.score:.3f}", f"{result.probability:.3f}")
    out.print(table)


@app.command()
@config_options("index", *MODEL[:3], "audio_model_dir")
def info(*, settings: Settings) -> None:
    """Model facts, runtime, CPU features, and the index (size, dimensions, storage) if there is one."""
    from mmserve.cpu import cpu_features, resample_kernel
    from mmserve.models.export import export_scoring, is_current
    from mmserve.models.info import ModelInfo

    model = ModelInfo.from_dir(settings.model_dir)
    exported = is_current(settings.model_dir, settings.export_dir())
    described = model.summary()
    if exported:
        scoring = export_scoring(settings.export_dir())
        described["score"] += f" (logit scale {scoring.logit_scale:.4g}" + (
            f", bias {scoring.logit_bias:.4g})" if scoring.function == "sigmoid" else ")")
    rows = [
        ("model directory", str(model.path)),
        *described.items(),
        ("mean / std", f"{model.image_mean} / {model.image_std}"),
        ("embedding dim", str(model.embedding_dim)),
        ("runtime", f"{settings.runtime} (precision {settings.precision})"),
        ("ONNX export", f"{settings.export_dir()} ({'current' if exported else 'missing: run mmserve export'})"),
        ("cpu features", " ".join(cpu_features())),
        ("resample kernels", resample_kernel()),
    ]
    rows += _index_rows(settings.index)
    for name, value in rows:
        out.print(f"{name:<17} {value}")


def _index_rows(path: Path) -> list[tuple[str, str]]:
    from mmserve.index import index_exists, open_index

    if not index_exists(path):
        return [("index", f"{path} (none yet: mmserve index FOLDER)")]
    with open_index(path, view=True) as store:
        storage = getattr(store, "storage", None)
        return [("index", str(path)), ("index size", f"{len(store)} images"),
                ("index vectors", f"{store.dim} dimensions" + (f", {storage} storage" if storage else "")),
                ("index model", store.model or "unknown")]
