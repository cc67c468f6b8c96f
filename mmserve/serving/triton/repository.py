"""`mmserve build`: write a Triton model repository for a model directory (any supported family).

With a runtime mmserve loads itself (`Runtime.triton_backend == "python"`: OpenVINO, ONNX Runtime):

    embed_image        BYTES image -> embedding               (C++ decode/resize/crop + the image tower, one process)
    image_tower        ensemble: uint8 pixels -> embed_image's tower
    embed_text         BYTES UTF-8 -> embedding               (C++ CLIP BPE + the text tower, one process)
    text_tower         ensemble: token ids (+ lengths) -> embed_text's tower
    image_preprocess   BYTES image -> uint8 pixels            (decoding alone)
    text_tokenize      BYTES UTF-8 -> token ids + lengths     (tokenizing alone)
    embed_video        BYTES video -> embedding + segments    (PyAV frames, C++ resize + the image tower)

and, with an audio model (`Settings.audio_dir()`: the bundled model has one; a CLAP checkpoint brings its own):

    embed_audio        BYTES sound -> embedding + windows     (libsndfile, soxr, log-mel + the audio tower)
    embed_audio_text   BYTES UTF-8 -> embedding               (a CLAP checkpoint's own text tower, its space)

The configs come from `templates/` (`templates/<backend>/` for the ones that
depend on how the towers are hosted; a native Triton backend, TensorRT on
GPUs, brings its own directory there); each Python model's `model.py` is a
one-line import of its class in `mmserve.serving.triton.models`. The
repository is self-contained: the ONNX towers and the model's
tokenizer/preprocessor files are copied (hard-linked where possible) into the
version directories.
"""

from __future__ import annotations

import json
import os
import shutil
import string
from importlib import resources
from pathlib import Path
from typing import Any

from mmserve.config import BuildOptions, Settings
from mmserve.modalities.text import CLAP_CONTEXT_LENGTH
from mmserve.models.audio_info import AUDIO_MANIFEST_FILE, AUDIO_TEXT_TOWER_FILE, AUDIO_TOWER_FILE, AudioModelInfo
from mmserve.models.export import (
    IMAGE_TOWER_FILE,
    MANIFEST_FILE,
    TEXT_TOWER_FILE,
    export_scoring,
    export_towers,
    is_current,
)
from mmserve.models.info import ModelInfo
from mmserve.runtimes import runtime
from mmserve.runtimes.tensorrt import ENGINE_FILE
from mmserve.serving.triton.models import AUDIO_INFO_DIR

