"""SigLIP and SigLIP 2 (and open_clip checkpoints) against each family's own PyTorch model, processor and
tokenizer, with random-weight checkpoints written here (no download): export parity in f32 and the default
precision, in-process and served end to end, tokenizers on a 10,000-string mixed corpus, scores in the family's
form, NaFlex refused clearly."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import mmserve
from mmserve.config import Settings
from mmserve.dev.corpus import corpus
from mmserve.models import ModelInfo
from mmserve.models.export import IMAGE_TOWER_FILE, TEXT_TOWER_FILE, export_scoring, export_towers
from mmserve.runtimes import load_tower

FAMILIES = ("siglip", "siglip2")
TEXTS = ["a photo of a cat", "A RED circle, on the LEFT!", "don\u2019t stop", "", "naïve café 🙂",
         "hello </s> world <unk>", "x " * 100]


def photos() -> list[bytes]:
    """Real JPEG and PNG files of different sizes and aspect ratios, and a gray and an RGBA PNG."""
    from tests.test_image_preprocess import PHOTOS

    files = [p.read_bytes() for p in PHOTOS[:6]]
    rng = np.random.default_rng(3)
    for mode, shape in (("L", (90, 40)), ("RGBA", (33, 71, 4))):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(buffer, "PNG")
        files.append(buffer.getvalue())
    return files


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    """(model directory, settings with its towers exported)."""
    from mmserve.dev.checkpoints import write_random_siglip

    directory = write_random_siglip(tmp_path_factory.mktemp("models") / request.param, variant=request.param, seed=2)
    settings = Settings(model_dir=directory, cache_dir=tmp_path_factory.mktemp(f"{request.param}-cache"))
    export_towers(directory, settings.export_dir())
    return directory, settings


class Reference:
    """The family's own pipeline: transformers' image processor, tokenizer and SiglipModel, in float32."""

    def __init__(self, directory) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, SiglipModel

        self.model = SiglipModel.from_pretrained(str(directory), local_files_only=True).eval()
        self.processor = AutoImageProcessor.from_pretrained(str(directory), local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)

    def token_ids(self, texts: list[str]) -> np.ndarray:
        # As the model cards say: padding="max_length" to the model's 64 positions.
        return np.array(self.tokenizer(texts, padding="max_length", max_length=64, truncation=True)["input_ids"])

    def texts(self, texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            ids = torch.from_numpy(self.token_ids(texts))
            return _normalized(self.model.get_text_features(input_ids=ids).pooler_output)

    def images(self, encoded: list[bytes]) -> np.ndarray:
        images = [Image.open(io.BytesIO(data)) for data in encoded]
        images = [_over_white(image) for image in images]
        with torch.no_grad():
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
            return _normalized(self.model.get_image_features(pixel_values=pixels).pooler_output)

    def probabilities(self, image: bytes, texts: list[str]) -> np.ndarray:
        """SigLIP's own zero-shot probabilities: sigmoid of logits_per_image."""
        with torch.no_grad():
            pixels = self.processor(images=[_over_white(Image.open(io.BytesIO(image)))], return_tensors="pt")
            out = self.model(input_ids=torch.from_numpy(self.token_ids(texts)), pixel_values=pixels["pixel_values"])
            return torch.sigmoid(out.logits_per_image)[0].numpy()


def _over_white(image: Image.Image) -> Image.Image:
    """mmserve composites alpha over white (README, Image input); so does the reference here."""
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return image.convert("RGB")


def _normalized(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x, dim=-1).numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def reference(family):
    return Reference(family[0])


def test_family_is_detected_from_the_files(family):
    directory, _ = family
    info = ModelInfo.from_dir(directory)
    assert info.family == directory.name
    assert (info.resize_mode, info.pooling, info.score_function, info.context_length) == ("squash", "last",
                                                                                          "sigmoid", 64)
    assert info.tokenizer == ("sentencepiece" if info.family == "siglip" else "tokenizers")


