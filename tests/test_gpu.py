"""The GPU path, as far as a CPU host can check it: engine-cache keys, optimization profiles from a model's
config, precision support per GPU, both repository targets rendered and checked against Triton's model-config
schema and the exported graphs, clear errors where TensorRT or a GPU is absent, and bench/gpu_check.py's dry
run. Building and running engines needs an NVIDIA GPU (README, GPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmserve.models.export import IMAGE_TOWER_FILE, TEXT_TOWER_FILE
from mmserve.models.info import ModelInfo
from mmserve.modalities.text import length_buckets
from mmserve.runtimes import InputSpec, RuntimeUnavailableError, load_tower
from mmserve.runtimes import tensorrt as trt

H200 = trt.GpuInfo("NVIDIA H200", (9, 0))
T4 = trt.GpuInfo("Tesla T4", (7, 5))


def test_engine_cache_key_changes_with_everything_an_engine_depends_on(bundled_settings):
    onnx = bundled_settings.export_dir() / IMAGE_TOWER_FILE
    spec = trt.tower_spec(onnx, 64)
    profiles = trt.profiles_for(spec)
    key = trt.EngineKey.for_build(onnx, H200, "10.13.0", "fp16", profiles)
    assert key == trt.EngineKey.for_build(onnx, H200, "10.13.0", "fp16", profiles)  # stable
    variants = [
        trt.EngineKey.for_build(onnx, trt.GpuInfo("NVIDIA H100", (9, 0)), "10.13.0", "fp16", profiles),
        trt.EngineKey.for_build(onnx, trt.GpuInfo("NVIDIA H200", (10, 0)), "10.13.0", "fp16", profiles),
        trt.EngineKey.for_build(onnx, H200, "10.14.1", "fp16", profiles),
        trt.EngineKey.for_build(onnx, H200, "10.13.0", "bf16", profiles),
        trt.EngineKey.for_build(onnx, H200, "10.13.0", "fp16", trt.profiles_for(trt.tower_spec(onnx, 32))),
        trt.EngineKey.for_build(bundled_settings.export_dir() / TEXT_TOWER_FILE, H200, "10.13.0", "fp16", profiles),
    ]
    digests = {key.digest(), *(variant.digest() for variant in variants)}
    assert len(digests) == len(variants) + 1
    assert key.directory("/cache") == Path("/cache/engines") / key.digest()
    timing = trt.timing_cache_file("/cache", H200, "10.13.0")
    assert timing.name == "NVIDIA_H200-sm90-trt10.13.0.cache" and timing != trt.timing_cache_file("/cache", T4, "10.13.0")


def test_profiles_come_from_the_model(bundled_settings, tmp_path):
    info = ModelInfo.from_dir(bundled_settings.model_dir)
    image = trt.tower_spec(bundled_settings.export_dir() / IMAGE_TOWER_FILE, 64)
    assert image.input == InputSpec("images", np.uint8, (info.image_size, info.image_size, 3))
    assert trt.profiles_for(image) == [trt.Profile((1, 64, 64, 3), (64, 64, 64, 3), (64, 64, 64, 3))]
    assert trt.profiles_for(trt.TowerSpec(image.input, 64, opt_batch=16))[0].opt == (16, 64, 64, 3)

    buckets = length_buckets(info.context_length)
    text = trt.tower_spec(bundled_settings.export_dir() / TEXT_TOWER_FILE, 32, buckets)
    assert text.is_text and text.lengths == tuple(buckets)
    (dynamic,) = trt.profiles_for(text)
    assert dynamic.min == (1, 8) and dynamic.max == (32, info.context_length) and 8 <= dynamic.opt[1] <= 24
    per_bucket = trt.profiles_for(text, "buckets")
    assert [p.opt for p in per_bucket] == [(32, n) for n in buckets]
    with pytest.raises(ValueError, match="length buckets"):
        trt.profiles_for(trt.TowerSpec(text.input, 32))
    # SigLIP's text tower takes its whole context only: one length.
    siglip = trt.TowerSpec(InputSpec("token_ids", np.int32, (-1,)), 64, lengths=(64,))
    assert trt.profiles_for(siglip) == [trt.Profile((1, 64), (64, 64), (64, 64))]


def test_precisions_follow_the_gpu():
    assert trt.gpu_precisions(H200) == ("f32", "fp16", "int8", "bf16", "fp8")
    assert trt.resolve_precision("auto", H200) == "fp16"
    assert trt.resolve_precision("fp8", H200) == "fp8"
    with pytest.raises(ValueError, match="Tesla T4 .compute capability 7.5. has no bf16"):
        trt.resolve_precision("bf16", T4)
    assert set(trt.ACCURACY_GATES) >= {"fp16", "bf16", "fp8", "int8"}
    assert trt.ACCURACY_GATES["fp16"] == 0.999 and trt.ACCURACY_GATES["int8"] == 0.995


@pytest.mark.parametrize("target, runtime", [("tritonserver", "tensorrt"), ("ngc", "tensorrt"),
                                             ("tritonserver", "cuda"), ("tritonserver", "openvino")])
def test_both_targets_render_configs_that_check_out(bundled_settings, tmp_path, target, runtime):
    from mmserve.serving.triton.repository import build_repository
    from mmserve.serving.triton.validate import check_repository, load_configs

    settings = bundled_settings.model_copy(update={"target": target, "runtime": runtime})
    repository = build_repository(settings, tmp_path / "repository", build_engines=False)
    configs = load_configs(repository)  # Triton's own protobuf schema
    assert check_repository(repository, settings.export_dir()) == []
    if target == "ngc":
        engine = configs["image_engine"]
        assert engine.platform == "tensorrt_plan" and engine.instance_group[0].kind == engine.instance_group[0].KIND_GPU
        assert configs["text_engine"].input[0].name == "token_ids" and list(configs["text_engine"].input[0].dims) == [-1]
        assert [s.model_name for s in configs["embed_image"].ensemble_scheduling.step] == ["image_preprocess",
                                                                                          "image_engine"]
        assert configs["image_tower"].input[0].name == "pixels"  # the SDK's names on every target
    else:
        parameters = configs["embed_image"].parameters
        assert parameters["runtime"].string_value == runtime
        assert parameters["onnx_file"].string_value == ("image_tower.plan" if runtime == "tensorrt" else IMAGE_TOWER_FILE)
    # A broken config is caught: a wrong dtype on a tower, a step naming a model that is not there.
    broken = repository / ("image_engine" if target == "ngc" else "embed_image") / "config.pbtxt"
    broken.write_text(broken.read_text().replace("TYPE_UINT8", "TYPE_FP32"))
    assert any("TYPE_FP32" in problem for problem in check_repository(repository, settings.export_dir()))


def test_a_config_triton_cannot_parse_is_refused(bundled_settings, tmp_path):
    from mmserve.serving.triton.repository import build_repository
    from mmserve.serving.triton.validate import load_configs

    repository = build_repository(bundled_settings, tmp_path / "repository")
    config = repository / "embed_text" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size", "max_batch_sizes"))
    with pytest.raises(ValueError, match="embed_text/config.pbtxt"):
        load_configs(repository)


def test_tensorrt_and_cuda_fail_clearly_without_them(bundled_settings, tmp_path):
    from mmserve.serving.triton.repository import build_repository

    with pytest.raises(RuntimeUnavailableError, match="TensorRT is not installed"):
        build_repository(bundled_settings.model_copy(update={"runtime": "tensorrt"}), tmp_path / "r")
    with pytest.raises(RuntimeUnavailableError, match="TensorRT is not installed"):
        load_tower(tmp_path / "image_tower.plan", "tensorrt")
    with pytest.raises(RuntimeUnavailableError, match="no CUDA GPU"):
        load_tower(bundled_settings.export_dir() / IMAGE_TOWER_FILE, "cuda", precision="fp16")
    with pytest.raises(ValueError, match="--runtime tensorrt"):
        build_repository(bundled_settings.model_copy(update={"target": "ngc"}), tmp_path / "r")
    with pytest.raises(ValueError, match="supports precision"):
        load_tower(bundled_settings.export_dir() / IMAGE_TOWER_FILE, "openvino", precision="fp16")


def test_cli_build_with_tensorrt_says_what_is_missing(bundled_settings, tmp_path):
    from tests.test_cli import run_cli

    result = run_cli("build", "--runtime", "tensorrt", "--repository", str(tmp_path / "r"), settings=bundled_settings)
    assert result.returncode == 1 and "TensorRT is not installed" in result.stderr and "Traceback" not in result.stderr
    configs = run_cli("build", "--runtime", "tensorrt", "--target", "ngc", "--configs-only", "--repository",
                      str(tmp_path / "ngc"), settings=bundled_settings)
    assert configs.returncode == 0, configs.stderr
    assert "checked against Triton's schema" in configs.stdout and (tmp_path / "ngc" / "image_engine").is_dir()


def test_gpu_check_dry_run_prints_its_skips():
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    result = subprocess.run([sys.executable, str(script), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("host: ")
    skips = [line for line in lines if line.startswith("skip: ")]
    assert skips and all(": " in line[6:] for line in skips)  # each says why
    assert any("no CUDA device" in line for line in skips) or any("TensorRT" in line for line in skips)


def test_8_bit_engines_need_a_quantized_graph(bundled_settings, tmp_path):
    """fp8 / int8 are refused for a graph without Q/DQ nodes (TensorRT would quietly run fp16)."""
    import onnx
    from onnx import TensorProto, helper

    assert not trt.is_quantized(bundled_settings.export_dir() / IMAGE_TOWER_FILE)
    node = helper.make_node("QuantizeLinear", ["x", "scale"], ["y"])
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1])],
                              [helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])])
    onnx.save(helper.make_model(graph), tmp_path / "q.onnx")
    assert trt.is_quantized(tmp_path / "q.onnx")