# model -> (template, the Python module behind it or None for an ensemble, the tower file it holds)
LAYOUTS: dict[str, dict[str, tuple[str, str | None, str | None]]] = {
    "python": {
        "embed_image": ("python/embed_image.pbtxt", "mmserve.serving.triton.models.encoder", IMAGE_TOWER_FILE),
        "embed_text": ("python/embed_text.pbtxt", "mmserve.serving.triton.models.encoder", TEXT_TOWER_FILE),
        "image_tower": ("python/image_tower.pbtxt", None, None),
        "text_tower": ("python/text_tower.pbtxt", None, None),
        "image_preprocess": ("image_preprocess.pbtxt", "mmserve.serving.triton.models.preprocess", None),
        "text_tokenize": ("text_tokenize.pbtxt", "mmserve.serving.triton.models.preprocess", None),
        "embed_video": ("python/embed_video.pbtxt", "mmserve.serving.triton.models.segments", IMAGE_TOWER_FILE),
    },
    # NVIDIA's Triton container: the towers as native TensorRT engines, fed by the decode-only Python models.
    "ngc": {
        "image_engine": ("ngc/image_engine.pbtxt", None, ENGINE_FILE),
        "text_engine": ("ngc/text_engine.pbtxt", None, ENGINE_FILE),
        "embed_image": ("ngc/embed_image.pbtxt", None, None),
        "embed_text": ("ngc/embed_text.pbtxt", None, None),
        "image_tower": ("ngc/image_tower.pbtxt", None, None),
        "text_tower": ("ngc/text_tower.pbtxt", None, None),
        "image_preprocess": ("image_preprocess.pbtxt", "mmserve.serving.triton.models.preprocess", None),
        "text_tokenize": ("text_tokenize.pbtxt", "mmserve.serving.triton.models.preprocess", None),
    },
}
# The audio models (python layout, CPU runtimes), their template, module and the files of the audio export.
AUDIO_MODELS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "embed_audio": ("python/embed_audio.pbtxt", "mmserve.serving.triton.models.segments", (AUDIO_TOWER_FILE,)),
    "embed_audio_text": ("python/embed_audio_text.pbtxt", "mmserve.serving.triton.models.encoder",
                         (AUDIO_TEXT_TOWER_FILE,)),
}
AUDIO_RUNTIMES = ("openvino", "onnxruntime")
# The engine of each tower in the ngc layout, and the file TensorRT towers take in the python layout.
ENGINE_MODELS = {"image_engine": IMAGE_TOWER_FILE, "text_engine": TEXT_TOWER_FILE}
PLAN_FILES = {IMAGE_TOWER_FILE: "image_tower.plan", TEXT_TOWER_FILE: "text_tower.plan"}
# Files of a model directory that preprocessing and tokenization read (never the weights).
MODEL_INFO_FILES = (
    "config.json", "preprocessor_config.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.json", "merges.txt", "bpe_simple_vocab_16e6.txt.gz", "open_clip_config.json",
    "spiece.model", "tokenizer.json",
)
MODEL_INFO_DIR = "clip"
# Files of an audio model directory that its decoding and tokenizing read.
AUDIO_INFO_FILES = ("config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "vocab.json", "merges.txt")


def build_repository(settings: Settings, out: Path, *, build_engines: bool = True) -> Path:
    """Export the towers if needed, then write the repository at `out` (replacing generated models).

    The configs take the model from `settings.model_dir`, the serving knobs from its `BuildOptions` fields,
    and the runtime, precision, threads, preprocessing mode and input limits from the rest. With the tensorrt
    runtime the engines are built (or taken from the engine cache) on this host's GPU; `build_engines=False`
    writes the configs alone (what a CPU host can check of a GPU repository)."""
    info = ModelInfo.from_dir(settings.model_dir)
    layout_name = _layout_name(settings)
    layout = LAYOUTS[layout_name]
    onnx_dir = settings.export_dir()
    if not is_current(settings.model_dir, onnx_dir):
        export_towers(settings.model_dir, onnx_dir)
    scoring = export_scoring(onnx_dir)
    engines = _engines(settings, info, onnx_dir) if settings.runtime == "tensorrt" and build_engines else {}
    tower_files = ({name: PLAN_FILES[name] for name in PLAN_FILES} if settings.runtime == "tensorrt"
                   else {name: name for name in (IMAGE_TOWER_FILE, TEXT_TOWER_FILE)})

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
        "image_tower_file": tower_files[IMAGE_TOWER_FILE],
        "text_tower_file": tower_files[TEXT_TOWER_FILE],
        "image_input": "images",  # the exported graphs' input names (mmserve.models.export)
        "text_input": "token_ids",
        "gpu": engines.get("gpu", "no GPU: configs only, no engine built"),
        "media_batch_size": settings.media_batch_size,
        "media_queue_size": 4 * settings.media_batch_size,
        "video_frames_per_second": settings.video_frames_per_second,
        "video_max_frames": settings.video_max_frames,
        "video_scene_threshold": "" if settings.video_scene_threshold is None else settings.video_scene_threshold,
        "max_video_bytes": settings.max_video_bytes,
        "max_video_seconds": settings.max_video_seconds,
        "max_video_pixels": settings.max_video_pixels,
        "max_video_frames": settings.max_video_frames,
    }
    audio = _audio(settings, layout_name)
    if audio is not None:
        audio_info, audio_export = audio
        values |= {
            "audio_space": audio_info.space,
            "audio_family": audio_info.family,
            "audio_embedding_dim": audio_info.embedding_dim,
            "audio_sample_rate": audio_info.features.sample_rate,
            "audio_window_seconds": audio_info.features.window_seconds,
            "audio_tower_batch_size": min(settings.max_batch_size, 16),
            "audio_context_length": min(audio_info.context_length or 0, CLAP_CONTEXT_LENGTH),
            "audio_logit_scale": repr(_audio_logit_scale(audio_export)),
            "max_audio_bytes": settings.max_audio_bytes,
            "max_audio_seconds": settings.max_audio_seconds,
        }
        if audio_info.embedding_dim != info.embedding_dim and audio_info.space == "main":
            raise ValueError(f"{audio_info.path}: a tower bound to the main space must give {info.embedding_dim}-"
                             f"dimensional vectors, not {audio_info.embedding_dim}")
    out.mkdir(parents=True, exist_ok=True)
    for name, (template, module, tower_file) in layout.items():
        model_dir = out / name
        shutil.rmtree(model_dir, ignore_errors=True)
        (model_dir / "1").mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(_render(template, values))
        if module is not None:
            (model_dir / "1" / "model.py").write_text(_render("model.py.in", {"module": module}))
            _copy_model_info(settings.model_dir, model_dir / "1" / MODEL_INFO_DIR)
        if layout_name == "ngc" and name in ENGINE_MODELS:
            if engines:
                _link_or_copy(engines[ENGINE_MODELS[name]], model_dir / "1" / ENGINE_FILE)
        elif tower_file is not None and settings.runtime == "tensorrt":
            if engines:
                _link_or_copy(engines[tower_file], model_dir / "1" / PLAN_FILES[tower_file])
        elif tower_file is not None:
            _link_or_copy(onnx_dir / tower_file, model_dir / "1" / tower_file)
            if settings.runtime == "cuda":  # the CUDA runtime finds the model directory through the manifest
                _link_or_copy(onnx_dir / MANIFEST_FILE, model_dir / "1" / MANIFEST_FILE)
    for name in AUDIO_MODELS:
        shutil.rmtree(out / name, ignore_errors=True)
    if audio is not None:
        audio_info, audio_export = audio
        for name, (template, module, files) in AUDIO_MODELS.items():
            if name == "embed_audio_text" and not audio_info.has_text_tower:
                continue
            version = out / name / "1"
            version.mkdir(parents=True)
            (out / name / "config.pbtxt").write_text(_render(template, values))
            (version / "model.py").write_text(_render("model.py.in", {"module": module}))
            _copy_model_info(audio_info.path, version / AUDIO_INFO_DIR, AUDIO_INFO_FILES)
            for file in files:
                _link_or_copy(audio_export / file, version / file)
    return out


