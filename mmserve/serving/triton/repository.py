"""`mmserve build`: write a Triton model repository for a model directory (any supported family).

With a runtime mmserve loads itself (`Runtime.triton_backend == "python"`: OpenVINO, ONNX Runtime):

    embed_image        BYTES image -> embedding               (C++ decode/resize/crop + the image tower, one process)
    image_tower        ensemble: uint8 pixels -> embed_image's tower
    embed_text         BYTES UTF-8 -> embedding               (C++ CLIP BPE + the text tower, one process)
    text_tower         ensemble: token ids (+ lengths) -> embed_text's tower
    image_preprocess   BYTES image -> uint8 pixels            (decoding alone)
    text_tokenize      BYTES UTF-8 -> token ids + lengths     (tokenizing alone)

The configs come from `templates/` (`templates/<backend>/` for the ones that
depend on how the towers are hosted; a native Triton backend, TensorRT on
GPUs, brings its own directory there); each Python model's `model.py` is a
one-line import of its class in `mmserve.serving.triton.models`. The
repository is self-contained: the ONNX towers and the model's
tokenizer/preprocessor files are copied (hard-linked where possible) into the
version directories.
"""

from __future__ import annotations

import os
import shutil
import string
from importlib import resources
from pathlib import Path

from mmserve.config import BuildOptions, Settings
from mmserve.models.export import IMAGE_TOWER_FILE, TEXT_TOWER_FILE, export_scoring, export_towers, is_current
from mmserve.models.info import ModelInfo
from mmserve.runtimes import runtime

# model -> (template, the Python module behind it or None for an ensemble, the tower file it holds)
LAYOUTS: dict[str, dict[str, tuple[str, str | None, str | None]]] = {
    "python": {
        "embed_image": ("python/embed_image.pbtxt", "mmserve.serving.triton.models.encoder", IMAGE_TOWER_FILE),
        "embed_text": ("python/embed_text.pbtxt", "mmserve.serving.triton.models.encoder", TEXT_TOWER_FILE),
        "image_tower": ("python/image_tower.pbtxt", None, None),
        "text_tower": ("python/text_tower.pbtxt", None, None),
        "image_preprocess": ("image_preprocess.pbtxt", "mmserve.serving.triton.models.preprocess", None),
        "text_tokenize": ("text_tokenize.pbtxt", "mmserve.serving.triton.models.preprocess", None),
    },
}
# Files of a model directory that preprocessing and tokenization read (never the weights).
MODEL_INFO_FILES = (
    "config.json", "preprocessor_config.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.json", "merges.txt", "bpe_simple_vocab_16e6.txt.gz", "open_clip_config.json",
    "spiece.model", "tokenizer.json",
)
MODEL_INFO_DIR = "clip"


def build_repository(settings: Settings, out: Path) -> Path:
    """Export the towers if needed, then write the repository at `out` (replacing generated models).

    The configs take the model from `settings.model_dir`, the serving knobs from its `BuildOptions` fields,
    and the runtime, precision, threads, preprocessing mode and input limits from the rest."""
    info = ModelInfo.from_dir(settings.model_dir)
    backend = runtime(settings.runtime).triton_backend
    if backend not in LAYOUTS:
        raise LookupError(f"runtime {settings.runtime} is served by Triton's {backend} backend, which this build "
                          "has no templates for")
    layout = LAYOUTS[backend]
    onnx_dir = settings.export_dir()
    if not is_current(settings.model_dir, onnx_dir):
        export_towers(settings.model_dir, onnx_dir)
    scoring = export_scoring(onnx_dir)

    queues = _queue_sizes(settings)
    values = {
        **settings.model_dump(include=set(BuildOptions.model_fields)),
        **{f"{tower}_queue_size": size for tower, (size, _) in queues.items()},
        **{f"{tower}_queue_note": note for tower, (_, note) in queues.items()},
        "runtime": settings.runtime,
        "precision": settings.precision,
        "tower_threads": settings.threads or 0,
        "max_image_bytes": settings.max_image_bytes,
        "max_image_pixels": settings.max_image_pixels,
        "max_text_bytes": settings.max_text_bytes,
        "exact": str(settings.exact_preprocessing).lower(),
        "image_size": info.image_size,
        "resize_shortest_edge": info.resize_shortest_edge,
        "resample": info.resample,
        "resize_mode": info.resize_mode,
        "family": info.family,
        "checkpoint": info.checkpoint,
        "tokenizer": info.tokenizer,
        "pooling": info.pooling,
        "score_function": scoring.function,
        "logit_scale": repr(scoring.logit_scale),
        "logit_bias": repr(scoring.logit_bias),
        "embedding_dim": info.embedding_dim,
        "context_length": info.context_length,
        "image_tower_file": IMAGE_TOWER_FILE,
        "text_tower_file": TEXT_TOWER_FILE,
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, (template, module, tower_file) in layout.items():
        model_dir = out / name
        shutil.rmtree(model_dir, ignore_errors=True)
        (model_dir / "1").mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(_render(template, values))
        if module is not None:
            (model_dir / "1" / "model.py").write_text(_render("model.py.in", {"module": module}))
            _copy_model_info(settings.model_dir, model_dir / "1" / MODEL_INFO_DIR)
        if tower_file is not None:
            _link_or_copy(onnx_dir / tower_file, model_dir / "1" / tower_file)
    return out


def _queue_sizes(options: BuildOptions) -> dict[str, tuple[int, str]]:
    """Per tower ("image", "text"): the queue size of it and of the model before it, and how it was chosen."""
    if options.max_queue_size is not None:
        return dict.fromkeys(("image", "text"), (options.max_queue_size, "set by max_queue_size"))
    size = 2 * options.max_batch_size
    return dict.fromkeys(("image", "text"), (size, "two full batches (the front door admits fewer requests than that at once)"))


def _render(template: str, values: dict[str, object]) -> str:
    text = (resources.files("mmserve.serving.triton") / "templates" / template).read_text()
    return string.Template(text).substitute(values)


def _copy_model_info(model_dir: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_INFO_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, target / name)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
