"""ONNX towers against the PyTorch model: per-vector cosine >= 0.99999 in fp32."""

import numpy as np
import pytest
import torch

from mmserve.models.export import IMAGE_TOWER_FILE, TEXT_TOWER_FILE, export_towers, is_current
from mmserve.models.clip import ClipModelInfo
from mmserve.runtimes import load_tower
from mmserve.modalities.text import ClipTokenizer, trim_padding
from mmserve.models.towers import load_clip

COSINE = 0.99999
RUNTIMES = ("onnxruntime", "openvino")


def reference_embeddings(model_dir, images, token_ids):
    """Plain Hugging Face forward passes (not mmserve's tower wrappers) in float32."""
    info = ClipModelInfo.from_dir(model_dir)
    clip = load_clip(model_dir)
    mean = torch.tensor(info.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(info.image_std).view(1, 3, 1, 1)
    with torch.no_grad():
        pixels = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
        image = clip.get_image_features(pixel_values=pixels).pooler_output
        text = clip.get_text_features(input_ids=torch.from_numpy(token_ids).long()).pooler_output
    norm = torch.nn.functional.normalize
    return norm(image, dim=-1).numpy(), norm(text, dim=-1).numpy()


def sample_inputs(model_dir, batch):
    info = ClipModelInfo.from_dir(model_dir)
    rng = np.random.default_rng(batch)
    images = rng.integers(0, 256, (batch, info.image_size, info.image_size, 3), dtype=np.uint8)
    words = ["red", "circle", "a", "photo", "of", "large", "dog", "on", "the", "left", "blue"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 12))) for _ in range(batch)]
    return images, ClipTokenizer.from_model_dir(model_dir)(texts)


def check_parity(model_dir, onnx_dir, runtime, batch):
    images, tokens = sample_inputs(model_dir, batch)
    want_image, want_text = reference_embeddings(model_dir, images, tokens)
    image = load_tower(onnx_dir / IMAGE_TOWER_FILE, runtime, precision="f32")(images)
    text = load_tower(onnx_dir / TEXT_TOWER_FILE, runtime, precision="f32")(trim_padding(tokens, 49407))
    assert image.shape == want_image.shape and text.shape == want_text.shape
    assert (image * want_image).sum(1).min() >= COSINE
    assert (text * want_text).sum(1).min() >= COSINE
    assert np.allclose(np.linalg.norm(image, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("batch", [1, 7, 32])
def test_bundled_model_parity(bundled_settings, runtime, batch):
    check_parity(bundled_settings.model_dir, bundled_settings.export_dir(), runtime, batch)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 7, 32])
def test_vit_b32_parity(vit_b32_dir, vit_b32_export, batch):
    check_parity(vit_b32_dir, vit_b32_export, "onnxruntime", batch)


def test_graph_contract(bundled_settings):
    import onnx

    info = ClipModelInfo.from_dir(bundled_settings.model_dir)
    for name, input_name, dtype in (
        (IMAGE_TOWER_FILE, "images", onnx.TensorProto.UINT8),
        (TEXT_TOWER_FILE, "token_ids", onnx.TensorProto.INT32),
    ):
        graph = onnx.load(bundled_settings.export_dir() / name, load_external_data=False)
        assert graph.opset_import[0].version >= 17
        (inp,) = graph.graph.input
        (out,) = graph.graph.output
        assert (inp.name, inp.type.tensor_type.elem_type) == (input_name, dtype)
        assert out.name == "embedding"
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert dims[0] == "batch"
        if input_name == "images":
            assert dims[1:] == [info.image_size, info.image_size, 3]
        else:
            assert dims[1] == "length"
        assert out.type.tensor_type.shape.dim[1].dim_value == info.embedding_dim


def test_padding_after_end_of_text_does_not_change_the_embedding(bundled_settings):
    _, tokens = sample_inputs(bundled_settings.model_dir, 5)
    tower = load_tower(bundled_settings.export_dir() / TEXT_TOWER_FILE, "onnxruntime")
    full, trimmed = tower(tokens), tower(trim_padding(tokens, 49407))
    assert np.abs(full - trimmed).max() < 1e-5


