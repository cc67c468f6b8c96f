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

import importlib.abc
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
    """open_clip's `model` and `tokenizer` modules (and timm, where installed, for its SigLIP entries).

    open_clip and timm import torchvision at module level (transforms, datasets, `FrozenBatchNorm2d`);
    torchvision has no CPU build for this torch on the package registries here (its CUDA wheel cannot load).
    Where it is missing, a stand-in answers those imports while open_clip and timm load, and is removed
    afterwards: every name it gives is a placeholder that raises if called, and none of the ViT code that
    builds and runs the models touches one (only image transforms, datasets and ResNet freezing would)."""
    import importlib
    import importlib.util
    import sys

    if "open_clip.model" in sys.modules:
        return sys.modules["open_clip.model"], sys.modules["open_clip.tokenizer"]
    if importlib.util.find_spec("open_clip") is None:
        raise ImportError("open_clip_torch is needed: pip install --no-deps open_clip_torch")
    import transformers  # noqa: F401 - first: its import must see the real absence of torchvision

    finder = _TorchvisionStandIn() if importlib.util.find_spec("torchvision") is None else None
    if finder is not None:
        sys.meta_path.insert(0, finder)
    try:
        if importlib.util.find_spec("timm") is not None:
            importlib.import_module("timm")
        return importlib.import_module("open_clip.model"), importlib.import_module("open_clip.tokenizer")
    finally:
        if finder is not None:
            sys.meta_path.remove(finder)
            for name in [name for name in sys.modules if name.split(".")[0] == "torchvision"]:
                del sys.modules[name]


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A meta-path finder that makes `torchvision` and its submodules importable as placeholders."""

    def find_spec(self, fullname: str, path=None, target=None):
        import importlib.machinery

        if fullname.split(".")[0] != "torchvision":
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        import types

        class Placeholders(types.ModuleType):
            def __getattr__(self, name: str):
                if name.startswith("__"):
                    raise AttributeError(name)
                value = _placeholder(f"{self.__name__}.{name}")
                setattr(self, name, value)
                return value

        module = Placeholders(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        pass


def _placeholder(qualified: str) -> type:
    class Attributes(type):  # InterpolationMode.BICUBIC and the like: a name, for tables built at import time
        def __getattr__(cls, name: str) -> str:
            if name.startswith("__"):
                raise AttributeError(name)
            return f"{qualified}.{name}"

    def refuse(*args, **kwargs):
        raise NotImplementedError(f"{qualified}: torchvision is not installed")

    return Attributes(qualified.rsplit(".", 1)[-1], (), {"__init__": refuse})


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
    if model_cfg["vision_cfg"].get("timm_model_name"):
        return _write_random_open_clip_siglip(Path(directory), name, model_cfg, seed, tiny)
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


def _write_random_open_clip_siglip(directory: Path, name: str, model_cfg: dict[str, Any], seed: int,
                                   tiny: bool) -> Path:
    """An open_clip SigLIP entry (timm's SigLIP ViT at its full size, which open_clip cannot shrink; a small
    text tower when `tiny`) with the tokenizer files the Hub's open_clip SigLIP repositories carry."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    gemma = model_cfg["text_cfg"].get("vocab_size") == 256000
    vocab_size = (_write_gemma_tokenizer if gemma else _write_sentencepiece)(directory)
    text_cfg = {**model_cfg["text_cfg"], "vocab_size": vocab_size, "hf_tokenizer_name": str(directory)}
    if tiny:
        text_cfg |= {"layers": 2, "width": 64, "heads": 4}
    model_cfg = {**model_cfg, "text_cfg": text_cfg}
    model_module, _ = open_clip_modules()
    torch.manual_seed(seed)
    model = model_module.CustomTextCLIP(**{k: v for k, v in model_cfg.items() if k != "custom_text"})
    with torch.no_grad():
        model.logit_scale.fill_(2.4)
        model.logit_bias.fill_(-7.0)
    save_file({key: value.contiguous() for key, value in model.state_dict().items()},
              str(directory / "open_clip_model.safetensors"))
    preprocess_cfg = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                      "resize_mode": "squash"}
    (directory / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2) + "\n")
    return directory