def test_tokenizer_matches_transformers_on_10000_strings(family, reference):
    from mmserve.modalities.text import load_tokenizer

    tokenizer = load_tokenizer(ModelInfo.from_dir(family[0]))
    texts = list(corpus(10_000, seed=14)) + TEXTS
    got, counts = tokenizer.tokenize(texts)
    want = reference.token_ids(texts)
    mismatches = [texts[i] for i in np.nonzero((got != want).any(axis=1))[0]]
    assert not mismatches, mismatches[:5]
    assert got.shape == (len(texts), 64) and got.dtype == np.int32
    assert ((counts >= 1) & (counts <= 64)).all()


@pytest.mark.parametrize("precision, minimum", [("f32", 0.9999), ("auto", 0.999)])
def test_exported_towers_match_the_model(family, reference, precision, minimum):
    directory, settings = family
    ids = reference.token_ids(TEXTS).astype(np.int32)
    text = load_tower(settings.export_dir() / TEXT_TOWER_FILE, "openvino", precision=precision)(ids)
    assert cosines(text, reference.texts(TEXTS)).min() >= minimum
    from mmserve.modalities.image import ImageGeometry, ImagePreprocessor

    info = ModelInfo.from_dir(directory)
    encoded = photos()
    pixels = ImagePreprocessor(info, exact=True)(encoded)
    image = load_tower(settings.export_dir() / IMAGE_TOWER_FILE, "openvino", precision=precision)(pixels)
    assert cosines(image, reference.images(encoded)).min() >= minimum
    assert isinstance(info, ImageGeometry) or info.resize_mode == "squash"


