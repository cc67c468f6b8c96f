"""Reading a CLIP model directory (Hugging Face `CLIPModel` layout) without torch, and CLIP's BPE vocabulary.

Everything that preprocessing, tokenization and serving need to know about a
model comes from its files here, so a user's own checkpoint (for example a
downloaded `openai/clip-vit-base-patch32`) works the same as the bundled one:

- `config.json`: context length (`text_config.max_position_embeddings`),
  embedding size (`projection_dim`), vision `image_size`.
- `preprocessor_config.json`: resize and crop size, mean, std, resample mode.
- `vocab.json` + `merges.txt` (Hugging Face) or `bpe_simple_vocab_16e6.txt.gz`
  (open_clip): the BPE vocabulary; special tokens from `tokenizer_config.json`.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from importlib import resources
from pathlib import Path
from typing import Any

from mmserve.models.info import ModelInfo, read_json, size_value

# Pillow's resample codes, as Hugging Face stores them in preprocessor_config.json.
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
OPEN_CLIP_BPE = "bpe_simple_vocab_16e6.txt.gz"
# open_clip reads merges from line 1 up to this line of the vocabulary file.
_BPE_MERGE_LINES = 49152 - 256 - 2


def default_model_dir() -> Path:
    """The small CLIP trained by `make train-model` and shipped in the package."""
    return Path(str(resources.files("mmserve") / "models" / "default"))


def read(path: Path, config: dict[str, Any]) -> ModelInfo:
    """A Hugging Face `CLIPModel` directory (`config.json` already read)."""
    text, vision = config.get("text_config", {}), config.get("vision_config", {})
    pre_file = path / "preprocessor_config.json"
    pre = read_json(pre_file)
    image_size = int(vision.get("image_size", 224))
    crop = size_value(pre.get("crop_size"), image_size)
    shortest = size_value(pre.get("size"), crop)
    if crop != image_size:
        raise ValueError(f"{pre_file}: crop size {crop} does not match the vision tower's image_size {image_size}")
    vocab = load_vocabulary(path)
    return ModelInfo(
        path=path,
        family="clip",
        checkpoint="transformers",
        image_size=image_size,
        resize_shortest_edge=shortest,
        resample=RESAMPLE_NAMES.get(int(pre.get("resample", 3)), "bicubic"),
        image_mean=tuple(pre.get("image_mean", OPENAI_MEAN)),
        image_std=tuple(pre.get("image_std", OPENAI_STD)),
        context_length=int(text.get("max_position_embeddings", 77)),
        embedding_dim=int(config.get("projection_dim", 512)),
        start_token_id=vocab.encoder[START_OF_TEXT],
        eos_token_id=vocab.encoder[END_OF_TEXT],
        vocab_size=int(text.get("vocab_size", len(vocab.encoder))),
    )


# The name the package exported before other families: every family's directory reads as a ModelInfo.
ClipModelInfo = ModelInfo


@dataclasses.dataclass(frozen=True)
class BpeVocabulary:
    encoder: dict[str, int]  # token (byte-unicode string, `</w>` on word ends) -> id
    merges: list[tuple[str, str]]  # in rank order


def load_vocabulary(path: str | Path) -> BpeVocabulary:
    """The BPE vocabulary of a model directory, in either supported layout."""
    path = Path(path)
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        encoder = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
        lines = (path / "merges.txt").read_text(encoding="utf-8").split("\n")
        # Line 0 is the "#version" header, as in Hugging Face's CLIPTokenizer.
        merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
        return BpeVocabulary(encoder, merges)  # type: ignore[arg-type]
    if (path / OPEN_CLIP_BPE).is_file():
        return vocabulary_from_open_clip_bpe(path / OPEN_CLIP_BPE)
    raise FileNotFoundError(
        f"{path}: no tokenizer vocabulary (expected vocab.json + merges.txt or {OPEN_CLIP_BPE})"
    )


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def vocabulary_from_open_clip_bpe(bpe_file: str | Path) -> BpeVocabulary:
    """Build the vocabulary exactly as open_clip's SimpleTokenizer does."""
    with gzip.open(bpe_file, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _BPE_MERGE_LINES + 1]]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += [START_OF_TEXT, END_OF_TEXT]
    return BpeVocabulary({t: i for i, t in enumerate(tokens)}, merges)  # type: ignore[arg-type]


def write_hf_tokenizer_files(directory: str | Path, vocabulary: BpeVocabulary, context_length: int) -> None:
    """Write vocab.json, merges.txt and the tokenizer configs of a HF CLIP directory."""
    directory = Path(directory)
    (directory / "vocab.json").write_text(json.dumps(vocabulary.encoder, ensure_ascii=False), "utf-8")
    merges = "#version: 0.2\n" + "\n".join(" ".join(m) for m in vocabulary.merges) + "\n"
    (directory / "merges.txt").write_text(merges, "utf-8")
    special = {
        "bos_token": START_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "unk_token": END_OF_TEXT,
        "pad_token": END_OF_TEXT,
    }
    tokenizer_config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": context_length,
        "do_lower_case": True,
        "errors": "replace",
        **special,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def write_preprocessor_config(
    directory: str | Path,
    image_size: int,
    mean: tuple[float, ...] = OPENAI_MEAN,
    std: tuple[float, ...] = OPENAI_STD,
) -> None:
    config = {
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "CLIPProcessor",
        "do_resize": True,
        "size": {"shortest_edge": image_size},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
        "do_convert_rgb": True,
    }
    (Path(directory) / "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n")
