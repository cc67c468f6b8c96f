"""A small audio tower that embeds log-mel windows into an existing image-text space (torch).

    tower = load_sound_tower("mmserve/models/default/audio")
    embedding = tower(features)   # features: float32 [B, 1, frames, n_mels] from modalities.audio.log_mel

`SoundTower` is a four-block CNN: each block is a 3x3 convolution, batch norm and ReLU, and the
first three halve both axes (the first by its stride). The last feature map is flattened over frequency (so the embedding
knows where in the spectrum energy sits: pitch is a position on the mel axis, which a pool over
frequency would throw away), then mean- and max-pooled over time (a rate of pulses is a mean of
onset detectors), projected to the space's dimension and L2-normalised.

Its input normalisation lives inside the module as buffers (per-mel mean and std of the training
features, saved with the weights), so the exported ONNX takes raw log-mel in dB and the served
graph is the trained one. A directory holds `config.json` ({"model_type": "mmserve-audio",
"space": ..., "embedding_dim": ..., the architecture}), `model.safetensors` and
`preprocessor_config.json` (the features, as `AudioFeatureConfig.to_preprocessor_config` writes them).

This module imports torch: it belongs to the `train` extra and is never imported by the serving path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

MODEL_TYPE = "mmserve-audio"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESSOR_FILE = "preprocessor_config.json"


class SoundTower(nn.Module):
    feature_mean: torch.Tensor  # buffers, registered below
    feature_std: torch.Tensor

    def __init__(
        self,
        *,
        n_mels: int = 64,
        frames: int = 201,
        embedding_dim: int = 128,
        channels: Sequence[int] = (16, 32, 64, 128),
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"SoundTower needs at least two blocks, got channels={list(channels)}")
        self.n_mels, self.frames, self.embedding_dim = n_mels, frames, embedding_dim
        self.channels = tuple(int(c) for c in channels)
        # Per-mel statistics of the training features: raw dB in, roughly unit scale inside.
        self.register_buffer("feature_mean", torch.zeros(1, 1, 1, n_mels))
        self.register_buffer("feature_std", torch.ones(1, 1, 1, n_mels))
        blocks: list[nn.Module] = []
        previous = 1
        for index, width in enumerate(self.channels):
            # The first block halves by its stride (the full-resolution map is the costliest to pool), the
            # middle ones by max-pooling, the last not at all.
            stride = 2 if index == 0 else 1
            blocks += [nn.Conv2d(previous, width, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU()]
            if 0 < index < len(self.channels) - 1:
                blocks.append(nn.MaxPool2d(2))
            previous = width
        self.blocks = nn.Sequential(*blocks)
        with torch.no_grad():
            _, width, _, pooled_mels = self.blocks.eval()(torch.zeros(1, 1, frames, n_mels)).shape
        self.blocks.train()
        self.projection = nn.Linear(2 * width * pooled_mels, embedding_dim)

    def architecture(self) -> dict[str, Any]:
        return {"n_mels": self.n_mels, "frames": self.frames, "channels": list(self.channels)}

    def set_feature_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-mel mean and std `[n_mels]` of the training features (floored so a silent band cannot blow up)."""
        self.feature_mean.copy_(mean.reshape(1, 1, 1, -1))
        self.feature_std.copy_(std.clamp(min=1e-3).reshape(1, 1, 1, -1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.to(torch.float32) - self.feature_mean) / self.feature_std
        x = self.blocks(x)  # [B, C, T', M']
        x = x.permute(0, 2, 1, 3).flatten(2)  # [B, T', C * M']: frequency kept, time pooled next
        pooled = torch.cat([x.mean(dim=1), x.amax(dim=1)], dim=1)
        return nn.functional.normalize(self.projection(pooled), dim=-1)


def save_sound_tower(
    tower: SoundTower,
    audio_dir: str | Path,
    feature_config: Any,
    *,
    space: str = "main",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `config.json`, `model.safetensors` (float32) and `preprocessor_config.json` to `audio_dir`.

    `feature_config` is the `AudioFeatureConfig` the tower was trained on; `extra` adds fields to config.json.
    """
    from safetensors.torch import save_file

    audio_dir = Path(audio_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": MODEL_TYPE,
        "space": space,
        "embedding_dim": tower.embedding_dim,
        "architecture": "SoundTower",
        **tower.architecture(),
        **(extra or {}),
    }
    (audio_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in tower.state_dict().items()
             if v.is_floating_point()}
    save_file(state, str(audio_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    preprocessor = feature_config.to_preprocessor_config()
    (audio_dir / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor, indent=2) + "\n")
    return audio_dir


def read_sound_tower_config(audio_dir: str | Path) -> dict[str, Any]:
    path = Path(audio_dir) / CONFIG_FILE
    config: dict[str, Any] = json.loads(path.read_text())
    if config.get("model_type") != MODEL_TYPE:
        raise ValueError(f"{path}: model_type {config.get('model_type')!r} is not {MODEL_TYPE!r}")
    return config


def load_sound_tower(audio_dir: str | Path) -> SoundTower:
    """The tower in `audio_dir` (config.json + model.safetensors), in eval mode."""
    from safetensors.torch import load_file

    config = read_sound_tower_config(audio_dir)
    tower = SoundTower(
        n_mels=int(config["n_mels"]),
        frames=int(config["frames"]),
        embedding_dim=int(config["embedding_dim"]),
        channels=config["channels"],
    )
    state = load_file(str(Path(audio_dir) / WEIGHTS_FILE))
    # BatchNorm's step counters are integers and not saved; everything else must be there.
    missing, unexpected = tower.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{audio_dir}: weights do not fit the config (missing {missing}, unexpected {unexpected})")
    return tower.eval()
