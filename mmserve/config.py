"""mmserve configuration: one pydantic settings model, read from `MMSERVE_*`.

Every option has its default here, with the reason, and the CLI's flags and
their help come from these fields. `Settings` holds everything; it is made of
`BuildOptions` (what `mmserve build` writes into the Triton repository),
`ServeOptions` (what `mmserve serve` needs beyond the model: the front door,
access control, supervision) and the model, runtime, limits and client fields.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mmserve import _C
from mmserve.models.clip import default_model_dir


class BuildOptions(BaseModel):
    """Serving knobs written into the repository's configs. Defaults measured on a 2-core CPU (README, CLI)."""

    max_batch_size: int = Field(default=64, ge=1, le=1024, description="Largest batch any model runs.")
    tower_queue_delay_us: int = Field(
        default=2000, ge=0, description="Dynamic batching: how long a tower waits to fill a batch once a request "
        "is queued.")
    preprocess_queue_delay_us: int = Field(default=500, ge=0, description="The same for the standalone "
                                           "image_preprocess and text_tokenize models.")
    max_queue_size: int | None = Field(
        default=None, ge=1, description="Requests queued per model before new ones are refused at once; default: "
        "two full batches (the front door's in-flight limit, 1.5 batches, refuses first).")
    tower_instances: int = Field(default=1, ge=1, description="Processes per tower (embed_image, embed_text).")
    preprocess_instances: int = Field(default=1, ge=1, description="Processes of the standalone image_preprocess.")
    preprocess_threads: int = Field(
        default=0, ge=0, description="Decode threads per process that decodes images (0: the thread budget).")
    target: Literal["tritonserver", "ngc"] = Field(
        default="tritonserver", description="Which Triton the repository is for: 'tritonserver' (the one in "
        "nvidia-pytriton: Python-backend towers) or 'ngc' (NVIDIA's Triton container: native TensorRT towers, "
        "needs --runtime tensorrt).")
    gpu_instances: int = Field(default=1, ge=1, description="TensorRT engine instances per GPU (--target ngc).")
    tensorrt_profiles: Literal["dynamic", "buckets"] = Field(
        default="dynamic", description="Text engines: one profile dynamic in length, or one per length bucket.")
    media_batch_size: int = Field(
        default=8, ge=1, le=256, description="Videos or sounds per batch of embed_video / embed_audio (each gives "
        "many tower rows: up to video_max_frames frames, or one per audio window).")


