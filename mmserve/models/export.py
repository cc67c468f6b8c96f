"""Export a model directory's two towers to ONNX (needs the `train` extra), any supported family.

    mmserve export --model-dir DIR --out DIR

- `image_tower.onnx`: `images` uint8 `[B, H, W, 3]` -> `embedding` float32 `[B, D]`
- `text_tower.onnx`: `token_ids` int32 `[B, L]` -> `embedding` float32 `[B, D]`

Batch and (for text) length are dynamic (SigLIP's towers are only ever given
the whole context); preprocessing arithmetic, projection and L2 normalisation
are inside the graphs. A `manifest.json` records what was exported from which
weights, the family and its score function (the learned logit scale and
bias), so a repository build can reuse the files and clients can score.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from pathlib import Path

from mmserve.models.info import ModelInfo, Scoring

OPSET = 17
IMAGE_TOWER_FILE = "image_tower.onnx"
TEXT_TOWER_FILE = "text_tower.onnx"
MANIFEST_FILE = "manifest.json"


def weights_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the weight and config files (what an export depends on).

    Computed once per process for files of unchanged size and modification time: start-up asks for it from
    several places (the export directory, whether the export is current)."""
    model_dir = Path(model_dir).resolve()
    files = []
    for path in sorted(model_dir.iterdir()):
        if path.name.endswith((".safetensors", ".bin", ".json")) and path.name != "training.json":
            stat = path.stat()
            files.append((path.name, stat.st_size, stat.st_mtime_ns))
    return _fingerprint(model_dir, tuple(files))


@functools.lru_cache(maxsize=16)
def _fingerprint(model_dir: Path, files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(name.encode())
        digest.update((model_dir / name).read_bytes())
    return digest.hexdigest()


def is_current(model_dir: str | Path, out_dir: str | Path) -> bool:
    manifest = Path(out_dir) / MANIFEST_FILE
    if not manifest.is_file():
        return False
    recorded = json.loads(manifest.read_text())
    files_present = all((Path(out_dir) / f).is_file() for f in (IMAGE_TOWER_FILE, TEXT_TOWER_FILE))
    # An export without the score function predates other families: export again (once).
    return files_present and "scoring" in recorded and recorded.get("fingerprint") == weights_fingerprint(model_dir)


def export_towers(model_dir: str | Path, out_dir: str | Path, *, force: bool = False) -> Path:
    """Write both towers (skipped when `out_dir` already holds this model's export)."""
    out_dir = Path(out_dir)
    if not force and is_current(model_dir, out_dir):
        return out_dir
    import torch

    from mmserve.models.towers import load_model, scoring_of, towers_for

    info = ModelInfo.from_dir(model_dir)
    model = load_model(info)
    image_tower, text_tower = towers_for(model, info)
    out_dir.mkdir(parents=True, exist_ok=True)

    # Trace with batch 2 so no reshape bakes in batch 1 (see REFERENCE.md).
    images = torch.zeros((2, info.image_size, info.image_size, 3), dtype=torch.uint8)
    tokens = torch.full((2, info.context_length), info.pad_token_id, dtype=torch.int32)
    tokens[:, 0], tokens[:, 1] = info.start_token_id or info.eos_token_id, info.eos_token_id
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for tower, example, file, name, axes in (
            (image_tower, images, IMAGE_TOWER_FILE, "images", {0: "batch"}),
            (text_tower, tokens, TEXT_TOWER_FILE, "token_ids", {0: "batch", 1: "length"}),
        ):
            torch.onnx.export(tower, (example,), str(out_dir / file), input_names=[name], output_names=["embedding"],
                              dynamic_axes={name: axes, "embedding": {0: "batch"}}, opset_version=OPSET,
                              dynamo=False)
    for name in (IMAGE_TOWER_FILE, TEXT_TOWER_FILE):
        _declare_output_shape(out_dir / name, info.embedding_dim)
    manifest = {
        "model_dir": str(Path(model_dir).resolve()),
        "fingerprint": weights_fingerprint(model_dir),
        "family": info.family,
        "scoring": scoring_of(model, info).to_dict(),
        "opset": OPSET,
        "image_size": info.image_size,
        "context_length": info.context_length,
        "embedding_dim": info.embedding_dim,
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


def export_scoring(out_dir: str | Path) -> Scoring:
    """The score function recorded with an export (CLIP's defaults for an export that predates it)."""
    recorded = json.loads((Path(out_dir) / MANIFEST_FILE).read_text()).get("scoring")
    return Scoring(**recorded) if recorded else Scoring()


def _declare_output_shape(path: Path, dim: int) -> None:
    """State `embedding` as `[batch, dim]` (tracing leaves the division's shape symbolic)."""
    import onnx

    graph = onnx.load(str(path))
    (output,) = graph.graph.output
    shape = output.type.tensor_type.shape
    del shape.dim[:]
    shape.dim.add().dim_param = "batch"
    shape.dim.add().dim_value = dim
    onnx.save(graph, str(path))
