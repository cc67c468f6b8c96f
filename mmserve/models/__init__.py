"""Model directories, by family: what serving needs to know about a checkpoint, read without torch (`info`:
`ModelInfo.from_dir` detects the family; `clip`, `siglip`, `open_clip`: one reader per layout), and the ONNX
export of its towers (`export`, `towers`: torch, the `train` extra). `default/` is the bundled model."""

from mmserve.models.clip import ClipModelInfo, default_model_dir
from mmserve.models.info import ModelInfo, Scoring

__all__ = ["ClipModelInfo", "ModelInfo", "Scoring", "default_model_dir"]