def test_preprocessing_matches_the_family_processor(family, reference):
    """Both sides to the size, no crop, the family's filter: the processor's pixels, to rounding."""
    from mmserve.modalities.image import ImagePreprocessor

    info = ModelInfo.from_dir(family[0])
    encoded = photos()
    ours = ImagePreprocessor(info, exact=True)(encoded).astype(np.float32) / 255 * 2 - 1  # mean = std = 0.5
    theirs = reference.processor(images=[_over_white(Image.open(io.BytesIO(d))) for d in encoded],
                                 return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    assert np.abs(ours - theirs).max() <= 2 / 255 + 1e-6


def test_local_embedder_and_scores_in_the_family_form(family, reference):
    from mmserve.embedder import LocalEmbedder
    from mmserve.search import Search

    directory, settings = family
    embedder = LocalEmbedder(settings.model_copy(update={"precision": "f32", "exact_preprocessing": True}))
    assert cosines(embedder.embed_texts(TEXTS), reference.texts(TEXTS)).min() >= 0.9999
    encoded = photos()
    assert cosines(embedder.embed_images(encoded), reference.images(encoded)).min() >= 0.9999
    # The default JPEG fast path (DCT-domain downscale of large photos) stays close.
    fast = LocalEmbedder(settings.model_copy(update={"precision": "f32"}))
    assert cosines(fast.embed_images(encoded), reference.images(encoded)).min() >= 0.999

    scoring = embedder.scoring
    assert scoring.function == "sigmoid" and scoring.logit_bias == pytest.approx(-8.5)
    labels = ["cat", "dog", "red circle"]
    search = Search(embedder)
    want = reference.probabilities(encoded[0], labels)
    got = {label.label: label.probability for label in search.classify(encoded[0], labels)}
    assert np.allclose([got[label] for label in labels], want, atol=1e-4)
    ranked = dict(search.rank(encoded[0], labels))
    assert np.allclose([ranked[label] for label in labels], want, atol=1e-4)  # each pair's own sigmoid


def test_served_end_to_end(family, reference, tmp_path, stack_factory):
    from mmserve.serving.triton.repository import build_repository
    from mmserve.search import Search

    directory, settings = family
    settings = settings.model_copy(update={"precision": "f32", "exact_preprocessing": True})
    repository = build_repository(settings, tmp_path / "repository")
    encoded = photos()
    with stack_factory(repository, settings.cache_dir, tmp_path / "log") as stack:
        for url in (stack.grpc_url, stack.http_url):
            with mmserve.Client(url) as client:
                summary = client.model_summary()
                assert (summary.family, summary.pooling, summary.score_function, summary.resize_mode) == (
                    directory.name, "last", "sigmoid", "squash")
                assert cosines(client.embed_texts(TEXTS), reference.texts(TEXTS)).min() >= 0.9999
                assert cosines(client.embed_images(encoded), reference.images(encoded)).min() >= 0.9999
                local = client.embed_images(encoded, preprocess="local")
                assert cosines(local, reference.images(encoded)).min() >= 0.999  # the client's default: fast path
                got = [label.probability for label in Search(client).classify(encoded[1], ["cat", "dog"])]
                assert sorted(got) == pytest.approx(sorted(reference.probabilities(encoded[1], ["cat", "dog"])),
                                                    abs=1e-4)
        # Token ids shorter than the context are refused clearly, not padded wrongly; full rows are embedded.
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        raw = httpclient.InferenceServerClient(stack.http_url.removeprefix("http://"))
        for ids in (np.ones((1, 8), np.int32), reference.token_ids(TEXTS[:2]).astype(np.int32)):
            tokens = httpclient.InferInput("token_ids", list(ids.shape), "INT32")
            tokens.set_data_from_numpy(ids)
            if ids.shape[1] == 8:
                with pytest.raises(InferenceServerException, match="exactly 64"):
                    raw.infer("text_tower", [tokens])
            else:
                embedded = raw.infer("text_tower", [tokens]).as_numpy("embedding")
                assert cosines(embedded, reference.texts(TEXTS[:2])).min() >= 0.9999
        raw.close()
    assert export_scoring(settings.export_dir()).function == "sigmoid"


def test_info_names_the_family(family):
    from tests.test_cli import run_cli

    result = run_cli("info", settings=family[1])
    assert result.returncode == 0, result.stderr
    lines = {line.split("  ")[0]: line for line in result.stdout.splitlines()}
    assert family[0].name in lines["family"] and "transformers checkpoint" in lines["family"]
    assert ("sentencepiece" if family[0].name == "siglip" else "tokenizers") in lines["tokenizer"]
    assert "both sides to 32" in lines["image size"]
    assert "last position" in lines["pooling"]
    assert "sigmoid" in lines["score"] and "bias -8.5" in lines["score"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["siglip"])  # SigLIP 2's tower is the same class; its tokenizer is tested above
def test_full_size_siglip_base_parity(tmp_path, variant):
    """SiglipConfig's defaults (ViT-B/16 at 224, 12-layer text tower at 64 positions) with random weights."""
    from mmserve.dev.checkpoints import write_random_siglip
    from mmserve.modalities.image import ImagePreprocessor

    directory = write_random_siglip(tmp_path / variant, variant=variant, full_size=True, seed=9)
    onnx_dir = export_towers(directory, tmp_path / "onnx")
    reference = Reference(directory)
    encoded = photos()[:4]
    pixels = ImagePreprocessor(ModelInfo.from_dir(directory), exact=True)(encoded)
    for precision, minimum in (("f32", 0.9999), ("auto", 0.999)):
        image = load_tower(onnx_dir / IMAGE_TOWER_FILE, "openvino", precision=precision)(pixels)
        assert cosines(image, reference.images(encoded)).min() >= minimum
        text = load_tower(onnx_dir / TEXT_TOWER_FILE, "openvino", precision=precision)(
            reference.token_ids(TEXTS).astype(np.int32))
        assert cosines(text, reference.texts(TEXTS)).min() >= minimum


@pytest.mark.slow
def test_full_size_open_clip_vit_b32_parity(tmp_path):
    from mmserve.dev.checkpoints import write_random_open_clip
    from mmserve.modalities.image import ImagePreprocessor
    from mmserve.modalities.text import ClipTokenizer, trim_padding

    directory = write_random_open_clip(tmp_path / "b32", "ViT-B-32-quickgelu", tiny=False, seed=3)
    onnx_dir = export_towers(directory, tmp_path / "onnx")
    reference = OpenClipReference(directory)
    info = ModelInfo.from_dir(directory)
    encoded = photos()[:4]
    image = load_tower(onnx_dir / IMAGE_TOWER_FILE, "openvino", precision="f32")(
        ImagePreprocessor(info, exact=True)(encoded))
    assert cosines(image, reference.images(encoded)).min() >= 0.9999
    ids = trim_padding(ClipTokenizer.from_model_dir(directory)(TEXTS), info.eos_token_id)
    text = load_tower(onnx_dir / TEXT_TOWER_FILE, "openvino", precision="f32")(ids)
    assert cosines(text, reference.texts(TEXTS)).min() >= 0.9999


def test_naflex_checkpoint_is_refused_clearly(tmp_path):
    from mmserve.dev.checkpoints import write_random_siglip2_naflex

    directory = write_random_siglip2_naflex(tmp_path / "naflex")
    with pytest.raises(ValueError, match="NaFlex.*not supported.*fixed-resolution"):
        ModelInfo.from_dir(directory)
    with pytest.raises(ValueError, match="NaFlex"):
        export_towers(directory, tmp_path / "onnx")


def test_unknown_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "blip"}')
    with pytest.raises(ValueError, match="model_type 'blip' is not supported"):
        ModelInfo.from_dir(tmp_path)