def test_export_is_reused_until_the_weights_change(bundled_settings, tmp_path):
    out = bundled_settings.export_dir()
    assert is_current(bundled_settings.model_dir, out)
    stamp = (out / IMAGE_TOWER_FILE).stat().st_mtime_ns
    export_towers(bundled_settings.model_dir, out)
    assert (out / IMAGE_TOWER_FILE).stat().st_mtime_ns == stamp
    assert not is_current(bundled_settings.model_dir, tmp_path)


def test_int8_towers_stay_within_cosine_0_999_of_f32_on_the_bundled_model(bundled_settings, gallery):
    from mmserve.embedder import LocalEmbedder

    texts = ["a large red circle on the left", "two small blue squares", "a photo of a dog", "green triangle"]
    f32 = LocalEmbedder(bundled_settings.model_copy(update={"precision": "f32"}))
    int8 = LocalEmbedder(bundled_settings.model_copy(update={"precision": "int8"}))
    for embed in ("embed_images", "embed_texts"):
        items = gallery if embed == "embed_images" else texts
        cosine = (getattr(f32, embed)(items) * getattr(int8, embed)(items)).sum(1)
        # Measured >= 0.9999 here (f32 activations); 0.999 leaves room for bf16 ones on AMX CPUs.
        assert cosine.min() >= 0.999, (embed, cosine)
    assert not np.allclose(f32.embed_texts(texts), int8.embed_texts(texts), atol=1e-6)  # int8 really ran


def test_int8_stores_every_matmul_weight_as_uint8(bundled_settings):
    import openvino as ov

    from mmserve.runtimes.openvino import compress_matmul_weights

    model = ov.Core().read_model(str(bundled_settings.export_dir() / TEXT_TOWER_FILE))
    matmuls_with_constant_weights = sum(
        op.get_type_name() == "MatMul" and op.input_value(1).get_node().get_type_name() == "Constant"
        for op in model.get_ordered_ops()
    )
    assert compress_matmul_weights(model) == matmuls_with_constant_weights > 0
    assert not any(
        op.get_type_name() == "MatMul" and op.input_value(1).get_node().get_type_name() == "Constant"
        for op in model.get_ordered_ops()
    )
    u8 = [op for op in model.get_ordered_ops() if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.u8]
    assert len(u8) >= 2 * matmuls_with_constant_weights  # weights and zero points


def test_int8_needs_openvino(bundled_settings):
    with pytest.raises(ValueError, match="openvino"):
        load_tower(bundled_settings.export_dir() / TEXT_TOWER_FILE, "onnxruntime", precision="int8")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_runtime_describes_its_tower_the_same_way(bundled_settings, runtime):
    """The runtime protocol: input spec, batch limit, precision and warm-up, from each real runtime."""
    from mmserve.modalities.text import TextModality
    from mmserve.runtimes import REGISTRY

    info = ClipModelInfo.from_dir(bundled_settings.model_dir)
    onnx_dir = bundled_settings.export_dir()
    image = load_tower(onnx_dir / IMAGE_TOWER_FILE, runtime, precision="f32")
    text = load_tower(onnx_dir / TEXT_TOWER_FILE, runtime, precision="f32")
    assert (image.input.name, image.input.dtype, image.input.shape) == (
        "images", np.uint8, (info.image_size, info.image_size, 3))
    assert (text.input.name, text.input.dtype, text.input.shape) == ("token_ids", np.int32, (-1,))
    assert image.max_batch_size is None and image.precision == text.precision == "f32"
    text.warm_up(TextModality.from_model_dir(bundled_settings.model_dir).warm_up_batches(4))
    assert REGISTRY[runtime].triton_backend == "python"
    assert np.allclose(np.linalg.norm(image.run(np.zeros((2, *image.input.shape), np.uint8)), axis=1), 1, atol=1e-5)
