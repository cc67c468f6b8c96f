"""Model directories, by family: what serving needs to know about a checkpoint (read without torch), and the
ONNX export of its towers (`export`, `towers`: torch, the `train` extra). `default/` is the bundled model."""

from mmserve.models.clip import ClipModelInfo, default_model_dir

__all__ = ["ClipModelInfo", "default_model_dir"]
