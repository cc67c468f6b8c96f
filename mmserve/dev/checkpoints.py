"""Random-weight checkpoints of the other families, in the layouts users download (no network): for the parity
tests, which compare mmserve's export and serving with the family's own PyTorch model and tokenizer.

- `write_random_siglip(dir)`: a `SiglipModel` directory with a SentencePiece tokenizer (`spiece.model`,
  trained here on the mixed corpus) as google/siglip-* ship it.
- `write_random_siglip(dir, variant="siglip2")`: SigLIP 2's fixed-resolution layout: the same model class,
  Gemma's tokenizer kind (`tokenizer.json`: byte-fallback BPE, `<bos>` first, `<pad>` padding, trained here).
- `write_random_siglip2_naflex(dir)`: a NaFlex `Siglip2Model` (refused by mmserve).

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
