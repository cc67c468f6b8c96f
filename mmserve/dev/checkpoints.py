"""Random-weight checkpoints of the other families, in the layouts users download (no network): for the parity
tests, which compare mmserve's export and serving with the family's own PyTorch model and tokenizer.

- `write_random_siglip(dir)`: a `SiglipModel` directory with a SentencePiece tokenizer (`spiece.model`,
  trained here on the mixed corpus) as google/siglip-* ship it.
- `write_random_siglip(dir, variant="siglip2")`: SigLIP 2's fixed-resolution layout: the same model class,
  Gemma's tokenizer kind (`tokenizer.json`: byte-fallback BPE, `<bos>` first, `<pad>` padding, trained here).
- `write_random_siglip2_naflex(dir)`: a NaFlex `Siglip2Model` (refused by mmserve).
- `write_random_open_clip(dir, "ViT-B-32-quickgelu")`: an open_clip checkpoint directory
  (`open_clip_config.json` + `open_clip_model.safetensors`) of open_clip's own model, built by open_clip's
  code from its own config for that name (`open_clip_model()`).

Tiny by default (each writes in about a second); `full_size=True` is the base configuration's size (SiglipConfig's
defaults: ViT-B/16 at 224 pixels), for the slow tests.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from mmserve.dev.corpus import corpus

TINY_TOWER = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


def write_random_siglip(directory: str | Path, *, variant: str = "siglip", seed: int = 0, image_size: int = 32,
                        full_size: bool = False, resample: int | None = None) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipModel

    if variant not in ("siglip", "siglip2"):
        raise ValueError(f"variant must be siglip or siglip2, got {variant!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = (_write_sentencepiece if variant == "siglip" else _write_gemma_tokenizer)(directory)
    tower: dict[str, Any] = {} if full_size else dict(TINY_TOWER)
    vision = {**tower, "image_size": 224 if full_size else image_size, "patch_size": 16 if full_size else 8}
    text = {**tower, "vocab_size": vocab_size, "max_position_embeddings": 64, "pad_token_id": 1, "eos_token_id": 1,
            "bos_token_id": None}
    if variant == "siglip2":  # Gemma's special ids
        text |= {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
    torch.manual_seed(seed)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():  # a trained model's scale and bias, not the initial 0 (random ones test more)
        model.logit_scale.fill_(2.3 + 0.1 * seed)
        model.logit_bias.fill_(-8.5)
    model.save_pretrained(str(directory))
    size = vision["image_size"]
    preprocessor = {
        "image_processor_type": "SiglipImageProcessor",
        "processor_class": "SiglipProcessor",
        "do_resize": True,
        "size": {"height": size, "width": size},
        "resample": resample if resample is not None else (3 if variant == "siglip" else 2),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    return directory


def write_random_siglip2_naflex(directory: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import Siglip2Config, Siglip2Model

    torch.manual_seed(seed)
    config = Siglip2Config(text_config={**TINY_TOWER, "vocab_size": 512}, vision_config={**TINY_TOWER})
    Siglip2Model(config).save_pretrained(str(directory))
    return Path(directory)


def _training_texts() -> list[str]:
    return list(corpus(4000, seed=1)) + [f"a photo of a {word}" for word in
                                         ("cat", "dog", "red circle", "blue square", "sunset", "car")]


def _write_sentencepiece(directory: Path) -> int:
    """SigLIP's layout: `spiece.model` (unigram; <pad> 0, </s> 1, <unk> 2) and its configs."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_texts()), model_writer=model, vocab_size=1000, hard_vocab_limit=False,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>",
        unk_piece="<unk>", character_coverage=0.9995, minloglevel=2, num_threads=1)
    (directory / "spiece.model").write_bytes(model.getvalue())
    special = {"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}
    config = {"tokenizer_class": "SiglipTokenizer", "model_max_length": 64, "do_lower_case": True, **special}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    processor = sentencepiece.SentencePieceProcessor(model_file=str(directory / "spiece.model"))
    return int(processor.get_piece_size())


def _write_gemma_tokenizer(directory: Path) -> int:
    """SigLIP 2's layout: Gemma's kind of `tokenizer.json` (<pad> 0, <eos> 1, <bos> 2, <unk> 3; byte fallback;
    "▁" for spaces; <bos> prepended) and a GemmaTokenizer config."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer = normalizers.Replace(" ", "\u2581")
    tokenizer.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=specials + byte_tokens, show_progress=False)
    tokenizer.train_from_iterator(_training_texts(), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer.save(str(directory / "tokenizer.json"))
    special = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
    config = {"tokenizer_class": "GemmaTokenizer", "model_max_length": 64, "padding_side": "right",
              "add_bos_token": True, "add_eos_token": False, **special}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return int(tokenizer.get_vocab_size())


def open_clip_modules():
    """open_clip's `model` and `tokenizer` modules, without its package `__init__`.

    open_clip's package init imports its torchvision image transforms; torchvision has no CPU build for this
    torch on the package registries here (its CUDA wheel cannot load). The model code needs torchvision only
    for `FrozenBatchNorm2d`, which open_clip uses to freeze ResNet towers: where torchvision is missing, a
    minimal module offering that one class stands in (no ViT model touches it)."""
    import importlib
    import importlib.util
    import sys
    import types

    if "open_clip.model" in sys.modules:
        return sys.modules["open_clip.model"], sys.modules["open_clip.tokenizer"]
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_clip_torch is needed: pip install --no-deps open_clip_torch")
    import transformers  # noqa: F401 - first: its import must see the real absence of torchvision

    if "open_clip" not in sys.modules:
        package = types.ModuleType("open_clip")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["open_clip"] = package
    stand_ins = _torchvision_stand_in() if importlib.util.find_spec("torchvision") is None else {}
    sys.modules.update(stand_ins)
    try:  # the stand-in lives only while open_clip's modules import
        return importlib.import_module("open_clip.model"), importlib.import_module("open_clip.tokenizer")
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)


def _torchvision_stand_in() -> dict[str, Any]:
    import types

    from torch import nn

    class FrozenBatchNorm2d(nn.Module):  # only referenced by open_clip's ResNet freezing
        def __init__(self, *args, **kwargs) -> None:
            raise NotImplementedError("torchvision is not installed: ResNet towers cannot be frozen here")

    names = ("torchvision", "torchvision.ops", "torchvision.ops.misc")
    stand_ins = {name: types.ModuleType(name) for name in names}
    stand_ins["torchvision.ops.misc"].FrozenBatchNorm2d = FrozenBatchNorm2d  # type: ignore[attr-defined]
    stand_ins["torchvision"].ops = stand_ins["torchvision.ops"]  # type: ignore[attr-defined]
    stand_ins["torchvision.ops"].misc = stand_ins["torchvision.ops.misc"]  # type: ignore[attr-defined]
    return stand_ins


def open_clip_config(name: str) -> dict[str, Any]:
    """open_clip's own model config for `name` (its `model_configs/<name>.json`)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_clip_torch is needed: pip install --no-deps open_clip_torch")
    file = Path(next(iter(spec.submodule_search_locations))) / "model_configs" / f"{name}.json"
    return json.loads(file.read_text())


def write_random_open_clip(directory: str | Path, name: str = "ViT-B-32-quickgelu", *, seed: int = 0,
                           tiny: bool = True, safetensors: bool = True, preprocess: dict[str, Any] | None = None
                           ) -> Path:
    """open_clip's `name` with random weights, saved as the Hub's open_clip directories are. `tiny` keeps the
    architecture and shrinks the towers (2 layers, width 64, 64 pixels, patch 16) to write and export in
    seconds."""
    import torch

    model_cfg = open_clip_config(name)
    if tiny:
        model_cfg = {**model_cfg, "embed_dim": 48,
                     "vision_cfg": {**model_cfg["vision_cfg"], "layers": 2, "width": 64, "image_size": 64,
                                    "patch_size": 16, **({"head_width": 32} if "head_width" in
                                                         model_cfg["vision_cfg"] else {})},
                     "text_cfg": {**model_cfg["text_cfg"], "layers": 2, "width": 64, "heads": 4}}
    model_module, _ = open_clip_modules()
    torch.manual_seed(seed)
    model = model_module.CLIP(**model_cfg)
    with torch.no_grad():
        model.logit_scale.fill_(4.2)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    if safetensors:
        from safetensors.torch import save_file

        save_file(state, str(directory / "open_clip_model.safetensors"))
    else:
        torch.save(state, str(directory / "open_clip_pytorch_model.bin"))
    preprocess_cfg = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                      "interpolation": "bicubic", "resize_mode": "shortest", **(preprocess or {})}
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (directory / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory


def open_clip_model(directory: str | Path):
    """The open_clip `CLIP` of a directory written above (or downloaded), built and loaded by open_clip's
    own code: the reference the conversion is checked against."""
    import torch

    model_module, _ = open_clip_modules()
    config = json.loads((Path(directory) / "open_clip_config.json").read_text())
    model = model_module.CLIP(**config["model_cfg"])
    weights = Path(directory) / "open_clip_model.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(str(Path(directory) / "open_clip_pytorch_model.bin"), weights_only=True)
    model.load_state_dict(state)
    return model.eval()
