"""Reading an open_clip checkpoint directory without torch (and without open_clip).

    open_clip_config.json               {"model_cfg": {...}, "preprocess_cfg": {...}}
    open_clip_model.safetensors         or open_clip_pytorch_model.bin

as `huggingface-cli download` fetches an open_clip model from the Hub. Served:

- CLIP: the ViT image towers with open_clip's own text transformer (ViT-B/32,
  B/16, L/14, H/14, g/14 and the quick-gelu variants), tokenized with CLIP's
  BPE (the vocabulary bundled with mmserve is open_clip's).
- SigLIP and SigLIP 2 entries (`ViT-B-16-SigLIP`, `ViT-SO400M-14-SigLIP2`,
  ...: a timm SigLIP ViT with attention pooling, a bidirectional text
  transformer pooled at the last position), tokenized by the directory's own
  tokenizer files (`spiece.model` or `tokenizer.json`, which the Hub's
  open_clip SigLIP repositories carry) after open_clip's "canonicalize"
  cleaning (ftfy, HTML unescape, "_" to space, punctuation removed, lower case).

Preprocessing follows the checkpoint's `preprocess_cfg` (mean, std,
interpolation, resize mode). `mmserve export` converts the weights to a
Hugging Face `CLIPModel` or `SiglipModel` in memory (`mmserve.models.convert`)
and exports that.

Refused with a clear error: other timm image towers (ConvNeXt, EVA, ...), a
Hugging Face text tower (the multilingual XLM-RoBERTa models), ResNet towers
and CoCa.
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
# timm's SigLIP ViTs that open_clip's SigLIP entries name: (attention heads, activation). Width, depth, patch
# and MLP size are read from the weights; these two are not in them (timm's model definitions).
TIMM_SIGLIP = {
    **dict.fromkeys(("vit_base_patch16_siglip_224", "vit_base_patch16_siglip_256", "vit_base_patch16_siglip_384",
                     "vit_base_patch16_siglip_512"), (12, "gelu")),
    "vit_base_patch32_siglip_256": (12, "gelu_pytorch_tanh"),
    **dict.fromkeys(("vit_large_patch16_siglip_256", "vit_large_patch16_siglip_384"), (16, "gelu")),
    "vit_large_patch16_siglip_512": (16, "gelu_pytorch_tanh"),
    **dict.fromkeys(("vit_so400m_patch14_siglip_224", "vit_so400m_patch14_siglip_378",
                     "vit_so400m_patch14_siglip_384"), (16, "gelu")),
    **dict.fromkeys(("vit_so400m_patch16_siglip_256", "vit_so400m_patch16_siglip_384",
                     "vit_so400m_patch16_siglip_512", "vit_giantopt_patch16_siglip_256",
                     "vit_giantopt_patch16_siglip_384"), (16, "gelu_pytorch_tanh")),
}
SIGLIP_TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "tokenizer_kwargs",
                    "hf_tokenizer_name", "no_causal_mask", "proj_bias", "pool_type", "norm_kwargs", "act_kwargs",
                    "proj_type"}


def read(path: Path) -> ModelInfo:
    config = read_json(path / CONFIG_FILE)
    model, pre = config.get("model_cfg", {}), config.get("preprocess_cfg", {})
    vision, text = model.get("vision_cfg", {}), model.get("text_cfg", {})
    if siglip_tower(model):
        return _read_siglip(path, model, pre)
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


def siglip_tower(model: dict[str, Any]) -> str | None:
    """The timm SigLIP ViT name of an open_clip SigLIP entry that mmserve converts, or None."""
    vision, text = model.get("vision_cfg", {}), model.get("text_cfg", {})
    name = str(vision.get("timm_model_name") or "").split(".")[0]
    plain = (vision.get("timm_pool") == "map" and vision.get("timm_proj") in ("none", None)
             and text.get("pool_type") == "last" and text.get("no_causal_mask")
             and not set(text) - SIGLIP_TEXT_KEYS and text.get("proj_type", "linear") in ("linear", "none"))
    return name if name in TIMM_SIGLIP and plain else None


def _read_siglip(path: Path, model: dict[str, Any], pre: dict[str, Any]) -> ModelInfo:
    from mmserve.models.siglip import tokenizer_of

    vision, text = model.get("vision_cfg", {}), model.get("text_cfg", {})
    if text.get("tokenizer_kwargs", {}).get("clean", "canonicalize") != "canonicalize":
        raise ValueError(f"{path / CONFIG_FILE}: tokenizer cleaning {text['tokenizer_kwargs']['clean']!r} is not "
                         "SigLIP's 'canonicalize'")
    try:
        tokenizer, pad, eos, gemma = tokenizer_of(path)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}; open_clip names {text.get('hf_tokenizer_name')!r} for it, which is not "
                                "downloaded: put its tokenizer files in this directory") from None
    resize_mode = pre.get("resize_mode", "squash")
    if resize_mode not in ("shortest", "squash"):
        raise ValueError(f"{path / CONFIG_FILE}: resize_mode {resize_mode!r} is not supported (shortest, squash)")
    image_size = int(vision.get("image_size", 224))
    return ModelInfo(
        path=path,
        family="siglip2" if gemma else "siglip",
        checkpoint="open_clip",
        image_size=image_size,
        resize_shortest_edge=image_size,
        resample=_INTERPOLATIONS.get(pre.get("interpolation", "bicubic"), "bicubic"),
        image_mean=tuple(pre.get("mean", (0.5, 0.5, 0.5))),
        image_std=tuple(pre.get("std", (0.5, 0.5, 0.5))),
        context_length=int(text.get("context_length", 64)),
        embedding_dim=int(model.get("embed_dim", 768)),
        start_token_id=None,
        eos_token_id=eos,
        vocab_size=int(text.get("vocab_size", 32000)),
        resize_mode="crop" if resize_mode == "shortest" else "squash",
        tokenizer=tokenizer,
        pad_token_id=pad,
        pooling="last",
        score_function="sigmoid",
        text_clean="open_clip-canonicalize",
    )


def unsupported(model: dict[str, Any]) -> str | None:
    """Why this model config is not served, or None."""
    vision, text = model.get("vision_cfg", {}), model.get("text_cfg", {})
    if siglip_tower(model):
        return None
    if vision.get("timm_model_name"):
        return (f"the image tower is timm's {vision['timm_model_name']!r}, which mmserve does not convert (it "
                "converts open_clip's plain ViTs and its SigLIP entries)")
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
