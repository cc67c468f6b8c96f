"""index, index migrate, search, classify, info: the index and cross-modal queries through a running server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from typer.core import TyperCommand

from mmserve.cli import app, err, out
from mmserve.cli.options import CLIENT, MODEL, config_options
from mmserve.config import Settings


def connect(settings: Settings):
    """An SDK client for the configured server (URL, key, TLS files, batch size)."""
    import mmserve

    return mmserve.Client(settings.server, batch_size=settings.batch_size, **settings.client_options())


# `mmserve index migrate SRC DST` beside `mmserve index PATHS...`: a command group would take the first path for
# a subcommand's name (and list `index` after every plain command), so `index` stays a command whose first
# argument "migrate" hands the rest to the migrate command (a folder named migrate: `mmserve index ./migrate`).
_migrate_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


class _IndexCommand(TyperCommand):
    def make_context(self, info_name, args, parent=None, **extra):
        if args and args[0] == "migrate":
            migrate = typer.main.get_command(_migrate_app)
            return migrate.make_context(f"{info_name} migrate", list(args[1:]), parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)


@app.command("index", cls=_IndexCommand, epilog="mmserve index migrate SRC DST copies an index into another "
             "(any two backends); see mmserve index migrate --help.")
@config_options("index", *CLIENT, "batch_size")
def index_command(
    paths: Annotated[list[Path], typer.Argument(help="Image, video and sound files and folders (walked "
                                                "recursively; by suffix: .jpg .png, .mp4 .webm .mov .mkv, .wav "
                                                ".flac .ogg .opus .mp3).")],
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Tag every added file (repeatable).")] = None,
    storage: Annotated[str, typer.Option(help="Vector storage of a new index: f16 or i8 (embedded), f16 or f32 "
                                         "(Milvus).")] = "f16",
    modality: Annotated[Optional[list[str]], typer.Option(
        "--modality", help="Index only these: image, video, audio (repeatable; default: all three).")] = None,
    *, settings: Settings,
) -> None:
    """Embed images, videos and sounds through the server and add them to the index.

    A video adds one item per sampled moment (with its start and end), a sound one item (in the audio
    model's space). Files already indexed (same content hash) are skipped, so a re-run is incremental and an
    interrupted run resumes. Unreadable or refused files are listed at the end; they do not stop the run.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mmserve.index import open_index
    from mmserve.search import SUFFIXES, find_media, index_files

    kinds = modality or list(SUFFIXES)
    unknown = sorted(set(kinds) - set(SUFFIXES))
    if unknown:
        raise typer.BadParameter(f"unknown modality {', '.join(unknown)}: image, video or audio", param_hint="--modality")
    files = find_media(paths, kinds)
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
            size = len(store)
    out.print(f"{report.added} files added ({report.items} items), {report.skipped} already indexed, "
              f"{len(report.failed)} failed; {size} items in {settings.index}")
    for path, reason in report.failed:
        err.print(f"  failed: {path}: {reason}")


@_migrate_app.command()
def migrate(
    source: Annotated[str, typer.Argument(help="The index to copy: a directory, milvus://HOST:PORT/COLLECTION "
                                          "(http://, https://) or FILE.db[#COLLECTION] (milvus-lite).")],
    destination: Annotated[str, typer.Argument(help="Where to copy it, any of the same kinds: new or empty "
                                               "(unless --append).")],
    append: Annotated[bool, typer.Option("--append", help="Add to a destination that holds items already (under "
                                         "new keys).")] = False,
    storage: Annotated[Optional[str], typer.Option(help="Vector storage of a new destination: f16 or i8 "
                                                   "(embedded), f32 or f16 (Milvus); default: the source's where the "
                                                   "destination has it, else f16 (embedded) or f32 (Milvus).")] = None,
    batch_size: Annotated[int, typer.Option(help="Items read and written per step.", min=1)] = 1024,
) -> None:
    """Copy every item (vector, metadata, times) from one index into another, between any two backends.

    Keys are kept (a new or empty destination; with --append the items get new keys), vectors are copied as
    stored, and the destination's count is checked at the end. The source is only read.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mmserve.index import index_exists, open_index
    from mmserve.index.backend import is_milvus_location

    if Path(source).expanduser().resolve() == Path(destination).expanduser().resolve():
        raise typer.BadParameter("the source and the destination are the same index")
    with open_index(source, view=True) as origin:
        total = len(origin)
        target_is_milvus = is_milvus_location(destination)
        if index_exists(destination):
            target = open_index(destination)
            if target.dim != origin.dim:
                target.close()
                raise ValueError(f"{destination} holds {target.dim}-dimensional vectors, {source} {origin.dim}")
            if len(target) and not append:
                target.close()
                raise ValueError(f"{destination} holds {len(target)} items already: give --append to add to them")
        else:
            choices = ("f32", "f16") if target_is_milvus else ("f16", "i8")
            kept = getattr(origin, "storage", None)
            wanted = storage or (kept if kept in choices else choices[0])
            if wanted not in choices:
                raise typer.BadParameter(f"{wanted!r}: a new {'Milvus' if target_is_milvus else 'embedded'} index "
                                         f"stores {' or '.join(choices)}", param_hint="--storage")
            target = open_index(destination, origin.dim, storage=wanted, model=origin.model)
        with target, Progress(TextColumn("migrating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                              console=err, transient=True) as bar:
            before = len(target)
            task = bar.add_task("items", total=total)
            copied = 0
            for vectors, records in origin.items(batch_size):
                target.restore(vectors, records, keep_keys=not append)
                copied += len(records)
                bar.advance(task, len(records))
            target.save()
            after = len(target)
            kinds = ", ".join(f"{n} {modality}" + ("" if space == "main" else f" ({space} space)")
                              for (modality, space), n in sorted(target.modality_counts().items()))
    if copied != total or after != before + copied:
        raise ValueError(f"migration incomplete: {copied} of {total} items read, {after - before} arrived in "
                         f"{destination}")
    out.print(f"{copied} items copied from {source} to {destination}; it holds {after}" +
              (f": {kinds}" if kinds else ""))


@app.command()
@config_options("index", *CLIENT)
def search(
    text: Annotated[Optional[str], typer.Argument(help="What to look for (text -> images, video moments, "
                                                  "sounds).")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="Find items like this image instead.")] = None,
    video: Annotated[Optional[Path], typer.Option("--video", help="Find items like this video instead.")] = None,
    sound: Annotated[Optional[Path], typer.Option("--audio", help="Find items like this sound instead.")] = None,
    modality: Annotated[Optional[str], typer.Option(
        "--modality", help="Only items of this modality: image, video or audio (a CLAP model's sounds are "
        "searched with its own text tower).")] = None,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 10,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Only items with this tag (repeatable).")] = None,
    moments: Annotated[bool, typer.Option("--moments", help="Every matching video moment, not each video once "
                                          "at its best.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
    *, settings: Settings,
) -> None:
    """Search the index with a text, an image, a video or a sound; best matches first (a video at its best
    moment, with the moment's start and end)."""
    from mmserve.index import open_index
    from mmserve.search import Search

    queries = {"text": text, "--image": image, "--video": video, "--audio": sound}
    given = [name for name, value in queries.items() if value is not None]
    if len(given) != 1:
        raise typer.BadParameter("give one query: a text, --image FILE, --video FILE or --audio FILE")
    options: dict[str, Any] = {"tags": tag, "modality": modality, "per_source": not moments}
    with open_index(settings.index, view=True) as store, connect(settings) as client:
        finder = Search(client, store)
        try:
            if text is not None:
                hits = finder.search_text(text, k, **options)
            elif image is not None:
                hits = finder.search_image(image, k, **options)
            elif video is not None:
                hits = finder.search_video(video, k, **options)
            else:
                hits = finder.search_audio(sound, k, **options)
        except ValueError as error:  # a modality without items in the query's space, an unknown modality
            err.print(f"search refused: {error}")
            raise typer.Exit(2) from None
        size = len(store)
    if as_json:
        print(json.dumps([{"key": h.key, "score": round(h.score, 6), "uri": h.record.uri,
                           "modality": h.record.modality, "start": h.record.start, "end": h.record.end,
                           "caption": h.record.caption, "tags": h.record.tags} for h in hits], indent=2))
        return
    table = Table("rank", "score", "kind", "uri", "moment", "tags", title=f"{len(hits)} of {size} items")
    for rank, hit in enumerate(hits, 1):
        record = hit.record
        moment = "" if record.start is None or record.modality != "video" else (
            f"{_clock(record.start)}-{_clock(record.end or record.start)}")
        table.add_row(str(rank), f"{hit.score:.3f}", record.modality, record.uri or str(hit.key), moment,
                      ",".join(record.tags))
    out.print(table)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:04.1f}"


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
        ("video", f"{settings.video_frames_per_second:g} frame/s, at most {settings.video_max_frames} per video"
                  + (f", scene cuts at {settings.video_scene_threshold:g}" if settings.video_scene_threshold else "")),
        ("audio model", _audio_row(settings)),
        ("cpu features", " ".join(cpu_features())),
        ("resample kernels", resample_kernel()),
    ]
    rows += _index_rows(settings.index)
    for name, value in rows:
        out.print(f"{name:<17} {value}")


