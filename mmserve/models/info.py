"""What serving needs to know about a model directory, whatever its family, read without torch.

    info = ModelInfo.from_dir("siglip-base-patch16-224")   # the family is detected from the files

The family decides the rest of the pipeline:

| family  | checkpoint layouts        | image resize                   | tokenizer                     | pooling | score   |
|---------|---------------------------|--------------------------------|-------------------------------|---------|---------|
| clip    | transformers, open_clip   | shortest side + centre crop    | CLIP BPE (C++), ftfy first    | eos     | softmax |
| siglip  | transformers              | both sides to the size (squash)| SentencePiece (`spiece.model`)| last    | sigmoid |
| siglip2 | transformers (fixed size) | squash                         | Gemma (`tokenizer.json`)      | last    | sigmoid |

Pooling "eos": the text tower is causal and pools at the first end-of-text
token, so a batch may be cut after its longest text (the result is
identical). Pooling "last": the tower pools a fixed position, so the padding
up to the context length is part of the computation and is never cut.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

RESIZE_MODES = ("crop", "squash")
POOLINGS = ("eos", "last")
SCORE_FUNCTIONS = ("softmax", "sigmoid")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    path: Path
    family: str  # "clip", "siglip", "siglip2"
    checkpoint: str  # the layout it came in: "transformers" or "open_clip"
    image_size: int  # side of the square the image tower takes
    resize_shortest_edge: int  # == image_size for resize_mode "squash"
    resample: str
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    context_length: int
    embedding_dim: int
    start_token_id: int | None  # CLIP's start-of-text; None where the tokenizer adds none or says so itself
    eos_token_id: int
    vocab_size: int
    resize_mode: str = "crop"  # "crop": shortest side + centre crop; "squash": both sides, no crop
    tokenizer: str = "clip-bpe"  # "clip-bpe", "sentencepiece", "tokenizers"
    pad_token_id: int = 0
    pooling: str = "eos"  # "eos" (causal, padding trimmed) or "last" (fixed position, padded)
    score_function: str = "softmax"  # zero-shot scores: "softmax" over labels or "sigmoid" per label
    text_clean: str = ""  # cleaning before the tokenizer's own: "open_clip-canonicalize" (open_clip's SigLIP)

    @classmethod
    def from_dir(cls, path: str | Path) -> ModelInfo:
        """The model in `path`, its family detected from its files (a clear error for what is not supported)."""
        from mmserve.models import clip, open_clip, siglip

        path = Path(path)
        if (path / open_clip.CONFIG_FILE).is_file():
            return open_clip.read(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} is not a model directory: no config.json (Hugging Face) or "
                                    f"{open_clip.CONFIG_FILE} (open_clip)")
        config = json.loads(config_file.read_text())
        model_type = config.get("model_type", "clip")
        if model_type == "clip":
            return clip.read(path, config)
        if model_type == "siglip":
            return siglip.read(path, config)
        if model_type == "siglip2":
            raise ValueError(siglip.NAFLEX_REFUSAL.format(path=path))
        raise ValueError(f"{config_file}: model_type {model_type!r} is not supported; mmserve serves clip, "
                         "siglip and siglip2 (fixed-resolution) checkpoints and open_clip directories")

    @property
    def trims_padding(self) -> bool:
        return self.pooling == "eos"

    def summary(self) -> dict[str, str]:
        """Family, tokenizer, image size, pooling and score function, as `mmserve info` prints them."""
        resize = (f"resize shortest edge to {self.resize_shortest_edge}" if self.resize_mode == "crop"
                  else f"resize both sides to {self.image_size}, aspect ratio not kept")
        return {
            "family": f"{self.family} ({self.checkpoint} checkpoint)",
            "tokenizer": self.tokenizer + (f" after {self.text_clean} cleaning" if self.text_clean else ""),
            "image size": f"{self.image_size} ({resize}, {self.resample})",
            "context length": str(self.context_length),
            "pooling": {"eos": "first end-of-text token (causal; padding trimmed)",
                        "last": "last position (padding kept)"}[self.pooling],
            "score": {"softmax": "softmax over the labels at the logit scale",
                      "sigmoid": "sigmoid(logit scale x cosine + logit bias) per label"}[self.score_function],
        }


@dataclasses.dataclass(frozen=True)
class Scoring:
    """A model's zero-shot score: softmax over the labels at the logit scale (CLIP) or a sigmoid per
    (image, text) pair with the logit scale and bias (SigLIP). `logit_scale` is the multiplier itself
    (exp of the stored parameter)."""

    function: str = "softmax"
    logit_scale: float = 100.0
    logit_bias: float = 0.0

    def __post_init__(self) -> None:
        if self.function not in SCORE_FUNCTIONS:
            raise ValueError(f"score function must be one of {SCORE_FUNCTIONS}, got {self.function!r}")
        if not (math.isfinite(self.logit_scale) and math.isfinite(self.logit_bias)):
            raise ValueError(f"logit scale and bias must be finite, got {self.logit_scale}, {self.logit_bias}")

    def probabilities(self, cosines: np.ndarray) -> np.ndarray:
        """Per text: softmax over all of them, or each one's own sigmoid."""
        logits = self.logit_scale * np.asarray(cosines, dtype=np.float64) + self.logit_bias
        if self.function == "sigmoid":
            return 1.0 / (1.0 + np.exp(-logits))
        weights = np.exp(logits - logits.max())
        return weights / weights.sum()

    def pairwise(self, cosines: np.ndarray) -> np.ndarray:
        """Each pair's own score for ranking: the sigmoid probability (SigLIP), the cosine itself (CLIP,
        whose scores mean something only against the other labels)."""
        cosines = np.asarray(cosines, dtype=np.float64)
        return self.probabilities(cosines) if self.function == "sigmoid" else cosines

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def size_value(value: object, default: int) -> int:
    """Hugging Face writes sizes as an int or as {"shortest_edge"|"height": n}."""
    if value is None:
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        if "height" in value and "width" in value and value["height"] != value["width"]:
            raise ValueError(f"non-square image size {value!r}: mmserve's towers take square images")
        for key in ("shortest_edge", "height"):
            if key in value:
                return int(value[key])
    raise ValueError(f"unsupported size entry in preprocessor_config.json: {value!r}")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}
