"""A CLAP checkpoint served end to end: `embed_audio` and `embed_audio_text` in tritonserver against
transformers' ClapFeatureExtractor + ClapModel, one bad sound among good ones, and one index holding images
(the main space) beside CLAP sounds (their own space), searched without ever comparing the two."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile

from mmserve.errors import ErrorCode, InvalidInputError

RATE = 48000


def wav(samples: np.ndarray, rate: int = RATE, format: str = "WAV") -> bytes:
    """Lossless float samples (FLAC: 24-bit), so the reference sees what the server decodes."""
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=format, subtype="FLOAT" if format == "WAV" else "PCM_24")
    return buffer.getvalue()


def tone(seconds: float, frequency: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t) + 0.05 * np.sin(2 * np.pi * 3.1 * frequency * t)).astype(
        np.float32)


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory, bundled_settings):
    from mmserve.dev.checkpoints import write_random_clap
    from mmserve.models.info import ModelInfo

    # The bundled model's dimension, so both spaces can share one index.
    dim = ModelInfo.from_dir(bundled_settings.model_dir).embedding_dim
    return write_random_clap(tmp_path_factory.mktemp("clap-served"), seed=7, projection_dim=dim)


@pytest.fixture(scope="module")
def clap_settings(bundled_settings, clap_dir):
    # f32: the parity bar is for f32 (OpenVINO's "auto" is bf16 on CPUs with AMX).
    return bundled_settings.model_copy(update={"audio_model_dir": clap_dir, "tower_queue_delay_us": 20_000,
                                               "precision": "f32"})


@pytest.fixture(scope="module")
def clap_stack(clap_settings, tmp_path_factory, stack_factory):
    from mmserve.serving.triton.repository import build_repository

    repository = build_repository(clap_settings, tmp_path_factory.mktemp("clap-repository"))
    assert {p.name for p in repository.iterdir()} >= {"embed_audio", "embed_audio_text", "embed_video"}
    with stack_factory(repository, clap_settings.cache_dir, tmp_path_factory.mktemp("clap-log")) as stack:
        yield stack


@pytest.fixture(scope="module")
def client(clap_stack):
    import mmserve

    with mmserve.Client(clap_stack.grpc_url) as client:
        yield client


@pytest.fixture(scope="module")
def reference(clap_dir):
    """transformers' own pipeline: ClapFeatureExtractor(rand_trunc) + ClapModel, normalised."""
    import torch
    from transformers import AutoTokenizer, ClapFeatureExtractor

    from mmserve.models.clap import load_clap

    model = load_clap(clap_dir)
    extractor = ClapFeatureExtractor.from_pretrained(str(clap_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(clap_dir))

    def audio(waveform: np.ndarray) -> np.ndarray:
        features = extractor(waveform, sampling_rate=RATE, return_tensors="pt")
        with torch.no_grad():
            output = model.get_audio_features(input_features=features["input_features"],
                                              is_longer=torch.zeros((1, 1), dtype=torch.bool))
        return torch.nn.functional.normalize(output.pooler_output, dim=-1)[0].numpy()

    def text(texts: list[str]) -> np.ndarray:
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            output = model.get_text_features(**tokens)
        return torch.nn.functional.normalize(output.pooler_output, dim=-1).numpy()

    return audio, text


def test_summary_names_the_clap_space(client):
    summary = client.model_summary()
    assert summary.spaces == {"image": "main", "text": "main", "video": "main", "audio": "clap"}
    assert summary.audio_family == "clap" and client.space_of("audio") == "clap"
    assert summary.audio_logit_scale and summary.audio_logit_scale > 1


def test_served_audio_matches_transformers(client, reference):
    reference_audio, reference_text = reference
    sounds = [tone(2.5, 440.0), tone(7.0, 1250.0), np.random.default_rng(1).normal(0, 0.1, 3 * RATE).astype(np.float32)]
    served = client.embed_audio([wav(s) for s in sounds])
    for sound, embedded in zip(sounds, served):
        assert embedded.segments.shape == (1, client.model_summary().audio_embedding_dim)
        assert float(embedded.embedding @ reference_audio(sound)) >= 0.9999
        np.testing.assert_allclose(embedded.times, [[0.0, len(sound) / RATE]], atol=1e-4)
    texts = ["a dog barking", "rain on a tin roof while thunder rolls far away", "jazz"]
    vectors = client.embed_texts(texts, modality="audio")
    assert np.all(np.sum(vectors * reference_text(texts), axis=1) >= 0.9999)


def test_long_sounds_are_every_window_mean_pooled(client, reference):
    reference_audio, _ = reference
    sound = np.concatenate([tone(10.0, 300.0), tone(10.0, 2000.0), tone(4.0, 800.0)])
    embedded, = client.embed_audio([wav(sound)])
    np.testing.assert_allclose(embedded.times, [[0, 10], [10, 20], [20, 24]], atol=1e-4)
    windows = [reference_audio(part) for part in (sound[: 10 * RATE], sound[10 * RATE : 20 * RATE], sound[20 * RATE :])]
    for segment, expected in zip(embedded.segments, windows):
        assert float(segment @ expected) >= 0.9999
    mean = np.mean(windows, axis=0)
    assert float(embedded.embedding @ (mean / np.linalg.norm(mean))) >= 0.9999


def test_resampled_and_compressed_inputs(client):
    sound = tone(3.0, 660.0, rate=44100)
    flac, = client.embed_audio([wav(sound, 44100, "FLAC")])
    wave, = client.embed_audio([wav(sound, 44100)])
    assert float(flac.embedding @ wave.embedding) > 0.9999


def test_a_bad_sound_fails_alone(client):
    good = [wav(tone(1.0 + i, 300.0 * (i + 1))) for i in range(3)]
    truncated = wav(tone(4.0, 500.0))[:20_000]

    def call(items):
        try:
            return client.embed_audio(items)
        except InvalidInputError as error:
            return error

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, [[good[0]], [good[1], b"RIFF not really"], [truncated], [good[2]]]))
    assert len(results[0]) == 1 and len(results[3]) == 1
    assert isinstance(results[1], InvalidInputError) and results[1].index == 1
    assert isinstance(results[2], InvalidInputError) and results[2].code == ErrorCode.CORRUPT
    assert client.health().ready


