"""Reading a SigLIP or SigLIP 2 directory (Hugging Face `SiglipModel` layout) without torch.

- `config.json` (`model_type: siglip`): context length
  (`text_config.max_position_embeddings`, 64 for the released models), image
  size, embedding size (the vision width, which the text head projects to).
- `preprocessor_config.json`: SigLIP resizes both sides to the size (no crop,
  aspect ratio not kept), bicubic unless the file says otherwise, mean and std
  0.5 by default.
- The tokenizer: `spiece.model` (SigLIP: SentencePiece, lower-cased, punctuation
  removed, `</s>` appended and padding with it) or `tokenizer.json` (SigLIP 2's
  fixed-resolution checkpoints: Gemma's tokenizer, read by `tokenizers`).

SigLIP 2's NaFlex checkpoints (`model_type: siglip2`, `Siglip2Model`) take a
variable number of patches per image at its own aspect ratio, with a patch
mask; mmserve's towers take one fixed square, so they are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmserve.models.clip import RESAMPLE_NAMES
from mmserve.models.info import ModelInfo, read_json, size_value

SENTENCEPIECE_FILE = "spiece.model"
TOKENIZER_JSON = "tokenizer.json"
GEMMA_TOKENIZERS = ("GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer")
NAFLEX_REFUSAL = (
    "{path}: a SigLIP 2 NaFlex checkpoint (model_type siglip2, variable resolution) is not supported: mmserve's "
    "image towers take one fixed square size. Use a fixed-resolution SigLIP 2 checkpoint (for example "
    "google/siglip2-base-patch16-224, model_type siglip)"
)


def read(path: Path, config: dict[str, Any]) -> ModelInfo:
    text, vision = config.get("text_config", {}), config.get("vision_config", {})
    pre = read_json(path / "preprocessor_config.json")
    image_size = int(vision.get("image_size", 224))
    size = size_value(pre.get("size"), image_size)
    if size != image_size:
        raise ValueError(f"{path / 'preprocessor_config.json'}: size {size} does not match the vision tower's "
                         f"image_size {image_size}")
    if pre.get("do_center_crop"):
        raise ValueError(f"{path / 'preprocessor_config.json'}: a centre crop is not SigLIP's preprocessing")
    width = int(vision.get("hidden_size", 768))
    projection = int(text.get("projection_size", text.get("hidden_size", 768)))
    if projection != width:
        raise ValueError(f"{path / 'config.json'}: the text head projects to {projection}, the image tower "
                         f"gives {width}: not one embedding space")
    tokenizer, pad, eos, gemma = tokenizer_of(path)
    return ModelInfo(
        path=path,
        family="siglip2" if gemma else "siglip",
        checkpoint="transformers",
        image_size=image_size,
        resize_shortest_edge=image_size,
        resample=RESAMPLE_NAMES.get(int(pre.get("resample", 3)), "bicubic"),
        image_mean=tuple(pre.get("image_mean", (0.5, 0.5, 0.5))),
        image_std=tuple(pre.get("image_std", (0.5, 0.5, 0.5))),
        context_length=int(text.get("max_position_embeddings", 64)),
        embedding_dim=width,
        start_token_id=None,
        eos_token_id=eos,
        vocab_size=int(text.get("vocab_size", 32000)),
        resize_mode="squash",
        tokenizer=tokenizer,
        pad_token_id=pad,
        pooling="last",
        score_function="sigmoid",
    )


def tokenizer_of(path: Path) -> tuple[str, int, int, bool]:
    """(kind, pad id, eos id, whether it is Gemma's: SigLIP 2) of the directory's tokenizer."""
    tokenizer_config = read_json(path / "tokenizer_config.json")
    kind, pad, eos = _tokenizer(path, tokenizer_config)
    return kind, pad, eos, tokenizer_config.get("tokenizer_class") in GEMMA_TOKENIZERS or kind == "tokenizers"


def _tokenizer(path: Path, tokenizer_config: dict[str, Any]) -> tuple[str, int, int]:
    special = {**read_json(path / "special_tokens_map.json"), **tokenizer_config}
    if (path / TOKENIZER_JSON).is_file():
        kind, pad_name, eos_name = "tokenizers", "<pad>", "<eos>"
    elif (path / SENTENCEPIECE_FILE).is_file():
        kind, pad_name, eos_name = "sentencepiece", "</s>", "</s>"
    else:
        raise FileNotFoundError(f"{path}: no tokenizer ({SENTENCEPIECE_FILE} for SigLIP, {TOKENIZER_JSON} for "
                                "SigLIP 2)")
    pad_name, eos_name = (token_name(special.get(key), default)
                          for key, default in (("pad_token", pad_name), ("eos_token", eos_name)))
    ids = token_ids(path, kind, [pad_name, eos_name])
    return kind, ids[0], ids[1]


def token_name(entry: object, default: str) -> str:
    """A special token as the configs write it: a string, or {"content": ...}."""
    if isinstance(entry, dict):
        return str(entry.get("content", default))
    return default if entry is None else str(entry)


def token_ids(path: Path, kind: str, names: list[str]) -> list[int]:
    """Ids of special tokens: from `tokenizer_config.json`'s table where it has one (reading Gemma's 30 MB
    tokenizer.json takes a second), else from the tokenizer itself."""
    decoder = read_json(path / "tokenizer_config.json").get("added_tokens_decoder", {})
    table = {entry.get("content"): int(index) for index, entry in decoder.items()}
    if all(name in table for name in names):
        return [table[name] for name in names]
    if kind == "sentencepiece":
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor(model_file=str(path / SENTENCEPIECE_FILE))
        found = [processor.piece_to_id(name) for name in names]
        missing = [n for n, i in zip(names, found) if i == processor.unk_id() and n != processor.id_to_piece(i)]
    else:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path / TOKENIZER_JSON))
        looked_up = [tokenizer.token_to_id(name) for name in names]
        missing = [n for n, i in zip(names, looked_up) if i is None]
        found = [i for i in looked_up if i is not None]
    if missing:
        raise ValueError(f"{path}: the tokenizer has no token {missing[0]!r}")
    return [int(i) for i in found]