def _audio_row(settings: Settings) -> str:
    from mmserve.models.audio_info import AudioModelInfo

    audio_dir = settings.audio_dir()
    if audio_dir is None:
        return "none (--audio-model-dir: a CLAP checkpoint)"
    info = AudioModelInfo.from_dir(audio_dir)
    features = info.features
    space = "its own space, own text tower" if info.has_text_tower else f"bound to the {info.space!r} space"
    return (f"{info.family} in {audio_dir} ({space}; {features.sample_rate} Hz, {features.window_seconds:g} s "
            f"windows, {features.n_mels} mel bins, dim {info.embedding_dim})")


def _index_rows(location: str) -> list[tuple[str, str]]:
    from mmserve.index import index_exists, open_index

    if not index_exists(location):
        return [("index", f"{location} (none yet: mmserve index FOLDER)")]
    with open_index(location, view=True) as store:
        storage = getattr(store, "storage", None)
        server = getattr(store, "server", None)
        kinds = ", ".join(f"{n} {modality}" + ("" if space == "main" else f" ({space} space)")
                          for (modality, space), n in sorted(store.modality_counts().items()))
        return [("index", location + (f" (Milvus, {server})" if server else "")),
                ("index size", f"{len(store)} items" + (f": {kinds}" if kinds else "")),
                ("index vectors", f"{store.dim} dimensions" + (f", {storage} storage" if storage else "")),
                ("index model", store.model or "unknown")]