def test_one_index_two_spaces(client, tmp_path, gallery):
    """Images and CLAP sounds in one index: text -> sound goes through CLAP's text tower; the image-text
    model's text vector against the sounds is refused."""
    from mmserve.index import Index, SpaceMismatchError
    from mmserve.search import Search, index_files

    folder = tmp_path / "media"
    folder.mkdir()
    for i, frequency in enumerate((220.0, 880.0, 3000.0)):
        (folder / f"tone{i}.wav").write_bytes(wav(tone(2.0, frequency)))
    files = sorted(folder.iterdir()) + list(gallery[:4])
    with Index.create(tmp_path / "index", client.model_summary().embedding_dim) as index:
        report = index_files(index, client, files)
        assert (report.added, report.failed) == (7, [])
        assert index.modality_counts() == {("audio", "clap"): 3, ("image", "main"): 4}
        search = Search(client, index)
        sounds = search.search_text("a high whistle", k=5, modality="audio")
        assert len(sounds) == 3 and {hit.record.space for hit in sounds} == {"clap"}
        images = search.search_text("a red circle", k=10)
        assert {hit.record.modality for hit in images} == {"image"}
        by_sound = search.search_audio(folder / "tone1.wav", k=1)
        assert by_sound[0].record.uri == str(folder / "tone1.wav") and by_sound[0].score > 0.999
        with pytest.raises(SpaceMismatchError, match="'main' space but the audio items are in the 'clap'"):
            index.search(client.embed_texts(["a red circle"])[0], 3, modality="audio")
        again = index_files(index, client, files)
        assert (again.added, again.skipped) == (0, 7)


def test_local_embedder_matches_the_server(client, clap_settings):
    from mmserve.embedder import LocalEmbedder

    local = LocalEmbedder(clap_settings)
    sound = wav(tone(3.0, 440.0))
    assert local.space_of("audio") == "clap"
    assert float(local.embed_audio([sound])[0].embedding @ client.embed_audio([sound])[0].embedding) > 0.9999
    texts = ["a bird singing", "an engine"]
    np.testing.assert_allclose(local.embed_texts(texts, modality="audio"), client.embed_texts(texts, modality="audio"),
                               atol=1e-5)


def test_bundled_audio_tower_is_served_in_the_main_space(server, local_embedder, tmp_path):
    """The bundled model's audio tower: served as embed_audio in the image-text space, the same vectors as
    in-process, and a text through the one text tower finds the sound its words are bound to."""
    import mmserve
    from mmserve.dev import sounds as A

    low_sine = A.sound_with(A.SoundAttributes("very_low", "sine", "continuous", "none"), seed=91_001)
    high_bell = A.sound_with(A.SoundAttributes("very_high", "bell", "fast", "white"), seed=91_002)
    files = [A.write_wav(sound, tmp_path / f"{name}.wav") for name, sound in (("sine", low_sine), ("bell", high_bell))]
    with mmserve.Client(server.grpc_url) as client:
        summary = client.model_summary()
        assert summary.spaces["audio"] == "main" and summary.audio_family == "bound"
        served = client.embed_audio(files)
        texts = client.embed_texts(["a large red circle on a black background", "a small purple cross"])
    local = local_embedder.embed_audio(files)
    for remote, here in zip(served, local):
        assert float(remote.embedding @ here.embedding) > 0.999
    scores = texts @ np.stack([s.embedding for s in served]).T
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0], scores
