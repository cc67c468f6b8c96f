"""Triton Python-backend models (loaded by `tritonserver` through each model's `model.py`).

Each follows python_backend's add_sub example: everything is loaded in
`initialize`, `execute` answers one response per request, and a bad request
gets an error on its own response while the rest of the batch is served.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmserve.errors import ItemError, to_wire


class ModelArgs:
    """What Triton passes to `initialize`: the parsed config and where the model's files are."""

    def __init__(self, args: dict[str, str]) -> None:
        self.config = json.loads(args["model_config"])
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        self.instance_name = args.get("model_instance_name", "")

    def parameter(self, key: str, default: str | None = None) -> str:
        entry = self.config.get("parameters", {}).get(key)
        if entry is None:
            if default is None:
                raise KeyError(f"model config has no parameter {key!r}")
            return default
        return entry["string_value"]

    def int_parameter(self, key: str, default: int | None = None) -> int:
        return int(self.parameter(key, None if default is None else str(default)))

    @property
    def max_batch_size(self) -> int:
        return int(self.config["max_batch_size"])


def invalid_input(pb_utils, errors: list[ItemError]):
    """A per-request error that clients see as INVALID_ARGUMENT (gRPC) / 400 (HTTP), its message the
    JSON list of refused items (`mmserve.errors.to_wire`)."""
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(to_wire(errors), pb_utils.TritonError.INVALID_ARG))
