"""What serving needs to know about an audio model directory, read without torch.

    info = AudioModelInfo.from_dir("clap-htsat-unfused")

Two families:

- `clap`: a Hugging Face `ClapModel` directory (config.json model_type "clap", the unfused HTSAT audio tower):
  its own embedding space ("clap") and its own text tower, with RoBERTa's byte-level BPE (`tokenizer.json`).
- `bound`: an mmserve audio tower (config.json model_type "mmserve-audio") trained into another model's space
  (its "space", e.g. "main": the image-text model it sits in); no text tower of its own, texts use that space's.

Both take CLAP's log-mel features (`preprocessor_config.json`, `AudioFeatureConfig`). The export of an audio
directory (`mmserve.models.clap.export_audio`, torch) writes the files named here and a manifest, which
`audio_is_current` checks without torch.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mmserve.modalities.audio import PREPROCESSOR_FILE, AudioFeatureConfig
from mmserve.models.export import weights_fingerprint
from mmserve.models.info import read_json

AUDIO_FAMILIES = ("clap", "bound")
AUDIO_TOWER_FILE = "audio_tower.onnx"
AUDIO_TEXT_TOWER_FILE = "audio_text_tower.onnx"
AUDIO_MANIFEST_FILE = "audio_manifest.json"
BOUND_MODEL_TYPE = "mmserve-audio"
TOKENIZER_JSON = "tokenizer.json"
_SUPPORTED = ("mmserve serves unfused CLAP checkpoints (a Hugging Face ClapModel directory, model_type clap, for "
              "example laion/clap-htsat-unfused) and mmserve audio towers (model_type mmserve-audio)")


@dataclasses.dataclass(frozen=True)
class AudioModelInfo:
    path: Path
    family: str  # "clap", "bound"
    space: str  # the embedding space it shares: "clap" (its own), or the image-text model's ("main")
    embedding_dim: int
    features: AudioFeatureConfig
    has_text_tower: bool
    tokenizer_file: Path | None = None  # CLAP: `tokenizer.json` (RoBERTa byte-level BPE)
    context_length: int | None = None  # tokens the text tower takes, <s> and </s> included
    pad_token_id: int | None = None
    vocab_size: int | None = None

    @classmethod
    def from_dir(cls, path: str | Path) -> AudioModelInfo:
        """The audio model in `path`, its family detected from config.json (a clear error for anything else)."""
        path = Path(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} is not an audio model directory: no config.json. {_SUPPORTED}")
        config = json.loads(config_file.read_text())
        model_type = config.get("model_type")
        if model_type == "clap":
            return _read_clap(path, config)
        if model_type == BOUND_MODEL_TYPE:
            return _read_bound(path, config)
        raise ValueError(f"{config_file}: model_type {model_type!r} is not an audio model mmserve supports; "
                         f"{_SUPPORTED}")


def _features(path: Path) -> AudioFeatureConfig:
    file = path / PREPROCESSOR_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no {PREPROCESSOR_FILE} (the ClapFeatureExtractor settings the audio "
                                "tower was trained on)")
    return AudioFeatureConfig.from_preprocessor_config(file)


def _read_clap(path: Path, config: dict[str, Any]) -> AudioModelInfo:
    audio, text = config.get("audio_config") or {}, config.get("text_config") or {}
    if audio.get("enable_fusion"):
        raise ValueError(f"{path / 'config.json'}: a fused CLAP checkpoint (audio_config.enable_fusion true) is "
                         "not supported: its audio tower mixes random crops of long inputs. Use an unfused one "
                         "(for example laion/clap-htsat-unfused or laion/larger_clap_general)")
    pre = read_json(path / PREPROCESSOR_FILE)
    if pre.get("truncation", "fusion") != "rand_trunc":
        raise ValueError(f"{path / PREPROCESSOR_FILE}: truncation {pre.get('truncation', 'fusion')!r} is the fused "
                         "models' feature pipeline; an unfused CLAP takes truncation 'rand_trunc'")
    features = _features(path)
    if int(audio.get("num_mel_bins", 64)) != features.n_mels:
        raise ValueError(f"{path}: the audio tower takes {audio.get('num_mel_bins', 64)} mel bins, "
                         f"{PREPROCESSOR_FILE} makes {features.n_mels}")
    tokenizer_file = path / TOKENIZER_JSON
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"{path}: no {TOKENIZER_JSON} (CLAP's RoBERTa tokenizer)")
    pad = int(text.get("pad_token_id", 1))
    # RoBERTa's positions start after the padding index: the first pad + 1 position embeddings are never used.
    context_length = int(text.get("max_position_embeddings", 514)) - pad - 1
    model_max_length = read_json(path / "tokenizer_config.json").get("model_max_length")
    if isinstance(model_max_length, int) and 0 < model_max_length < context_length:
        context_length = model_max_length
    return AudioModelInfo(
        path=path,
        family="clap",
        space="clap",
        embedding_dim=int(config.get("projection_dim", 512)),
        features=features,
        has_text_tower=True,
        tokenizer_file=tokenizer_file,
        context_length=context_length,
        pad_token_id=pad,
        vocab_size=int(text.get("vocab_size", 50265)),
    )


def _read_bound(path: Path, config: dict[str, Any]) -> AudioModelInfo:
    missing = [key for key in ("embedding_dim", "space") if key not in config]
    if missing:
        raise ValueError(f"{path / 'config.json'}: an mmserve audio tower needs {' and '.join(missing)}")
    return AudioModelInfo(
        path=path,
        family="bound",
        space=str(config["space"]),
        embedding_dim=int(config["embedding_dim"]),
        features=_features(path),
        has_text_tower=False,
    )


def audio_is_current(audio_dir: str | Path, out_dir: str | Path) -> bool:
    """Whether `out_dir` holds the export of `audio_dir`'s weights as they are now."""
    manifest = Path(out_dir) / AUDIO_MANIFEST_FILE
    if not manifest.is_file():
        return False
    recorded = json.loads(manifest.read_text())
    files = [AUDIO_TOWER_FILE] + ([AUDIO_TEXT_TOWER_FILE] if recorded.get("family") == "clap" else [])
    return (all((Path(out_dir) / name).is_file() for name in files)
            and recorded.get("fingerprint") == weights_fingerprint(audio_dir))