# -- open_clip checkpoint directories ----------------------------------------------------------------------

OPEN_CLIP_MODELS = ("ViT-B-32-quickgelu", "ViT-B-16", "ViT-L-14", "ViT-H-14")


class OpenClipReference:
    """open_clip's own CLIP (its code, its config for the name, the checkpoint's weights), its tokenizer, and
    the Pillow pipeline open_clip's transforms run (shortest side, centre crop; `reference_preprocess`)."""

    def __init__(self, directory) -> None:
        from mmserve.dev.checkpoints import open_clip_model, open_clip_modules

        self.model = open_clip_model(directory)
        self.tokenizer = open_clip_modules()[1].SimpleTokenizer()
        self.info = ModelInfo.from_dir(directory)

    def texts(self, texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return self.model.encode_text(self.tokenizer(texts, context_length=77), normalize=True).numpy()

    def images(self, encoded: list[bytes]) -> np.ndarray:
        from mmserve.modalities.image import reference_preprocess

        info = self.info
        pixels = np.stack([reference_preprocess(_over_white(Image.open(io.BytesIO(data))), info.image_size,
                                                resample=info.resample, resize_mode=info.resize_mode)
                           for data in encoded])
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (info.image_mean, info.image_std))
        with torch.no_grad():
            x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std
            return self.model.encode_image(x, normalize=True).numpy()

    def probabilities(self, image: bytes, texts: list[str]) -> np.ndarray:
        logits = float(self.model.logit_scale.exp()) * self.images([image]) @ self.texts(texts).T
        return torch.softmax(torch.from_numpy(logits[0]), dim=0).numpy()


@pytest.fixture(scope="module", params=OPEN_CLIP_MODELS)
def open_clip_checkpoint(request, tmp_path_factory):
    from mmserve.dev.checkpoints import write_random_open_clip

    directory = write_random_open_clip(tmp_path_factory.mktemp("open_clip") / request.param, request.param, seed=4)
    settings = Settings(model_dir=directory, cache_dir=tmp_path_factory.mktemp(f"{request.param}-cache"))
    export_towers(directory, settings.export_dir())
    return directory, settings


