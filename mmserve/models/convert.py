"""An open_clip ViT checkpoint as a Hugging Face `CLIPModel`, in memory (torch; the `train` extra; no open_clip,
no download).

open_clip's `CLIP` and transformers' `CLIPModel` are the same network under different names: a pre-norm ViT
with a class token, `ln_pre` and `ln_post` on the class token, a linear projection; a causal text transformer
pooled at the end-of-text token (the highest id, which open_clip finds with argmax), `ln_final`, a projection.
The attention's packed `in_proj` splits into q, k, v; the projections are transposed matrices. `quick_gelu`
selects the activation; LayerNorm's epsilon is 1e-5 in both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmserve.models.info import read_json
from mmserve.models.open_clip import CONFIG_FILE, WEIGHT_FILES, unsupported


def open_clip_to_hf(path: str | Path):
    from transformers import CLIPConfig, CLIPModel

    path = Path(path)
    model_cfg = read_json(path / CONFIG_FILE).get("model_cfg", {})
    problem = unsupported(model_cfg)
    if problem:
        raise ValueError(f"{path / CONFIG_FILE}: {problem}")
    state = {key.removeprefix("module."): value for key, value in _load_weights(path).items()}
    if any(key.startswith("text.") for key in state):  # CustomTextCLIP keeps the text tower under "text."
        state = {key.removeprefix("text."): value for key, value in state.items()}
    settings = hf_config(model_cfg)
    layers = settings["vision_config"]["num_hidden_layers"]
    model = CLIPModel(CLIPConfig(**settings))
    converted = convert_state_dict(state, layers, settings["text_config"]["num_hidden_layers"])
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [key for key in missing if not key.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"{path}: the weights do not fit the {layers}-layer ViT + "
                         f"text transformer named in {CONFIG_FILE} (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]})")
    return model.eval()


def hf_config(model_cfg: dict[str, Any]) -> dict[str, Any]:
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    embed_dim = int(model_cfg.get("embed_dim", 512))
    v_width, t_width = int(vision.get("width", 768)), int(text.get("width", 512))
    return {
        "projection_dim": embed_dim,
        "vision_config": {
            "hidden_size": v_width,
            "intermediate_size": int(v_width * float(vision.get("mlp_ratio", 4.0))),
            "num_hidden_layers": int(vision.get("layers", 12)),
            "num_attention_heads": v_width // int(vision.get("head_width", 64)),
            "patch_size": int(vision.get("patch_size", 16)),
            "image_size": int(vision.get("image_size", 224)),
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
            "projection_dim": embed_dim,
        },
        "text_config": {
            "hidden_size": t_width,
            "intermediate_size": int(t_width * float(text.get("mlp_ratio", 4.0))),
            "num_hidden_layers": int(text.get("layers", 12)),
            "num_attention_heads": int(text.get("heads", 8)),
            "max_position_embeddings": int(text.get("context_length", 77)),
            "vocab_size": int(text.get("vocab_size", 49408)),
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
            "projection_dim": embed_dim,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
        },
    }


def convert_state_dict(state: dict[str, torch.Tensor], vision_layers: int, text_layers: int) -> dict[str, torch.Tensor]:
    out = {
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "visual_projection.weight": state["visual.proj"].t(),
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_projection.weight": state["text_projection"].t(),
        "logit_scale": state["logit_scale"].reshape(()),
    }
    for ours, theirs in (("vision_model.pre_layrnorm", "visual.ln_pre"), ("vision_model.post_layernorm", "visual.ln_post"),
                         ("text_model.final_layer_norm", "ln_final")):
        out[f"{ours}.weight"], out[f"{ours}.bias"] = state[f"{theirs}.weight"], state[f"{theirs}.bias"]
    for prefix, theirs, layers in (("vision_model", "visual.transformer", vision_layers),
                                   ("text_model", "transformer", text_layers)):
        for i in range(layers):
            out.update(_block(state, f"{theirs}.resblocks.{i}", f"{prefix}.encoder.layers.{i}"))
    return out


def _block(state: dict[str, torch.Tensor], theirs: str, ours: str) -> dict[str, torch.Tensor]:
    out = {}
    q, k, v = state[f"{theirs}.attn.in_proj_weight"].chunk(3)
    qb, kb, vb = state[f"{theirs}.attn.in_proj_bias"].chunk(3)
    for name, weight, bias in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
        out[f"{ours}.self_attn.{name}.weight"], out[f"{ours}.self_attn.{name}.bias"] = weight, bias
    for ours_name, theirs_name in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                                   ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
        for part in ("weight", "bias"):
            out[f"{ours}.{ours_name}.{part}"] = state[f"{theirs}.{theirs_name}.{part}"]
    return out


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path / name))
            state = torch.load(str(path / name), map_location="cpu", weights_only=True)
            return state.get("state_dict", state) if isinstance(state, dict) else state
    raise FileNotFoundError(f"{path}: no weights ({' or '.join(WEIGHT_FILES)})")
