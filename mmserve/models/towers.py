"""PyTorch wrappers of a model's two towers, as they are served (CLIPModel, SiglipModel; open_clip
checkpoints are converted to a CLIPModel first, `mmserve.models.convert`).

Training, ONNX export and the parity tests all go through these modules so the
served graph is exactly the trained one:

- `ImageTower`: uint8 NHWC `[B, H, W, 3]` in; cast, 1/255, mean/std and the
  NHWC->NCHW transpose happen inside; L2-normalised `embedding [B, D]` out.
- `TextTower` (CLIP): int32 token ids `[B, L]` in, any `L` up to the context
  length; pools at the first end-of-text token; L2-normalised `embedding [B, D]`.
- `SiglipTextTower`: int32 token ids `[B, context_length]`, padded as the
  tokenizer pads; no attention mask (SigLIP attends to its padding, as it was
  trained) and pools the last position.

This module imports torch and transformers: it belongs to the `train` extra and
is never imported by the serving path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmserve.models.info import ModelInfo, Scoring


class ImageTower(nn.Module):
    scale: torch.Tensor  # buffers, registered below
    shift: torch.Tensor

    def __init__(self, clip: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.vision_model = clip.vision_model
        # SigLIP's pooler (its attention-pooling head) is already the embedding: no projection.
        self.visual_projection = getattr(clip, "visual_projection", None) or nn.Identity()
        # Fold /255 and mean/std into one multiply-add: x * scale + shift.
        scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32)
        shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.permute(0, 3, 1, 2).to(torch.float32) * self.scale + self.shift
        pooled = self.vision_model(pixel_values=pixels).pooler_output
        return nn.functional.normalize(self.visual_projection(pooled), dim=-1)


class TextTower(nn.Module):
    def __init__(self, clip: Any, eos_token_id: int) -> None:
        super().__init__()
        text = clip.text_model
        self.embeddings = text.embeddings
        self.encoder = text.encoder
        self.final_layer_norm = text.final_layer_norm
        self.text_projection = clip.text_projection
        self.eos_token_id = eos_token_id

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        length = token_ids.shape[1]
        hidden = self.embeddings(input_ids=token_ids.to(torch.int64))
        causal = torch.full((length, length), float("-inf"), device=hidden.device).triu(1)
        hidden = self.encoder(inputs_embeds=hidden, attention_mask=causal[None, None]).last_hidden_state
        hidden = self.final_layer_norm(hidden)
        # First end-of-text position; argmax over int32 keeps the graph ONNX-friendly.
        eot = (token_ids == self.eos_token_id).to(torch.int32).argmax(dim=-1)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eot]
        return nn.functional.normalize(self.text_projection(pooled), dim=-1)


class SiglipTextTower(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.text_model = model.text_model

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        pooled = self.text_model(input_ids=token_ids.to(torch.int64)).pooler_output
        return nn.functional.normalize(pooled, dim=-1)


def load_clip(model_dir: str | Path, dtype: torch.dtype = torch.float32):
    """Load a local Hugging Face CLIP directory (no network) as a CLIPModel."""
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(str(model_dir), dtype=dtype, local_files_only=True)
    return model.eval()


def load_model(info: ModelInfo, dtype: torch.dtype = torch.float32):
    """The PyTorch model of any supported directory (no network): CLIPModel, SiglipModel, or an open_clip
    checkpoint converted to a CLIPModel."""
    if info.checkpoint == "open_clip":
        from mmserve.models.convert import open_clip_siglip_to_hf, open_clip_to_hf

        convert = open_clip_to_hf if info.family == "clip" else open_clip_siglip_to_hf
        return convert(info.path).to(dtype).eval()
    if info.family == "clip":
        return load_clip(info.path, dtype)
    from transformers import SiglipModel

    return SiglipModel.from_pretrained(str(info.path), dtype=dtype, local_files_only=True).eval()


def towers_for(model: Any, info: ModelInfo) -> tuple[ImageTower, nn.Module]:
    text = TextTower(model, info.eos_token_id) if info.pooling == "eos" else SiglipTextTower(model)
    return ImageTower(model, info.image_mean, info.image_std), text


def scoring_of(model: Any, info: ModelInfo) -> Scoring:
    """The model's zero-shot score function with its learned logit scale (and SigLIP's bias)."""
    scale = float(model.logit_scale.detach().float().exp().reshape(-1)[0])
    bias = float(model.logit_bias.detach().float().reshape(-1)[0]) if info.score_function == "sigmoid" else 0.0
    return Scoring(info.score_function, scale, bias)


def write_random_clip(directory: str | Path, *, seed: int = 0, **config_kwargs) -> Path:
    """A Hugging Face CLIP directory with random weights and the real CLIP vocabulary (no download).

    With no keyword arguments it is a full-size ViT-B/32 (CLIPConfig's defaults): speed does not depend on
    the weights' values, so benchmarks and tests use it for a realistic size. `image_size`, `mean` and
    `std` set the preprocessor; other keywords go to CLIPConfig.
    """
    from transformers import CLIPConfig, CLIPModel

    from mmserve.models import clip as model_files

    directory = Path(directory)
    image_size = config_kwargs.pop("image_size", 224)
    mean = config_kwargs.pop("mean", model_files.OPENAI_MEAN)
    std = config_kwargs.pop("std", model_files.OPENAI_STD)
    torch.manual_seed(seed)
    config: Any = CLIPConfig(**config_kwargs)
    config.vision_config.image_size = image_size
    config.text_config.eos_token_id = 49407
    config.text_config.bos_token_id = 49406
    CLIPModel(config).save_pretrained(str(directory))
    vocabulary = model_files.load_vocabulary(model_files.default_model_dir())
    model_files.write_hf_tokenizer_files(directory, vocabulary, config.text_config.max_position_embeddings)
    model_files.write_preprocessor_config(directory, image_size, mean, std)
    return directory
