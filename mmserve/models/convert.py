"""An open_clip checkpoint as a Hugging Face model, in memory (torch; the `train` extra; no open_clip, no timm,
no download): its plain ViT CLIPs as a `CLIPModel`, its SigLIP entries as a `SiglipModel`.

open_clip's `CLIP` and transformers' `CLIPModel` are the same network under different names: a pre-norm ViT
with a class token, `ln_pre` and `ln_post` on the class token, a linear projection; a causal text transformer
pooled at the end-of-text token (the highest id, which open_clip finds with argmax), `ln_final`, a projection.
The attention's packed `in_proj` splits into q, k, v; the projections are transposed matrices. `quick_gelu`
selects the activation; LayerNorm's epsilon is 1e-5 in both.

open_clip's SigLIP entries are a timm SigLIP ViT (`visual.trunk`: patch embedding with bias, position
embedding, pre-norm blocks with a packed `qkv`, a final norm, attention pooling over a learned latent with
separate `q` and packed `kv` projections, then a norm and MLP with a residual) and a bidirectional text
transformer pooled at the last position with a biased linear projection: transformers' SigLIP towers, under
other names. Width, depth, patch and MLP sizes come from the weights; heads and activation from timm's
definition of the named ViT (`open_clip.TIMM_SIGLIP`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmserve.models.info import read_json
from mmserve.models.open_clip import CONFIG_FILE, TIMM_SIGLIP, WEIGHT_FILES, siglip_tower, unsupported


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
    out = _split_attention(ours, state[f"{theirs}.attn.in_proj_weight"], state[f"{theirs}.attn.in_proj_bias"])
    for ours_name, theirs_name in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                                   ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
        for part in ("weight", "bias"):
            out[f"{ours}.{ours_name}.{part}"] = state[f"{theirs}.{theirs_name}.{part}"]
    return out


def open_clip_siglip_to_hf(path: str | Path):
    from transformers import SiglipConfig, SiglipModel

    path = Path(path)
    model_cfg = read_json(path / CONFIG_FILE).get("model_cfg", {})
    name = siglip_tower(model_cfg)
    if name is None:
        raise ValueError(f"{path / CONFIG_FILE}: not an open_clip SigLIP entry that mmserve converts")
    state = {key.removeprefix("module."): value for key, value in _load_weights(path).items()}
    text_cfg = model_cfg.get("text_cfg", {})
    vision_heads, vision_act = TIMM_SIGLIP[name]
    width = state["visual.trunk.pos_embed"].shape[-1]
    vision_layers = _count_blocks(state, "visual.trunk.blocks.")
    text_width = state["text.positional_embedding"].shape[-1]
    text_layers = _count_blocks(state, "text.transformer.resblocks.")
    embed_dim = int(model_cfg.get("embed_dim", width))
    text_act = "gelu_pytorch_tanh" if text_cfg.get("act_kwargs", {}).get("approximate") == "tanh" else "gelu"
    eps = float(text_cfg.get("norm_kwargs", {}).get("eps", 1e-5))
    config = SiglipConfig(
        vision_config={
            "hidden_size": width, "num_hidden_layers": vision_layers, "num_attention_heads": vision_heads,
            "intermediate_size": state["visual.trunk.blocks.0.mlp.fc1.weight"].shape[0],
            "patch_size": state["visual.trunk.patch_embed.proj.weight"].shape[-1],
            "image_size": int(model_cfg.get("vision_cfg", {}).get("image_size", 224)),
            "hidden_act": vision_act, "layer_norm_eps": 1e-6,
        },
        text_config={
            "hidden_size": text_width, "num_hidden_layers": text_layers,
            "num_attention_heads": int(text_cfg.get("heads", 12)),
            "intermediate_size": state["text.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            "vocab_size": state["text.token_embedding.weight"].shape[0],
            "max_position_embeddings": state["text.positional_embedding"].shape[0],
            "hidden_act": text_act, "layer_norm_eps": eps, "projection_size": embed_dim,
            "pad_token_id": None, "bos_token_id": None, "eos_token_id": None,
        },
    )
    model = SiglipModel(config)
    converted = _siglip_state_dict(state, vision_layers, text_layers, text_width, embed_dim)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [key for key in missing if not key.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"{path}: the weights do not fit open_clip's SigLIP {name} (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return model.eval()


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix)})


def _siglip_state_dict(state: dict[str, torch.Tensor], vision_layers: int, text_layers: int, text_width: int,
                       embed_dim: int) -> dict[str, torch.Tensor]:
    trunk, pool = "visual.trunk", "visual.trunk.attn_pool"
    out = {
        "vision_model.embeddings.patch_embedding.weight": state[f"{trunk}.patch_embed.proj.weight"],
        "vision_model.embeddings.patch_embedding.bias": state[f"{trunk}.patch_embed.proj.bias"],
        "vision_model.embeddings.position_embedding.weight": state[f"{trunk}.pos_embed"].reshape(
            -1, state[f"{trunk}.pos_embed"].shape[-1]),
        "vision_model.head.probe": state[f"{pool}.latent"].reshape(1, 1, -1),
        "vision_model.head.attention.in_proj_weight": torch.cat([state[f"{pool}.q.weight"], state[f"{pool}.kv.weight"]]),
        "vision_model.head.attention.in_proj_bias": torch.cat([state[f"{pool}.q.bias"], state[f"{pool}.kv.bias"]]),
        "text_model.embeddings.token_embedding.weight": state["text.token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["text.positional_embedding"],
        "logit_scale": state["logit_scale"].reshape(1),
        "logit_bias": state["logit_bias"].reshape(1),
    }
    if "text.text_projection.weight" in state:
        out["text_model.head.weight"] = state["text.text_projection.weight"]
        out["text_model.head.bias"] = state.get("text.text_projection.bias", torch.zeros(embed_dim))
    else:  # proj_type "none": the pooled state is the embedding
        out["text_model.head.weight"] = torch.eye(embed_dim, text_width)
        out["text_model.head.bias"] = torch.zeros(embed_dim)
    pairs = [("vision_model.post_layernorm", f"{trunk}.norm"), ("vision_model.head.attention.out_proj", f"{pool}.proj"),
             ("vision_model.head.layernorm", f"{pool}.norm"), ("vision_model.head.mlp.fc1", f"{pool}.mlp.fc1"),
             ("vision_model.head.mlp.fc2", f"{pool}.mlp.fc2"), ("text_model.final_layer_norm", "text.ln_final")]
    for ours, theirs in pairs:
        out[f"{ours}.weight"], out[f"{ours}.bias"] = state[f"{theirs}.weight"], state[f"{theirs}.bias"]
    for i in range(vision_layers):
        block, ours = f"{trunk}.blocks.{i}", f"vision_model.encoder.layers.{i}"
        out |= _split_attention(ours, state[f"{block}.attn.qkv.weight"], state[f"{block}.attn.qkv.bias"])
        for ours_name, theirs_name in (("self_attn.out_proj", "attn.proj"), ("layer_norm1", "norm1"),
                                       ("layer_norm2", "norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            for part in ("weight", "bias"):
                out[f"{ours}.{ours_name}.{part}"] = state[f"{block}.{theirs_name}.{part}"]
    for i in range(text_layers):
        out |= _block(state, f"text.transformer.resblocks.{i}", f"text_model.encoder.layers.{i}")
    return out


def _split_attention(ours: str, weight: torch.Tensor, bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """A packed [3W, W] q/k/v projection as transformers' three."""
    out = {}
    for name, w, b in zip(("q_proj", "k_proj", "v_proj"), weight.chunk(3), bias.chunk(3)):
        out[f"{ours}.self_attn.{name}.weight"], out[f"{ours}.self_attn.{name}.bias"] = w, b
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