def _audio(settings: Settings, layout_name: str) -> tuple[AudioModelInfo, Path] | None:
    """The audio model and its export directory (exported now if needed), or None without one. Audio towers
    run on the CPU runtimes only: with another runtime an explicit audio model is an error, the bundled one
    is left out."""
    audio_dir = settings.audio_dir()
    if audio_dir is None:
        return None
    if layout_name != "python" or settings.runtime not in AUDIO_RUNTIMES:
        if settings.audio_model_dir is not None:
            raise ValueError(f"audio towers run on {' or '.join(AUDIO_RUNTIMES)} (this build: {settings.runtime}, "
                             f"target {settings.target}); leave audio_model_dir unset or build for a CPU runtime")
        return None
    from mmserve.models.audio_info import audio_is_current

    info = AudioModelInfo.from_dir(audio_dir)
    export = settings.audio_export_dir(audio_dir)
    if not audio_is_current(audio_dir, export):
        from mmserve.models.clap import export_audio

        export_audio(audio_dir, export)
    return info, export


def _audio_logit_scale(export: Path) -> float:
    scoring = json.loads((export / AUDIO_MANIFEST_FILE).read_text()).get("scoring") or {}
    return float(scoring.get("logit_scale", 100.0))


def _layout_name(settings: Settings) -> str:
    if settings.target == "ngc":
        if settings.runtime != "tensorrt":
            raise ValueError("--target ngc serves the towers as TensorRT engines: use it with --runtime tensorrt")
        return "ngc"
    backend = runtime(settings.runtime).triton_backend
    if backend not in LAYOUTS:
        raise LookupError(f"runtime {settings.runtime} is served by Triton's {backend} backend, which this build "
                          "has no templates for")
    return backend


def _engines(settings: Settings, info: ModelInfo, onnx_dir: Path) -> dict[str, Any]:
    """Each tower's TensorRT engine (built on this host's GPU, or found in the engine cache), gated on accuracy
    against the f32 ONNX over sample inputs; "gpu" names the GPU."""
    import numpy as np

    from mmserve.modalities.text import length_buckets
    from mmserve.runtimes import tensorrt

    tensorrt.require_tensorrt()
    gpu = tensorrt.GpuInfo.current()
    lengths = length_buckets(info.context_length) if info.trims_padding else [info.context_length]
    rng = np.random.default_rng(0)
    samples: dict[str, list[np.ndarray]] = {
        IMAGE_TOWER_FILE: [rng.integers(0, 256, (8, info.image_size, info.image_size, 3), dtype=np.uint8)],
        TEXT_TOWER_FILE: [np.full((8, n), info.pad_token_id, dtype=np.int32) for n in (lengths[0], lengths[-1])],
    }
    for batch in samples[TEXT_TOWER_FILE]:
        batch[:, : min(5, batch.shape[1] - 1)] = rng.integers(1, min(info.vocab_size, 1000), (8, min(5, batch.shape[1] - 1)))
        batch[:, min(5, batch.shape[1] - 1)] = info.eos_token_id
    built: dict[str, Any] = {"gpu": f"{gpu.name} (compute capability {gpu.capability[0]}.{gpu.capability[1]})"}
    for name in (IMAGE_TOWER_FILE, TEXT_TOWER_FILE):
        spec = tensorrt.tower_spec(onnx_dir / name, settings.max_batch_size,
                                   lengths if name == TEXT_TOWER_FILE else ())
        built[name] = tensorrt.build_engine(onnx_dir / name, settings.cache_dir, spec, settings.precision,
                                            profile_mode=settings.tensorrt_profiles, samples=samples[name])
    return built


def _queue_sizes(options: BuildOptions) -> dict[str, tuple[int, str]]:
    """Per tower ("image", "text"): the queue size of it and of the model before it, and how it was chosen."""
    if options.max_queue_size is not None:
        return dict.fromkeys(("image", "text"), (options.max_queue_size, "set by max_queue_size"))
    size = 2 * options.max_batch_size
    return dict.fromkeys(("image", "text"), (size, "two full batches (the front door admits fewer requests than that at once)"))


def _render(template: str, values: dict[str, object]) -> str:
    text = (resources.files("mmserve.serving.triton") / "templates" / template).read_text()
    return string.Template(text).substitute(values)


def _copy_model_info(model_dir: Path, target: Path, names: tuple[str, ...] = MODEL_INFO_FILES) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, target / name)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
