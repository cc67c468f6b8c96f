"""CLAP's towers as they are served, and the ONNX export of an audio model directory (needs the `train` extra).

- `ClapAudioTower`: log-mel `features` float32 `[B, 1, frames, n_mels]` (`mmserve.modalities.audio.log_mel`) ->
  L2-normalised `embedding [B, D]`, exactly `ClapModel.get_audio_features` of an unfused checkpoint.
- `ClapTextTower`: int32 token ids `[B, L]` padded with the pad id -> L2-normalised `embedding [B, D]`, exactly
  `get_text_features` with the attention mask `ids != pad`. The mask is computed inside the graph, and RoBERTa's
  positions skip padding, so any padding length gives the same vector.

    mmserve.models.clap.export_audio(audio_dir, out_dir)

writes `audio_tower.onnx` (`features` -> `embedding`, dynamic batch), for CLAP `audio_text_tower.onnx`
(`token_ids` -> `embedding`, dynamic batch and length), and `audio_manifest.json`: the weights' fingerprint,
family, embedding space and size, the feature config, and CLAP's score function (a softmax over the labels at
exp(logit_scale_a), as CLIP's). Family "bound" (an mmserve audio tower in another model's space) has no text
tower; its module comes from `mmserve.models.sound_tower`.

This module imports torch and transformers: it is never imported by the serving path.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmserve.models.audio_info import (
    AUDIO_MANIFEST_FILE,
    AUDIO_TEXT_TOWER_FILE,
    AUDIO_TOWER_FILE,
    AudioModelInfo,
    audio_is_current,
)
from mmserve.models.export import OPSET, _declare_output_shape, weights_fingerprint
from mmserve.models.info import Scoring

__all__ = ["ClapAudioTower", "ClapTextTower", "audio_is_current", "audio_scoring", "export_audio", "load_clap"]


class ClapAudioTower(nn.Module):
    def __init__(self, clap: Any) -> None:
        super().__init__()
        if clap.config.audio_config.enable_fusion:
            raise ValueError("a fused CLAP audio tower mixes random crops of long inputs; mmserve serves unfused "
                             "checkpoints")
        self.audio_model = clap.audio_model
        self.audio_projection = clap.audio_projection

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # Unfused, the encoder ignores is_longer (get_audio_features' is_longer=False).
        pooled = self.audio_model(input_features=features).pooler_output
        return nn.functional.normalize(self.audio_projection(pooled), dim=-1)


class ClapTextTower(nn.Module):
    def __init__(self, clap: Any, pad_token_id: int | None = None) -> None:
        super().__init__()
        text = clap.text_model
        self.embeddings = text.embeddings
        self.encoder = text.encoder
        self.pooler = text.pooler
        self.text_projection = clap.text_projection
        self.pad_token_id = int(clap.config.text_config.pad_token_id if pad_token_id is None else pad_token_id)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        ids = token_ids.to(torch.int64)
        hidden = self.embeddings(input_ids=ids)  # positions count non-padding tokens only
        padding = (ids == self.pad_token_id)[:, None, None, :].to(hidden.dtype)
        mask = padding * torch.finfo(hidden.dtype).min  # additive: padding keys get no attention
        hidden = self.encoder(hidden, attention_mask=mask).last_hidden_state
        return nn.functional.normalize(self.text_projection(self.pooler(hidden)), dim=-1)


def load_clap(audio_dir: str | Path, dtype: torch.dtype = torch.float32, attn_implementation: str | None = None):
    """A local Hugging Face CLAP directory (no network) as a ClapModel in eval mode."""
    from transformers import ClapModel

    options: dict[str, Any] = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    return ClapModel.from_pretrained(str(audio_dir), dtype=dtype, local_files_only=True, **options).eval()


def audio_scoring(clap: Any) -> Scoring:
    """CLAP's zero-shot score for audio against text labels: a softmax at exp(logit_scale_a) (its
    logits_per_audio)."""
    return Scoring("softmax", float(clap.logit_scale_a.detach().float().exp().reshape(-1)[0]))


def export_audio(audio_dir: str | Path, out_dir: str | Path, *, force: bool = False) -> Path:
    """Write the audio tower (and CLAP's text tower) to ONNX with their manifest; skipped when `out_dir` already
    holds this directory's export."""
    out_dir = Path(out_dir)
    if not force and audio_is_current(audio_dir, out_dir):
        return out_dir
    info = AudioModelInfo.from_dir(audio_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / AUDIO_MANIFEST_FILE).unlink(missing_ok=True)  # the manifest marks a finished export
    scoring: Scoring | None = None
    towers: list[tuple[nn.Module, torch.Tensor, str, str, dict[int, str]]] = []
    if info.family == "clap":
        # Eager attention: plain MatMul/Softmax nodes, which every runtime fuses its own way.
        clap = load_clap(audio_dir, attn_implementation="eager")
        audio_tower: nn.Module = ClapAudioTower(clap)
        scoring = audio_scoring(clap)
        towers.append((ClapTextTower(clap, info.pad_token_id), _example_tokens(info), AUDIO_TEXT_TOWER_FILE,
                       "token_ids", {0: "batch", 1: "length"}))
    else:
        from mmserve.models.sound_tower import load_sound_tower

        audio_tower = load_sound_tower(audio_dir).eval()
    # Trace with batch 2 so no reshape bakes in batch 1 (see REFERENCE.md).
    features = torch.zeros((2, 1, info.features.frames, info.features.n_mels), dtype=torch.float32)
    towers.insert(0, (audio_tower, features, AUDIO_TOWER_FILE, "features", {0: "batch"}))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for tower, example, file, name, axes in towers:
            torch.onnx.export(tower, (example,), str(out_dir / file), input_names=[name],
                              output_names=["embedding"], dynamic_axes={name: axes, "embedding": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
            _declare_output_shape(out_dir / file, info.embedding_dim)
    manifest = {
        "audio_dir": str(Path(audio_dir).resolve()),
        "fingerprint": weights_fingerprint(audio_dir),
        "family": info.family,
        "space": info.space,
        "embedding_dim": info.embedding_dim,
        "features": dataclasses.asdict(info.features),
        "scoring": None if scoring is None else scoring.to_dict(),
        "context_length": info.context_length,
        "pad_token_id": info.pad_token_id,
        "opset": OPSET,
    }
    (out_dir / AUDIO_MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


def _example_tokens(info: AudioModelInfo) -> torch.Tensor:
    """Two rows, one padded, so the traced graph has the padding path (RoBERTa's <s> 0 and </s> 2)."""
    pad = 1 if info.pad_token_id is None else info.pad_token_id
    tokens = torch.full((2, 8), pad, dtype=torch.int32)
    tokens[0, :4] = torch.tensor([0, 5, 6, 2], dtype=torch.int32)
    tokens[1] = torch.tensor([0, 5, 6, 7, 8, 9, 10, 2], dtype=torch.int32)
    return tokens