def open_clip_model(directory: str | Path):
    """The open_clip `CLIP` of a directory written above (or downloaded), built and loaded by open_clip's
    own code: the reference the conversion is checked against."""
    import torch

    model_module, _ = open_clip_modules()
    config = json.loads((Path(directory) / "open_clip_config.json").read_text())
    model_cfg = dict(config["model_cfg"])
    custom = model_cfg.pop("custom_text", False)
    model = (model_module.CustomTextCLIP if custom else model_module.CLIP)(**model_cfg)
    weights = Path(directory) / "open_clip_model.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(str(Path(directory) / "open_clip_pytorch_model.bin"), weights_only=True)
    model.load_state_dict(state)
    return model.eval()


TINY_CLAP_AUDIO = {"patch_embeds_hidden_size": 16, "depths": [1, 1, 1, 1], "num_attention_heads": [1, 2, 2, 4],
                   "hidden_size": 128}  # hidden_size: the last stage's width, 16 * 2**3
TINY_CLAP_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


def write_random_clap(directory: str | Path, *, seed: int = 0, **config: Any) -> Path:
    """An unfused `ClapModel` directory (HTSAT audio tower, RoBERTa text tower) with random weights, as
    laion/clap-htsat-unfused ships it: config and weights, a ClapFeatureExtractor `preprocessor_config.json` at
    CLAP's defaults (48 kHz, 10 s windows, 1001 x 64 features), and a RoBERTa byte-level BPE tokenizer
    (`tokenizer.json`, `vocab.json`, `merges.txt`, trained here on the mixed corpus).

    The towers are tiny (one Swin block per stage at width 16, two text layers at width 64) at the real input
    size, so export and a forward pass take seconds. `audio_config` and `text_config` (dicts) update the tiny
    towers; other keywords go to ClapConfig (`projection_dim`, ...)."""
    import math

    import torch
    from transformers import ClapConfig, ClapModel

    from mmserve.modalities.audio import AudioFeatureConfig

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = _write_roberta_tokenizer(directory)
    audio = {**TINY_CLAP_AUDIO, **config.pop("audio_config", {})}
    text = {**TINY_CLAP_TEXT, "vocab_size": vocab_size, **config.pop("text_config", {})}
    torch.manual_seed(seed)
    model = ClapModel(ClapConfig(audio_config=audio, text_config=text, **{"projection_dim": 48, **config}))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a trained model's scales, statistics and biases, not the initial constants
        model.logit_scale_a.fill_(math.log(1 / 0.07) + 0.1 * seed + 0.2)
        model.logit_scale_t.fill_(math.log(1 / 0.07) + 0.1 * seed - 0.2)
        norm = model.audio_model.audio_encoder.batch_norm
        norm.running_mean.copy_(-40.0 + 5.0 * torch.randn(norm.running_mean.shape, generator=generator))
        norm.running_var.copy_(300.0 * (1.0 + torch.rand(norm.running_var.shape, generator=generator)))
        for name, parameter in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(str(directory))
    AudioFeatureConfig().to_preprocessor_config(directory)
    return directory


def _write_roberta_tokenizer(directory: Path, vocab_size: int = 1000) -> int:
    """RoBERTa's layout (<s> 0, <pad> 1, </s> 2, <unk> 3, <mask> 4; byte-level BPE; `<s> ... </s>`), as CLAP's
    text tower takes it: `tokenizer.json`, `vocab.json` + `merges.txt` and a RobertaTokenizer config."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_training_texts(), trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                            add_prefix_space=False)
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer.model.save(str(directory))  # vocab.json, merges.txt
    special = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
               "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
    config = {"tokenizer_class": "RobertaTokenizer", "model_max_length": 512, "add_prefix_space": False,
              "errors": "replace", "trim_offsets": True, **special}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return int(tokenizer.get_vocab_size())
