"""Shared fixtures: model directories (the bundled one, random real-size ones) and their exports."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmserve.models.clip import default_model_dir
from mmserve.config import Settings


@pytest.fixture(scope="session")
def random_clip():
    """`random_clip(directory, **config)`: write a random-weight CLIP directory."""
    from mmserve.models.towers import write_random_clip

    return write_random_clip


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    path = default_model_dir()
    assert (path / "model.safetensors").is_file(), f"the bundled model is missing from {path}"
    return path


@pytest.fixture(scope="session")
def bundled_settings(bundled_model_dir, tmp_path_factory) -> Settings:
    """Settings for the bundled model with its towers exported to a session cache."""
    from mmserve.models.export import export_towers

    settings = Settings(model_dir=bundled_model_dir, cache_dir=tmp_path_factory.mktemp("cache"))
    export_towers(settings.model_dir, settings.export_dir())
    return settings


@pytest.fixture(scope="session")
def vit_b32_dir(tmp_path_factory) -> Path:
    """Full-size CLIP ViT-B/32 configuration (CLIPConfig's defaults) with random weights."""
    from mmserve.models.towers import write_random_clip

    return write_random_clip(tmp_path_factory.mktemp("vit-b32"), seed=1)


@pytest.fixture(scope="session")
def vit_b32_export(vit_b32_dir, tmp_path_factory) -> Path:
    from mmserve.models.export import export_towers

    return export_towers(vit_b32_dir, tmp_path_factory.mktemp("vit-b32-onnx"))


@pytest.fixture(scope="session")
def port_factory():
    """`port_factory()`: a loopback port nothing listens on (yet)."""
    from mmserve.serving.server import free_port

    return free_port


# The test repository waits longer to fill batches than the default, so concurrent requests (good and bad)
# reliably share a batch; limits are small so "oversized" inputs are cheap to make.
TEST_REPOSITORY_OPTIONS = dict(
    tower_queue_delay_us=20_000, preprocess_queue_delay_us=20_000, max_image_bytes=1 << 20, max_image_pixels=4_000_000
)


@pytest.fixture(scope="session")
def triton_repository(bundled_settings, tmp_path_factory) -> Path:
    from mmserve.serving.triton.repository import build_repository

    settings = bundled_settings.model_copy(update=TEST_REPOSITORY_OPTIONS)
    return build_repository(settings, tmp_path_factory.mktemp("repository"))


def serving_stack(repository: Path, cache_dir: Path, log_dir: Path, **options):
    """What `mmserve serve` runs (health service, front door, supervised tritonserver) on free loopback ports,
    its checks running in a thread until the block ends. `options`: ServeOptions fields."""
    from mmserve.serving.server import free_port
    from mmserve.serving.supervisor import supervised
    from mmserve.config import ServeOptions

    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    serve = ServeOptions(**{**ports, "triton_log": log_dir / "tritonserver.log", **options})
    return supervised(repository, serve, cache_dir=cache_dir)


@pytest.fixture(scope="session")
def server(triton_repository, bundled_settings, tmp_path_factory):
    """The bundled model served as `mmserve serve` does: clients reach the front door, never Triton itself."""
    # Short client timeouts, so that the slow-sender cases finish quickly; a small in-flight cap to test it.
    with serving_stack(triton_repository, bundled_settings.cache_dir, tmp_path_factory.mktemp("serve-log"),
                       header_timeout_s=2, body_timeout_s=2, max_in_flight=128) as stack:
        yield stack


@pytest.fixture(scope="session")
def local_embedder(bundled_settings):
    from mmserve.embedder import LocalEmbedder

    return LocalEmbedder(bundled_settings)


@pytest.fixture(scope="session")
def gallery(tmp_path_factory):
    """Real JPEG and PNG files of generated scenes (the demo's gallery writer)."""
    from mmserve.dev.demo import write_gallery

    return [item.path for item in write_gallery(tmp_path_factory.mktemp("gallery"), 12, seed=5)]


@pytest.fixture(scope="session")
def stack_factory():
    """`with stack_factory(repository, cache_dir, log_dir, **options) as stack`: a served stack of one's own."""
    return serving_stack
