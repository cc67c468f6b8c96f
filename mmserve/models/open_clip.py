"""Reading an open_clip checkpoint directory without torch (and without open_clip).

    open_clip_config.json               {"model_cfg": {...}, "preprocess_cfg": {...}}
    open_clip_model.safetensors         or open_clip_pytorch_model.bin

as `huggingface-cli download` fetches an open_clip model from the Hub. Served:
the ViT image towers with open_clip's own text transformer (ViT-B/32, B/16,
L/14, H/14, g/14 and the quick-gelu variants), tokenized with CLIP's BPE
(the vocabulary bundled with mmserve is open_clip's). Preprocessing follows
the checkpoint's `preprocess_cfg` (mean, std, interpolation, resize mode).
`mmserve export` converts the weights to a Hugging Face `CLIPModel` in memory
(`mmserve.models.towers`) and exports that.

Refused with a clear error: a timm image tower (open_clip's SigLIP entries,
ConvNeXt, ...; the transformers-format SigLIP checkpoints of the same weights
are served), a Hugging Face text tower (the multilingual XLM-RoBERTa models),
ResNet towers and CoCa.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmserve.models.clip import END_OF_TEXT, OPENAI_MEAN, OPENAI_STD, START_OF_TEXT, default_model_dir, load_vocabulary
from mmserve.models.info import ModelInfo, read_json

CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# vision_cfg / text_cfg keys of the plain ViT + text transformer that the conversion maps (others refuse).
VISION_KEYS = {"image_size", "layers", "width", "head_width", "patch_size", "mlp_ratio"}
TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "tokenizer_kwargs"}
_INTERPOLATIONS = {"bicubic": "bicubic", "bilinear": "bilinear", "random": "bicubic"}


def read(path: Path) -> ModelInfo:
    config = read_json(path / CONFIG_FILE)
    model, pre = config.get("model_cfg", {}), config.get("preprocess_cfg", {})
    vision, text = model.get("vision_cfg", {}), model.get("text_cfg", {})
    problem = unsupported(model)
    if problem:
        raise ValueError(f"{path / CONFIG_FILE}: {problem}")
    resize_mode = pre.get("resize_mode", "shortest")
    if resize_mode not in ("shortest", "squash"):
        raise ValueError(f"{path / CONFIG_FILE}: resize_mode {resize_mode!r} is not supported (shortest, squash)")
    image_size = int(vision.get("image_size", 224))
    interpolation = pre.get("interpolation", "bicubic")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"{path / CONFIG_FILE}: interpolation {interpolation!r} is not supported")
    vocab = load_vocabulary(path if _has_vocabulary(path) else default_model_dir())
    return ModelInfo(
        path=path,
        family="clip",
        checkpoint="open_clip",
        image_size=image_size,
        resize_shortest_edge=image_size,
        resample=_INTERPOLATIONS[interpolation],
        image_mean=tuple(pre.get("mean", OPENAI_MEAN)),
        image_std=tuple(pre.get("std", OPENAI_STD)),
        context_length=int(text.get("context_length", 77)),
        embedding_dim=int(model.get("embed_dim", 512)),
        start_token_id=vocab.encoder[START_OF_TEXT],
        eos_token_id=vocab.encoder[END_OF_TEXT],
        vocab_size=int(text.get("vocab_size", 49408)),
        resize_mode="crop" if resize_mode == "shortest" else "squash",
    )


def unsupported(model: dict[str, Any]) -> str | None:
    """Why this model config is not served, or None."""
    vision, text = model.get("vision_cfg", {}), model.get("text_cfg", {})
    if vision.get("timm_model_name"):
        return (f"the image tower is timm's {vision['timm_model_name']!r} (open_clip's SigLIP and ConvNeXt "
                "entries), which mmserve cannot convert; serve the transformers-format checkpoint of the same "
                "model instead (for SigLIP: google/siglip-*)")
    if text.get("hf_model_name"):
        return (f"the text tower is Hugging Face's {text['hf_model_name']!r} (a multilingual XLM-RoBERTa tower): "
                "not supported")
    if isinstance(vision.get("layers"), (list, tuple)):
        return "ResNet image towers (RN50, ...) are not supported"
    if "multimodal_cfg" in model:
        return "CoCa models are not supported"
    extra = {key for key, value in [*vision.items(), *text.items()] if value is not None} - VISION_KEYS - TEXT_KEYS
    if extra:
        return f"options {sorted(extra)} are outside the plain ViT + text transformer that mmserve converts"
    if text.get("tokenizer_kwargs", {}).get("clean", "lower") not in ("lower", None):
        return f"tokenizer cleaning {text['tokenizer_kwargs']['clean']!r} is not CLIP's"
    return None


def _has_vocabulary(path: Path) -> bool:
    from mmserve.models.clip import OPEN_CLIP_BPE

    return ((path / "vocab.json").is_file() and (path / "merges.txt").is_file()) or (path / OPEN_CLIP_BPE).is_file()
