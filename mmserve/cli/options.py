"""Command-line options made from the configuration's fields: one description per setting, in `mmserve.config`.

    @app.command()
    @config_options(*MODEL, *BUILD)
    def build(model: ..., settings: Settings) -> None: ...

Each named field becomes `--field-name` (or the flag in `FLAGS`), with the
field's description as help, its default and its MMSERVE_* variable; the
command receives one `Settings` made of the environment and the options given.
"""

from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic.fields import FieldInfo

from mmserve.config import BuildOptions, Settings

# Flags that do not follow the field's name (kept as they were before the options came from the config).
FLAGS = {
    "tower_queue_delay_us": "--queue-delay-us",
    "exact_preprocessing": "--exact",
    "api_keys": "--api-key",
    "hang_timeout_s": "--hang-timeout",
    "start_timeout_s": "--start-timeout",
}
# Defaults that are computed, said in words.
DEFAULTS = {
    "model_dir": "the bundled model",
    "cache_dir": "~/.cache/mmserve",
    "index": "~/.local/share/mmserve/index",
    "threads": "all cores",
    "max_queue_size": "two batches",
    "max_in_flight": "1.5 batches",
}

MODEL = ("model_dir", "cache_dir", "runtime", "threads", "audio_model_dir")
MEDIA = ("video_frames_per_second", "video_max_frames", "video_scene_threshold", "max_video_bytes",
         "max_video_seconds", "max_video_pixels", "max_video_frames", "max_audio_bytes", "max_audio_seconds")
BUILD = (*BuildOptions.model_fields, "precision", "exact_preprocessing", *MEDIA)
SERVE = ("host", "http_port", "grpc_port", "metrics_port", "api_keys", "api_key_file", "tls_cert", "tls_key",
         "tls_client_ca", "admin_key", "max_request_bytes", "max_in_flight", "hang_timeout_s", "log_verbose",
         "start_timeout_s")
CLIENT = ("server", "api_key", "ca_cert", "client_cert", "client_key")


def config_options(*names: str):
    """Decorator: the config fields `names` as options of a command that takes `settings: Settings`."""
    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        own = [p for name, p in signature.parameters.items() if name != "settings"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation=_annotation(name, Settings.model_fields[name])) for name in names]

        @functools.wraps(command)
        def run(**values):
            given = {name: values.pop(name) for name in names}
            return command(**values, settings=Settings(**{k: v for k, v in given.items() if v is not None}))

        run.__signature__ = signature.replace(parameters=[*own, *added])
        run.__annotations__ = {p.name: p.annotation for p in (*own, *added)}
        return run

    return decorate


def _annotation(name: str, field: FieldInfo):
    kind = _cli_type(field.annotation)
    default = DEFAULTS.get(name)
    if default is None and field.default is not None and not callable(field.default_factory):
        default = field.default
    note = f"default: {default}; " if default not in (None, "", ()) else ""
    help_text = f"{field.description or name.replace('_', ' ')} [{note}env MMSERVE_{name.upper()}]"
    flag = FLAGS.get(name, "--" + name.replace("_", "-"))
    if kind is bool:
        return Annotated[Optional[bool], typer.Option(f"{flag}/{flag.replace('--', '--no-', 1)}", help=help_text)]
    metavar = "KEY" if name == "api_keys" else None
    return Annotated[Optional[kind], typer.Option(flag, help=help_text, show_default=False, metavar=metavar)]


def _cli_type(annotation):
    """The command-line type of a field's annotation (typer reads Literal as a choice)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return annotation
    if origin in (tuple, list):
        return list[_cli_type(args[0])]
    if args and origin is not None:  # X | None
        return _cli_type(args[0])
    return annotation if annotation in (int, float, str, bool, Path) else str