class ServeOptions(BaseModel):
    """The front door and the supervisor of `mmserve serve` (README, Operations)."""

    host: str = Field(default="127.0.0.1", description="Where the front door listens (0.0.0.0: everywhere).")
    http_port: int = Field(default=8000, ge=0, le=65535, description="KServe v2 over HTTP.")
    grpc_port: int = Field(default=8001, ge=0, le=65535, description="KServe v2 over gRPC.")
    metrics_port: int = Field(default=8002, ge=0, le=65535, description="Prometheus metrics.")
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Bearer keys that inference, metadata and statistics require (health stays open); "
        "MMSERVE_API_KEYS takes them comma-separated.")
    api_key_file: Path | None = Field(default=None, description="More keys, one per line ('#' comments).")
    tls_cert: Path | None = Field(default=None, description="TLS on every port: the server certificate (PEM).")
    tls_key: Path | None = Field(default=None, description="Its private key (PEM).")
    tls_client_ca: Path | None = Field(
        default=None, description="Mutual TLS: clients must present a certificate this CA signed (not for health).")
    admin_key: str | None = Field(
        default=None, description="Opens Triton's admin APIs to requests with header 'mmserve-admin-key: KEY'.")
    max_request_bytes: int = Field(
        default=80 << 20, ge=1024, description="Largest request body (80 MiB: a 64 MiB image and room to spare).")
    max_json_bytes: int = Field(
        default=1 << 20, ge=1024, description="Largest JSON part of an HTTP request (1 MiB); bigger inputs use the "
        "binary tensor extension (tritonclient's default).")
    max_in_flight: int | None = Field(
        default=None, ge=1, description="Requests in progress per port; more are refused at once (503 / "
        "UNAVAILABLE) before they cost the server anything. None: 1.5 times the repository's largest batch (96 for "
        "batches of 64): enough to keep batches full, few enough that an accepted request waits at most about "
        "two batch times however hard the server is pushed.")
    request_timeout_s: int = Field(default=300, ge=1, description="Longest wait for Triton's answer to one request.")
    header_timeout_s: int = Field(default=10, ge=1, description="A client has this long to send a request's headers.")
    body_timeout_s: int = Field(
        default=30, ge=1, description="Longest pause while a client sends a body (or reads an answer); then 408.")
    front_workers: int = Field(default=1, ge=1, le=64, description="nginx worker processes (one is enough here).")
    access_log: Path | None = Field(default=None, description="The front door's access log (default: none).")
    front_log_level: Literal["debug", "info", "notice", "warn", "error", "crit"] = Field(
        default="crit", description="nginx's log level on stderr ('error' logs every request refused while "
        "tritonserver restarts).")
    check_interval_s: float = Field(default=0.25, gt=0, description="How often the processes are checked.")
    probe_interval_s: float = Field(
        default=5.0, gt=0, description="A model that completed nothing for this long gets a one-item probe.")
    hang_timeout_s: float = Field(
        default=60.0, gt=0, description="No answer for this long while nothing completes: the model (or tritonserver) "
        "is hung, and is killed and restarted; keep it above the longest batch.")
    backoff_s: float = Field(
        default=0.5, ge=0, description="Delay before the second restart of the same part within the window (the "
        "first is immediate); doubles per restart, 30 s at most.")
    max_restarts: int = Field(
        default=5, ge=1, description="Restarts of one part within restart_window_s before escalating or giving up.")
    restart_window_s: float = Field(default=600.0, gt=0)
    start_timeout_s: float = Field(default=300.0, gt=0, description="Longest tritonserver start (warm-up included).")
    triton_log: Path | None = Field(default=None, description="tritonserver's log file (default: this stderr).")
    log_verbose: int = Field(default=0, ge=0, description="tritonserver's verbose log level.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    def api_keys_in_effect(self) -> tuple[str, ...]:
        """`api_keys` and those in `api_key_file`, each once."""
        keys = list(self.api_keys)
        if self.api_key_file is not None:
            for line in self.api_key_file.read_text().splitlines():
                key = line.split("#", 1)[0].strip()
                if key:
                    keys.append(key)
        return tuple(dict.fromkeys(keys))


class Settings(BaseSettings, BuildOptions, ServeOptions):
    model_config = SettingsConfigDict(env_prefix="MMSERVE_", extra="ignore")

    model_dir: Path = Field(
        default_factory=default_model_dir,
        description="A local Hugging Face CLIP directory; default: the small model shipped in the package.",
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "mmserve",
        description="Where ONNX exports are kept, keyed by the weights' fingerprint.",
    )
    runtime: Literal["openvino", "onnxruntime", "tensorrt", "cuda"] = Field(
        default="openvino", description="Runtime for the towers: openvino or onnxruntime on CPUs (OpenVINO measured "
        "fastest here); tensorrt (engines) or cuda (PyTorch) on NVIDIA GPUs."
    )
    precision: Literal["auto", "f32", "int8", "fp16", "bf16", "fp8"] = Field(
        default="auto",
        description="'auto' lets the runtime use bf16 where the CPU has it (fp16 on GPUs); 'f32' forces fp32; "
        "'int8' (OpenVINO) stores matmul weights as uint8 and quantizes activations on the fly: 1.6-1.9x faster "
        "here, embedding cosine >= 0.999 against f32 (measured); fp16, bf16, fp8, int8 on GPUs (TensorRT, each "
        "behind an accuracy gate).",
    )
    threads: int | None = Field(
        default=None, ge=1, description="Inference threads per tower; default: the runtime's choice (all cores)."
    )
    batch_size: int = Field(default=64, ge=1, le=4096, description="Images or texts per tower call.")
    exact_preprocessing: bool = Field(
        default=False,
        description="True: bit-identical to the Pillow reference; False: large JPEGs decode at reduced DCT scale "
        "first (several times faster, embeddings cosine >= 0.995 vs exact).",
    )
    max_image_bytes: int = Field(default=_C.DEFAULT_MAX_ENCODED_BYTES, ge=1,
                                 description="Largest encoded image accepted (64 MiB).")
    max_image_pixels: int = Field(
        default=_C.DEFAULT_MAX_PIXELS, ge=1,
        description="Largest decoded image accepted (width x height, 100 megapixels), before decoding.")
    max_text_bytes: int = Field(
        default=64 << 10, ge=1, description="Largest text accepted (64 KiB of UTF-8; CLIP reads only its first 77 "
        "tokens, a few hundred characters): bounds what one text costs the tokenizer.")

    audio_model_dir: Path | None = Field(
        default=None, description="The audio towers: a Hugging Face ClapModel directory (its own embedding space, "
        "with its own text tower), or a bound tower (model_type mmserve-audio, in the image-text model's space); "
        "default: MODEL_DIR/audio when there is one (the bundled model has one).")
    video_frames_per_second: float = Field(
        default=1.0, gt=0, le=30, description="Video frames sampled per second (one segment each), CLIP4Clip's rate.")
    video_max_frames: int = Field(
        default=32, ge=1, le=512, description="Most segments per video: a longer video is cut into this many equal "
        "segments.")
    video_scene_threshold: float | None = Field(
        default=None, gt=0, le=255, description="Segments at scene changes instead: the mean absolute difference "
        "(0-255) of consecutive thumbnails that marks a cut (20-40 suits most footage).")
    max_video_bytes: int = Field(
        default=64 << 20, ge=1, description="Largest encoded video accepted (64 MiB; raise max_request_bytes too).")
    max_video_seconds: float = Field(default=4 * 3600.0, gt=0, description="Longest video accepted (4 h).")
    max_video_pixels: int = Field(
        default=8192 * 4320, ge=1, description="Largest video frame accepted (width x height, 8K UHD), from the "
        "headers and again per decoded frame.")
    max_video_frames: int = Field(
        default=6000, ge=1, description="Frames one video may make the decoder produce while sampling (seeking "
        "lands on keyframes): bounds the decoding cost of hostile streams.")
    max_audio_bytes: int = Field(default=64 << 20, ge=1, description="Largest encoded sound accepted (64 MiB).")
    max_audio_seconds: float = Field(default=3600.0, gt=0, description="Longest sound accepted (1 h).")

    index: str = Field(
        default_factory=lambda: str(_data_home() / "mmserve" / "index"),
        description="The search index (`mmserve index`, `search`, `info`): a directory (the embedded index), "
        "milvus://HOST:PORT/COLLECTION (a Milvus server; MMSERVE_MILVUS_TOKEN its token) or FILE.db (milvus-lite).",
    )
    server: str = Field(
        default="grpc://127.0.0.1:8001", description="Where `mmserve index/search/classify` reach the server."
    )
    api_key: str | None = Field(default=None, description="The key clients send (a server started with keys).")
    ca_cert: Path | None = Field(default=None, description="Clients: CA file that verifies the server's certificate.")
    client_cert: Path | None = Field(default=None, description="Clients: certificate for a mutual-TLS server.")
    client_key: Path | None = Field(default=None, description="Clients: the key of client_cert.")

    @field_validator("index", mode="before")
    @classmethod
    def _location(cls, value: object) -> object:
        """A location stays as given: a URI must keep its `//`, which `Path` would collapse."""
        if isinstance(value, os.PathLike):
            from mmserve.index.backend import location_string

            return location_string(value)
        return value

    def export_dir(self) -> Path:
        from mmserve.models.export import weights_fingerprint

        return self.cache_dir / "onnx" / weights_fingerprint(self.model_dir)[:16]

    def audio_dir(self) -> Path | None:
        """The audio model in effect: `audio_model_dir`, else the model directory's `audio/`, else none."""
        if self.audio_model_dir is not None:
            return self.audio_model_dir
        bundled = self.model_dir / "audio"
        return bundled if (bundled / "config.json").is_file() else None

    def audio_export_dir(self, audio_dir: Path) -> Path:
        """Where the export of the audio model at `audio_dir` is kept."""
        from mmserve.models.export import weights_fingerprint

        return self.cache_dir / "onnx-audio" / weights_fingerprint(audio_dir)[:16]

    def client_options(self) -> dict[str, object]:
        """The SDK's connection keywords (`mmserve.Client(settings.server, **settings.client_options())`)."""
        return {"api_key": self.api_key, "ca_cert": self.ca_cert, "client_cert": self.client_cert,
                "client_key": self.client_key}


def _data_home() -> Path:
    """XDG_DATA_HOME, else ~/.local/share (the user's data directory on Linux)."""
    import os

    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
