"""mmserve: multimodal (CLIP) embeddings served by Triton, with a vector index.

Importing the package is cheap: runtimes (OpenVINO, ONNX Runtime) load only
when an embedder is built, and torch only for training and export.
"""

from mmserve.model import ClipModelInfo, default_model_dir

__version__ = "0.1.0"
__all__ = ["ClipModelInfo", "default_model_dir", "__version__"]
