"""Model facts flow from a checkpoint's files into preprocessing and tokenization."""

import json

import numpy as np
import pytest
from PIL import Image

from mmserve.models.clip import ClipModelInfo, load_vocabulary, vocabulary_from_open_clip_bpe
from mmserve.modalities.image import ImagePreprocessor
from mmserve.modalities.text import ClipTokenizer


def _png_bytes(width, height):
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


def test_vit_b32_configuration_flows_into_preprocessing_and_tokenization(vit_b32_dir):
    info = ClipModelInfo.from_dir(vit_b32_dir)
    assert (info.image_size, info.context_length, info.embedding_dim) == (224, 77, 512)
    assert info.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert (info.start_token_id, info.eos_token_id) == (49406, 49407)
    assert ImagePreprocessor(info)([_png_bytes(300, 200)]).shape == (1, 224, 224, 3)
    assert ClipTokenizer.from_model_dir(vit_b32_dir)(["a photo of a cat"]).shape == (1, 77)


def test_nothing_is_hard_coded_to_224_or_77(tmp_path, random_clip):
    small = dict(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=20),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           patch_size=8),
        projection_dim=16,
    )
    directory = random_clip(tmp_path, image_size=40, mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1), **small)
    info = ClipModelInfo.from_dir(directory)
    assert (info.image_size, info.context_length, info.embedding_dim) == (40, 20, 16)
    assert info.image_mean == (0.1, 0.2, 0.3) and info.image_std == (0.3, 0.2, 0.1)
    assert ImagePreprocessor(info)([_png_bytes(90, 60)]).shape == (1, 40, 40, 3)
    tokens = ClipTokenizer.from_model_dir(directory)(["word " * 50])
    assert tokens.shape == (1, 20) and tokens[0, -1] == 49407


def test_openai_style_integer_sizes_are_read(tmp_path, vit_b32_dir):
    for name in ("config.json", "vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((vit_b32_dir / name).read_bytes())
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"crop_size": 224, "size": 224, "resample": 3, "image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    )
    info = ClipModelInfo.from_dir(tmp_path)
    assert (info.image_size, info.resize_shortest_edge, info.image_mean) == (224, 224, (0.5, 0.5, 0.5))


def test_mismatched_crop_size_is_a_clear_error(tmp_path, vit_b32_dir):
    for name in ("config.json", "vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((vit_b32_dir / name).read_bytes())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"crop_size": 336}))
    with pytest.raises(ValueError, match="crop size 336 does not match"):
        ClipModelInfo.from_dir(tmp_path)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ClipModelInfo.from_dir(tmp_path)


def test_both_vocabulary_layouts_agree(bundled_model_dir):
    from mmserve.dev.training import reference_tokenizer

    _, bpe_file = reference_tokenizer()
    hf = load_vocabulary(bundled_model_dir)
    open_clip = vocabulary_from_open_clip_bpe(bpe_file)
    assert hf.merges == open_clip.merges
    assert hf.encoder == open_clip.encoder
    assert len(hf.encoder) == 49408


def test_the_weights_are_hashed_once_per_process_until_they_change(tmp_path, bundled_model_dir):
    import shutil

    from mmserve.config import Settings
    from mmserve.models import export

    model = tmp_path / "model"
    shutil.copytree(bundled_model_dir, model)
    settings = Settings(model_dir=model)
    before = export._fingerprint.cache_info().misses
    first = settings.export_dir()
    export.is_current(model, settings.export_dir())
    assert export._fingerprint.cache_info().misses == before + 1  # three asks, one hash
    config = model / "config.json"
    config.write_text(config.read_text() + " ")  # same content to the model, new bytes to the hash
    assert settings.export_dir() != first