@pytest.mark.parametrize("precision, minimum", [("f32", 0.9999), ("auto", 0.999)])
def test_open_clip_checkpoint_exports_as_open_clip_computes(open_clip_checkpoint, precision, minimum):
    from mmserve.modalities.image import ImagePreprocessor
    from mmserve.modalities.text import ClipTokenizer, trim_padding

    directory, settings = open_clip_checkpoint
    reference = OpenClipReference(directory)
    info = ModelInfo.from_dir(directory)
    assert (info.family, info.checkpoint, info.tokenizer, info.pooling) == ("clip", "open_clip", "clip-bpe", "eos")
    ids = ClipTokenizer.from_model_dir(directory)(TEXTS)  # no vocabulary in the directory: CLIP's, bundled
    assert np.array_equal(ids, reference.tokenizer(TEXTS, context_length=77).numpy())
    text = load_tower(settings.export_dir() / TEXT_TOWER_FILE, "openvino", precision=precision)(
        trim_padding(ids, info.eos_token_id))
    assert cosines(text, reference.texts(TEXTS)).min() >= minimum
    encoded = photos()
    pixels = ImagePreprocessor(info, exact=True)(encoded)
    image = load_tower(settings.export_dir() / IMAGE_TOWER_FILE, "openvino", precision=precision)(pixels)
    assert cosines(image, reference.images(encoded)).min() >= minimum


def test_open_clip_checkpoint_served_end_to_end(tmp_path, stack_factory):
    from mmserve.dev.checkpoints import write_random_open_clip
    from mmserve.search import Search
    from mmserve.serving.triton.repository import build_repository

    directory = write_random_open_clip(tmp_path / "ViT-B-16", "ViT-B-16", seed=5, safetensors=False,
                                       preprocess={"interpolation": "bilinear"})
    reference = OpenClipReference(directory)
    settings = Settings(model_dir=directory, cache_dir=tmp_path / "cache", precision="f32", exact_preprocessing=True)
    repository = build_repository(settings, tmp_path / "repository")
    encoded = photos()
    with stack_factory(repository, settings.cache_dir, tmp_path / "log") as stack, mmserve.Client(stack.grpc_url) as client:
        summary = client.model_summary()
        assert (summary.family, summary.checkpoint, summary.resample, summary.score_function) == (
            "clip", "open_clip", "bilinear", "softmax")
        assert summary.logit_scale == pytest.approx(float(np.exp(4.2)), rel=1e-5)
        assert cosines(client.embed_texts(TEXTS), reference.texts(TEXTS)).min() >= 0.9999
        assert cosines(client.embed_images(encoded), reference.images(encoded)).min() >= 0.9999
        labels = ["a cat", "a dog", "a red circle"]
        got = {label.label: label.probability for label in Search(client).classify(encoded[2], labels)}
        assert np.allclose([got[label] for label in labels], reference.probabilities(encoded[2], labels), atol=1e-4)


@pytest.fixture(scope="module", params=["ViT-B-16-SigLIP", "ViT-B-16-SigLIP2"])
def open_clip_siglip(request, tmp_path_factory):
    """open_clip's SigLIP entries as open_clip and timm build them (full-size timm ViT, small text tower)."""
    from mmserve.dev.checkpoints import write_random_open_clip

    directory = write_random_open_clip(tmp_path_factory.mktemp("open_clip_siglip") / request.param, request.param,
                                       seed=6)
    settings = Settings(model_dir=directory, cache_dir=tmp_path_factory.mktemp(f"{request.param}-cache"))
    export_towers(directory, settings.export_dir())
    return directory, settings


class OpenClipSiglipReference(OpenClipReference):
    """open_clip's SigLIP: its CustomTextCLIP with the timm tower, its HFTokenizer ("canonicalize" cleaning,
    then the directory's tokenizer, padded to 64), squashed Pillow resize, sigmoid scores with the bias."""

    def __init__(self, directory) -> None:
        from mmserve.dev.checkpoints import open_clip_model, open_clip_modules

        self.model = open_clip_model(directory)
        self.tokenizer = open_clip_modules()[1].HFTokenizer(str(directory), context_length=64, clean="canonicalize")
        self.info = ModelInfo.from_dir(directory)

    def token_ids(self, texts: list[str]) -> np.ndarray:
        return self.tokenizer(texts).numpy()

    def texts(self, texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return self.model.encode_text(self.tokenizer(texts), normalize=True).numpy()

    def probabilities(self, image: bytes, texts: list[str]) -> np.ndarray:
        logits = float(self.model.logit_scale.exp()) * self.images([image]) @ self.texts(texts).T
        return torch.sigmoid(torch.from_numpy(logits[0]) + float(self.model.logit_bias)).numpy()


@pytest.mark.slow
def test_open_clip_siglip_entry_as_open_clip_computes(open_clip_siglip):
    from mmserve.embedder import LocalEmbedder
    from mmserve.modalities.image import ImagePreprocessor
    from mmserve.modalities.text import load_tokenizer
    from mmserve.search import Search

    directory, settings = open_clip_siglip
    reference = OpenClipSiglipReference(directory)
    info = ModelInfo.from_dir(directory)
    assert (info.family, info.checkpoint, info.pooling, info.resize_mode) == (
        "siglip2" if directory.name.endswith("2") else "siglip", "open_clip", "last", "squash")
    texts = [*corpus(10_000, seed=15), *TEXTS, "snake_case_words and_more", "&amp;lt;b&amp;gt; twice"]
    got = load_tokenizer(info)(texts)
    want = reference.token_ids(texts)
    mismatches = [texts[i] for i in np.nonzero((got != want).any(axis=1))[0]]
    assert not mismatches, mismatches[:5]

    encoded = photos()[:5]
    pixels = ImagePreprocessor(info, exact=True)(encoded)
    for precision, minimum in (("f32", 0.9999), ("auto", 0.999)):
        image = load_tower(settings.export_dir() / IMAGE_TOWER_FILE, "openvino", precision=precision)(pixels)
        assert cosines(image, reference.images(encoded)).min() >= minimum
        text = load_tower(settings.export_dir() / TEXT_TOWER_FILE, "openvino", precision=precision)(got[-len(TEXTS) - 2:])
        assert cosines(text, reference.texts(texts[-len(TEXTS) - 2:])).min() >= minimum

    embedder = LocalEmbedder(settings.model_copy(update={"precision": "f32", "exact_preprocessing": True}))
    labels = ["a cat", "a red circle", "sunset"]
    probabilities = {label.label: label.probability for label in Search(embedder).classify(encoded[0], labels)}
    assert np.allclose([probabilities[label] for label in labels], reference.probabilities(encoded[0], labels),
                       atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("open_clip_siglip", ["ViT-B-16-SigLIP2"], indirect=True)
def test_open_clip_siglip_entry_served_end_to_end(open_clip_siglip, tmp_path, stack_factory):
    from mmserve.serving.triton.repository import build_repository

    directory, settings = open_clip_siglip
    reference = OpenClipSiglipReference(directory)
    settings = settings.model_copy(update={"precision": "f32", "exact_preprocessing": True})
    repository = build_repository(settings, tmp_path / "repository")
    encoded = photos()[:4]
    with stack_factory(repository, settings.cache_dir, tmp_path / "log") as stack, mmserve.Client(stack.http_url) as client:
        summary = client.model_summary()
        assert (summary.checkpoint, summary.score_function, summary.pooling) == ("open_clip", "sigmoid", "last")
        assert summary.logit_bias == pytest.approx(-7.0)
        assert cosines(client.embed_texts(TEXTS), reference.texts(TEXTS)).min() >= 0.9999
        assert cosines(client.embed_images(encoded), reference.images(encoded)).min() >= 0.9999


@pytest.mark.parametrize("name, message", [
    ("EVA02-B-16", "timm's 'eva02_base_patch16_clip_224'.*does not convert"),
    ("xlm-roberta-base-ViT-B-32", "multilingual XLM-RoBERTa.*not supported"),
    ("RN50", "ResNet image towers"),
    ("coca_ViT-B-32", "CoCa"),
])
def test_open_clip_checkpoints_that_cannot_be_served_are_refused_clearly(tmp_path, name, message):
    import json

    from mmserve.dev.checkpoints import open_clip_config

    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": open_clip_config(name)}))
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=message):
        ModelInfo.from_dir(tmp_path)


def test_open_clip_squash_resize_is_read(tmp_path):
    from mmserve.dev.checkpoints import write_random_open_clip

    directory = write_random_open_clip(tmp_path / "squash", preprocess={"resize_mode": "squash"})
    assert ModelInfo.from_dir(directory).resize_mode == "squash"
