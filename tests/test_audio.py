"""Audio: decoding (libsndfile formats, downmix, soxr resampling, limits, bad data), CLAP's log-mel features
against transformers' ClapFeatureExtractor, deterministic windows, the segmented AudioModality, and CLAP's towers
(PyTorch wrappers and their ONNX export) against ClapModel on a random-weight checkpoint."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import soundfile
import soxr

from mmserve.errors import ErrorCode, InvalidInputError
from mmserve.modalities import audio
from mmserve.modalities.audio import (
    AudioFeatureConfig,
    AudioLimits,
    AudioModality,
    decode_audio,
    log_mel,
    split_windows,
)
from mmserve.models.audio_info import (
    AUDIO_MANIFEST_FILE,
    AUDIO_TEXT_TOWER_FILE,
    AUDIO_TOWER_FILE,
    AudioModelInfo,
    audio_is_current,
)

RATE = 48000
COSINE = 0.9999
MEL_TOLERANCE = 1e-4  # dB
CONFIG = AudioFeatureConfig()


def encode(samples: np.ndarray, rate: int = RATE, format: str = "WAV", subtype: str = "FLOAT") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=format, subtype=subtype)
    return buffer.getvalue()


def tone(seconds: float, rate: int = RATE, frequency: float = 440.0, amplitude: float = 0.4) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def sounds(seconds: float) -> dict[str, np.ndarray]:
    """Tones, a chirp, noise, near-silence, silence and clicks: spectra from one bin to all of them."""
    n = round(seconds * RATE)
    rng = np.random.default_rng(n)
    t = np.arange(n) / RATE
    clicks = np.zeros(n, dtype=np.float32)
    clicks[::4801] = 0.9
    return {
        "tones": (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 5000 * t)).astype(np.float32),
        "chirp": (0.3 * np.sin(2 * np.pi * (60 + 1200 * t) * t)).astype(np.float32),
        "noise": (0.1 * rng.standard_normal(n)).astype(np.float32),
        "whisper": (1e-6 * rng.standard_normal(n)).astype(np.float32),
        "silence": np.zeros(n, dtype=np.float32),
        "clicks": clicks,
    }


def refusal(data: bytes, limits: AudioLimits | None = None) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        decode_audio(data, RATE, limits or AudioLimits())
    error = caught.value
    assert isinstance(error, ValueError) and error.errors and error.errors[0].code == error.code
    return error


# --- decoding ------------------------------------------------------------------------------------------------

LOSSLESS = {("WAV", "FLOAT"): 0.0, ("WAV", "PCM_16"): 1 / 32768, ("WAV", "PCM_24"): 1 / 2**23,
            ("FLAC", "PCM_16"): 1 / 32768, ("FLAC", "PCM_24"): 1 / 2**23}
LOSSY = [("OGG", "VORBIS"), ("OGG", "OPUS"), ("MP3", "MPEG_LAYER_III")]


def writable(format: str, subtype: str) -> bytes:
    """A 1.5 s two-tone signal in this format, or a skip naming why the bundled libsndfile cannot write it."""
    if format not in soundfile.available_formats() or subtype not in soundfile.available_subtypes(format):
        pytest.skip(f"the bundled libsndfile {soundfile.__libsndfile_version__} cannot write {format}/{subtype}")
    try:
        return encode(sounds(1.5)["tones"], format=format, subtype=subtype)
    except soundfile.SoundFileError as error:
        pytest.skip(f"the bundled libsndfile cannot write {format}/{subtype}: {error}")


@pytest.mark.parametrize(("format", "subtype"), list(LOSSLESS))
def test_decode_lossless(format, subtype):
    signal = sounds(1.5)["tones"]
    decoded = decode_audio(writable(format, subtype), RATE)
    assert decoded.dtype == np.float32 and decoded.shape == signal.shape
    assert np.abs(decoded - signal).max() <= LOSSLESS[format, subtype]


@pytest.mark.parametrize(("format", "subtype"), LOSSY)
def test_decode_lossy(format, subtype):
    """The same samples as libsndfile's own read, as long as the signal, with its energy."""
    data = writable(format, subtype)
    decoded = decode_audio(data, RATE)
    reference, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    assert rate == RATE and np.array_equal(decoded, reference)
    signal = sounds(1.5)["tones"]
    assert len(decoded) == len(signal)
    assert 0.9 < np.sqrt(np.mean(decoded**2) / np.mean(signal**2)) < 1.1


def test_stereo_downmix():
    left, right = tone(1.0), tone(1.0, frequency=1000.0, amplitude=0.2)
    decoded = decode_audio(encode(np.stack([left, right], axis=1)), RATE)
    assert np.array_equal(decoded, np.stack([left, right], axis=1).mean(axis=1))
    six = np.stack([left, right, left, -right, 0.5 * left, right], axis=1)
    assert np.array_equal(decode_audio(encode(six), RATE), six.mean(axis=1))


@pytest.mark.parametrize("rate", [44100, 16000])
def test_resampling(rate):
    """soxr VHQ, block by block, gives the one-shot resampling of the whole signal."""
    signal = np.stack([tone(3.3, rate), tone(3.3, rate, frequency=2000.0, amplitude=0.1)], axis=1)
    decoded = decode_audio(encode(signal, rate), RATE)
    expected = soxr.resample(signal.mean(axis=1), rate, RATE, quality="VHQ")
    assert decoded.shape == expected.shape == (round(3.3 * RATE),)
    assert np.array_equal(decoded, expected)
    spectrum = np.abs(np.fft.rfft(decoded))
    assert abs(np.argmax(spectrum) * RATE / len(decoded) - 440.0) < 1.0  # the tone stays at 440 Hz


def test_limits_come_from_the_header(monkeypatch):
    """Duration, channels and rate are refused before a sample is read."""
    long = encode(np.zeros(130 * 8000, dtype=np.float32), 8000, "FLAC", "PCM_16")

    def no_reading(*args, **kwargs):
        raise AssertionError("samples were read")

    monkeypatch.setattr(audio, "_read_frames", no_reading)
    error = refusal(long, AudioLimits(max_seconds=60))
    assert error.code == ErrorCode.TOO_LARGE
    assert str(error) == "audio is 2 min 10 s long; the limit is 1 min (max_audio_seconds)"
    seconds = refusal(long, AudioLimits(max_seconds=30))
    assert str(seconds) == "audio is 2 min 10 s long; the limit is 30.0 s (max_audio_seconds)"
    many = refusal(encode(np.zeros((100, 9), dtype=np.float32)))
    assert (many.code, str(many)) == (ErrorCode.TOO_LARGE,
                                      "audio has 9 channels; the limit is 8 (max_audio_channels)")
    fast = refusal(encode(np.zeros(100, dtype=np.float32), 768000))
    assert fast.code == ErrorCode.TOO_LARGE
    assert str(fast) == "audio is sampled at 768000 Hz; the limit is 384000 Hz (max_audio_sample_rate)"
    big = refusal(long, AudioLimits(max_encoded_bytes=1000))
    assert big.code == ErrorCode.TOO_LARGE and str(big).endswith("exceeds the limit of 1000 bytes (max_audio_bytes)")


def test_duration_message_in_hours():
    durations = [audio._duration(seconds) for seconds in (7800, 3600, 252, 3.7)]
    assert durations == ["2 h 10 min", "1 h", "4 min 12 s", "3.7 s"]


def cut(data: bytes, fraction: float) -> bytes:
    return data[:int(len(data) * fraction)]


def zeroed(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(data) // 3:len(data) // 3 + 300] = bytes(300)
    return bytes(damaged)


BAD = {
    "empty": (lambda: b"", ErrorCode.EMPTY, "empty input (0 bytes)"),
    "no samples": (lambda: encode(np.zeros(0, dtype=np.float32), subtype="PCM_16"), ErrorCode.EMPTY,
                   "WAV audio has no samples"),
    "text": (lambda: b"hello world " * 20, ErrorCode.UNSUPPORTED_FORMAT,
             "unsupported format: not a WAV, FLAC, Ogg (Vorbis, Opus) or MP3 file"),
    "m4a": (lambda: b"\x00\x00\x00\x20ftypM4A " + bytes(64), ErrorCode.UNSUPPORTED_FORMAT,
            "unsupported format: MP4/M4A (AAC, ALAC) (supported: WAV, FLAC, Ogg Vorbis, Ogg Opus, MP3)"),
    "webm": (lambda: b"\x1a\x45\xdf\xa3" + bytes(64), ErrorCode.UNSUPPORTED_FORMAT, "unsupported format: WebM"),
    "aiff": (lambda: encode(tone(0.1), format="AIFF", subtype="PCM_16"), ErrorCode.UNSUPPORTED_FORMAT,
             "unsupported format: AIFF"),
    "wav cut": (lambda: cut(encode(tone(1.0), subtype="PCM_16"), 0.5), ErrorCode.CORRUPT,
                "truncated WAV: its data chunk declares 96000 bytes"),
    "wav header only": (lambda: encode(tone(1.0), subtype="PCM_16")[:30], ErrorCode.INVALID, "invalid WAV: "),
    "flac cut": (lambda: cut(encode(tone(1.0), format="FLAC", subtype="PCM_16"), 0.5), ErrorCode.CORRUPT,
                 "corrupt FLAC: "),
    "flac damaged": (lambda: zeroed(encode(sounds(1.0)["noise"], format="FLAC", subtype="PCM_16")),
                     ErrorCode.CORRUPT, "corrupt FLAC: "),
    "vorbis cut": (lambda: cut(encode(tone(2.0), format="OGG", subtype="VORBIS"), 0.5), ErrorCode.CORRUPT,
                   "truncated Ogg"),
    "opus cut": (lambda: cut(encode(tone(2.0), format="OGG", subtype="OPUS"), 0.5), ErrorCode.CORRUPT,
                 "truncated Ogg"),
    "mp3 cut": (lambda: cut(encode(tone(2.0), format="MP3", subtype="MPEG_LAYER_III"), 0.5), ErrorCode.CORRUPT,
                "incomplete MP3: its header declares 96000 samples (2.0 s)"),
    "mp3 header only": (lambda: encode(tone(2.0), format="MP3", subtype="MPEG_LAYER_III")[:40], ErrorCode.INVALID,
                        "invalid MP3: no decodable MPEG audio frames"),
    "nan": (lambda: encode(np.full(100, np.nan, dtype=np.float32)), ErrorCode.INVALID,
            "WAV audio has non-finite samples (NaN or infinity)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_audio(case):
    make, code, message = BAD[case]
    error = refusal(make())
    assert error.code == code, str(error)
    assert str(error).startswith(message), str(error)


# --- features --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    from mmserve.dev.checkpoints import write_random_clap

    return write_random_clap(tmp_path_factory.mktemp("clap"), seed=3)


@pytest.fixture(scope="module")
def extractor(clap_dir):
    """transformers' extractor, loaded from the preprocessor_config.json mmserve writes."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor.from_pretrained(str(clap_dir))


def reference_features(extractor, waveform: np.ndarray) -> np.ndarray:
    return extractor(waveform, sampling_rate=RATE, return_tensors="np")["input_features"]


def test_preprocessor_config_round_trip(clap_dir, extractor):
    assert AudioFeatureConfig.from_preprocessor_config(clap_dir) == CONFIG
    assert AudioFeatureConfig.from_preprocessor_config(clap_dir / "preprocessor_config.json") == CONFIG
    assert (extractor.truncation, extractor.padding, extractor.nb_max_samples) == ("rand_trunc", "repeatpad", 480000)
    assert (CONFIG.window_samples, CONFIG.frames) == (480000, 1001)
    assert AudioFeatureConfig.from_preprocessor_config(
        type(extractor)(frequency_min=50, truncation="rand_trunc").to_dict()) == CONFIG
    fused = AudioFeatureConfig.from_preprocessor_config({"truncation": "fusion"})  # the extractor's defaults
    assert (fused.mel_scale, fused.mel_norm, fused.f_min) == ("htk", None, 0.0)
    with pytest.raises(ValueError, match="padding 'pad' is not supported"):
        AudioFeatureConfig.from_preprocessor_config({"truncation": "rand_trunc", "padding": "pad"})
    with pytest.raises(ValueError, match="WhisperFeatureExtractor"):
        AudioFeatureConfig.from_preprocessor_config({"feature_extractor_type": "WhisperFeatureExtractor"})


@pytest.mark.parametrize("seconds", [0.3, 3.7, 10.0])
def test_log_mel_parity(extractor, seconds):
    worst = 0.0
    for name, waveform in sounds(seconds).items():
        windows, _ = split_windows(waveform, CONFIG)
        features = log_mel(windows, CONFIG)
        reference = reference_features(extractor, waveform)
        assert features.dtype == np.float32 and features.shape == reference.shape == (1, 1, 1001, 64), name
        difference = float(np.abs(features - reference).max())
        assert difference <= MEL_TOLERANCE, (name, difference)
        worst = max(worst, difference)
    print(f"log-mel {seconds} s: max abs difference {worst:.2e} dB")


def test_log_mel_batches_windows(extractor):
    """Several windows in one call (across the FFT chunks) match one call each."""
    rng = np.random.default_rng(0)
    windows = (0.2 * rng.standard_normal((6, CONFIG.window_samples))).astype(np.float32)
    together = log_mel(windows, CONFIG)
    assert np.array_equal(together[5], log_mel(windows[5:], CONFIG)[0])
    assert np.abs(together[4] - reference_features(extractor, windows[4])[0]).max() <= MEL_TOLERANCE
    with pytest.raises(ValueError, match=r"windows must be \[W, 480000\]"):
        log_mel(windows[:, :1000], CONFIG)
    with pytest.raises(TypeError, match="float32"):
        log_mel(windows.astype(np.int16), CONFIG)


def test_split_windows():
    size = CONFIG.window_samples
    waveform = np.arange(25 * RATE, dtype=np.float32)
    windows, times = split_windows(waveform, CONFIG)
    assert windows.shape == (3, size) and windows.dtype == np.float32 and times.dtype == np.float64
    assert times.tolist() == [[0.0, 10.0], [10.0, 20.0], [20.0, 25.0]]
    assert np.array_equal(windows[1], waveform[size:2 * size])
    tail = waveform[2 * size:]  # 5 s: repeated twice fills the window exactly
    assert np.array_equal(windows[2], np.tile(tail, 2))

    windows, times = split_windows(np.ones(20 * RATE + RATE // 2, dtype=np.float32), CONFIG)
    assert times.tolist() == [[0.0, 10.0], [10.0, 20.0]]  # a 0.5 s tail after full windows is dropped
    windows, times = split_windows(np.ones(20 * RATE + RATE, dtype=np.float32), CONFIG)
    assert times.tolist() == [[0.0, 10.0], [10.0, 20.0], [20.0, 21.0]]  # a 1 s tail is kept
    windows, times = split_windows(np.ones(size, dtype=np.float32), CONFIG)
    assert times.tolist() == [[0.0, 10.0]]

    short = np.arange(1, round(0.3 * RATE) + 1, dtype=np.float32)  # CLAP's repeatpad: 33 copies, then zeros
    windows, times = split_windows(short, CONFIG)
    assert times.tolist() == [[0.0, 0.3]] and windows.shape == (1, size)
    assert np.array_equal(windows[0, :33 * len(short)], np.tile(short, 33))
    assert not windows[0, 33 * len(short):].any()
    windows, times = split_windows(short[:100], CONFIG)  # shorter than 1 s, but the only window: kept
    assert times.tolist() == [[0.0, 100 / RATE]]

    with pytest.raises(ValueError, match="empty waveform"):
        split_windows(np.zeros(0, dtype=np.float32), CONFIG)


# --- the modality ----------------------------------------------------------------------------------------------

def test_modality_decode_segments_items():
    modality = AudioModality(CONFIG, threads=2)
    short, long = sounds(3.7)["chirp"], tone(25.0, 44100)
    items = [encode(short), b"not audio at all", encode(long, 44100, "FLAC", "PCM_24"), b"", "a path"]
    rows, errors = modality.decode(items)
    assert [(e.index, e.code) for e in errors] == [(1, ErrorCode.UNSUPPORTED_FORMAT), (3, ErrorCode.EMPTY),
                                                   (4, ErrorCode.WRONG_TYPE)]
    assert rows["item"].tolist() == [0, 2, 2, 2] and rows["item"].dtype == np.int64
    assert rows["times"].tolist() == [[0.0, 3.7], [0.0, 10.0], [10.0, 20.0], [20.0, 25.0]]
    assert rows["features"].shape == (4, 1, 1001, 64) and rows["features"].dtype == np.float32
    expected = log_mel(split_windows(decode_audio(items[2], RATE), CONFIG)[0], CONFIG)
    assert np.array_equal(rows["features"][1:], expected)
    assert np.array_equal(rows["features"][0], log_mel(split_windows(short, CONFIG)[0], CONFIG)[0])

    batch = modality.batch([{"features": rows["features"][:1]}, {"features": rows["features"][1:]}])
    assert batch.flags.c_contiguous and np.array_equal(batch, rows["features"])
    assert [b.shape for b in modality.warm_up_batches(8)] == [(1, 1, 1001, 64), (8, 1, 1001, 64)]

    none, errors = modality.decode([b""])
    assert none["features"].shape == (0, 1, 1001, 64) and none["item"].shape == (0,) and len(errors) == 1


def test_modality_accept():
    modality = AudioModality(CONFIG, threads=1)
    features = np.full((3, 1, 1001, 64), -40.0, dtype=np.float32)
    rows, errors = modality.accept({"features": features})
    assert not errors and rows["features"] is features and rows["item"].tolist() == [0, 1, 2]
    assert rows["times"].tolist() == [[0.0, 10.0]] * 3
    rows, errors = modality.accept({"features": features[:, :, :1000]})
    assert not rows and errors[0].index is None and errors[0].code == ErrorCode.INVALID
    assert "features must be float32 [N, 1, 1001, 64], got float32 [3, 1, 1000, 64]" in errors[0].message
    features[1, 0, 5, 5] = np.nan
    rows, errors = modality.accept({"features": features})
    assert [(e.index, e.code) for e in errors] == [(1, ErrorCode.INVALID)]


# --- the model directory and the towers ---------------------------------------------------------------------------

def test_audio_model_info(clap_dir, tmp_path):
    info = AudioModelInfo.from_dir(clap_dir)
    assert (info.family, info.space, info.has_text_tower, info.embedding_dim) == ("clap", "clap", True, 48)
    assert (info.context_length, info.pad_token_id, info.features) == (512, 1, CONFIG)
    config = json.loads((clap_dir / "config.json").read_text())
    assert info.vocab_size == config["text_config"]["vocab_size"]

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    texts = ["a dog barking", "rain on a tin roof, then thunder"]
    ours = [encoding.ids for encoding in Tokenizer.from_file(str(info.tokenizer_file)).encode_batch(texts)]
    assert ours == AutoTokenizer.from_pretrained(str(clap_dir))(texts)["input_ids"]
    assert all(ids[0] == 0 and ids[-1] == 2 for ids in ours)

    fused = tmp_path / "fused"
    shutil.copytree(clap_dir, fused)
    config["audio_config"]["enable_fusion"] = True
    (fused / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="fused CLAP checkpoint"):
        AudioModelInfo.from_dir(fused)
    (fused / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(ValueError, match="'whisper' is not an audio model mmserve supports; mmserve serves unfused"):
        AudioModelInfo.from_dir(fused)

    bound = tmp_path / "bound"
    bound.mkdir()
    (bound / "config.json").write_text(json.dumps({"model_type": "mmserve-audio", "embedding_dim": 128,
                                                   "space": "main"}))
    CONFIG.to_preprocessor_config(bound)
    info = AudioModelInfo.from_dir(bound)
    assert (info.family, info.space, info.embedding_dim, info.has_text_tower) == ("bound", "main", 128, False)


@pytest.fixture(scope="module")
def clap_model(clap_dir):
    from mmserve.models.clap import load_clap

    return load_clap(clap_dir)


@pytest.fixture(scope="module")
def audio_features() -> np.ndarray:
    """Three real windows' features: tones, a chirp, noise."""
    waveforms = sounds(10.0)
    return np.concatenate([log_mel(split_windows(waveforms[name], CONFIG)[0], CONFIG)
                           for name in ("tones", "chirp", "noise")])


@pytest.fixture(scope="module")
def token_batches(clap_dir):
    """Texts of different lengths as right-padded int32 ids, at their longest length and padded further."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(clap_dir / "tokenizer.json"))
    texts = ["a dog", "rain falling on a tin roof while thunder rolls in the distance", "café jazz 🎷"]
    encodings = [tokenizer.encode(text).ids for text in texts]
    longest = max(map(len, encodings))
    ids = np.ones((len(texts), longest), dtype=np.int32)
    for row, encoding in enumerate(encodings):
        ids[row, :len(encoding)] = encoding
    return ids, np.pad(ids, ((0, 0), (0, 11)), constant_values=1)


def reference_audio(clap_model, features: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        output = clap_model.get_audio_features(input_features=torch.from_numpy(features),
                                               is_longer=torch.zeros((len(features), 1), dtype=torch.bool))
    return torch.nn.functional.normalize(output.pooler_output, dim=-1).numpy()


def reference_text(clap_model, ids: np.ndarray) -> np.ndarray:
    import torch

    tokens = torch.from_numpy(ids).long()
    with torch.no_grad():
        output = clap_model.get_text_features(input_ids=tokens, attention_mask=(tokens != 1).long())
    return torch.nn.functional.normalize(output.pooler_output, dim=-1).numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_torch_towers(clap_model, audio_features, token_batches):
    import torch

    from mmserve.models.clap import ClapAudioTower, ClapTextTower

    with torch.no_grad():
        audio = ClapAudioTower(clap_model)(torch.from_numpy(audio_features)).numpy()
        texts = [ClapTextTower(clap_model)(torch.from_numpy(ids)).numpy() for ids in token_batches]
    audio_cosine = cosines(audio, reference_audio(clap_model, audio_features)).min()
    text_cosine = min(cosines(text, reference_text(clap_model, token_batches[0])).min() for text in texts)
    print(f"torch towers: 1 - cosine audio {1 - audio_cosine:.1e}, text {1 - text_cosine:.1e}")
    assert audio_cosine >= COSINE and text_cosine >= COSINE
    assert np.allclose(np.linalg.norm(audio, axis=1), 1, atol=1e-5)


@pytest.fixture(scope="module")
def clap_export(clap_dir, tmp_path_factory):
    from mmserve.models.clap import export_audio

    return export_audio(clap_dir, tmp_path_factory.mktemp("clap-onnx"))


def test_onnx_towers(clap_export, clap_model, audio_features, token_batches):
    import onnxruntime

    def session(name):
        return onnxruntime.InferenceSession(str(clap_export / name), providers=["CPUExecutionProvider"])

    audio_tower, text_tower = session(AUDIO_TOWER_FILE), session(AUDIO_TEXT_TOWER_FILE)
    want_audio = reference_audio(clap_model, audio_features)
    for batch in (1, 3):
        (audio,) = audio_tower.run(None, {"features": audio_features[:batch]})
        assert audio.shape == (batch, 48)
        cosine = cosines(audio, want_audio[:batch]).min()
        print(f"onnx audio tower, batch {batch}: 1 - cosine {1 - cosine:.1e}")
        assert cosine >= COSINE
    want_text = reference_text(clap_model, token_batches[0])
    for ids in token_batches:
        for batch in (1, 3):
            (text,) = text_tower.run(None, {"token_ids": ids[:batch]})
            cosine = cosines(text, want_text[:batch]).min()
            print(f"onnx text tower, batch {batch}, length {ids.shape[1]}: 1 - cosine {1 - cosine:.1e}")
            assert cosine >= COSINE
    assert audio_tower.get_outputs()[0].shape == text_tower.get_outputs()[0].shape == ["batch", 48]


def test_export_manifest(clap_dir, clap_export, clap_model, tmp_path):
    import math

    from mmserve.models.clap import export_audio
    from mmserve.models.export import weights_fingerprint

    manifest = json.loads((clap_export / AUDIO_MANIFEST_FILE).read_text())
    assert manifest["fingerprint"] == weights_fingerprint(clap_dir)
    assert (manifest["family"], manifest["space"], manifest["embedding_dim"]) == ("clap", "clap", 48)
    assert AudioFeatureConfig(**manifest["features"]) == CONFIG
    scale = math.exp(float(clap_model.logit_scale_a))
    assert manifest["scoring"]["function"] == "softmax"
    assert manifest["scoring"]["logit_scale"] == pytest.approx(scale, rel=1e-6)
    assert audio_is_current(clap_dir, clap_export)
    before = (clap_export / AUDIO_TOWER_FILE).stat().st_mtime_ns
    assert export_audio(clap_dir, clap_export) == clap_export  # current: nothing written
    assert (clap_export / AUDIO_TOWER_FILE).stat().st_mtime_ns == before

    changed = tmp_path / "changed"
    shutil.copytree(clap_dir, changed)
    assert audio_is_current(changed, clap_export)  # the same weights and configs, elsewhere
    config = json.loads((changed / "config.json").read_text())
    config["projection_dim"] = 48  # rewritten: the bytes differ
    (changed / "config.json").write_text(json.dumps(config))
    assert not audio_is_current(changed, clap_export)
    assert not audio_is_current(clap_dir, tmp_path / "nothing")


def test_export_bound_tower(tmp_path):
    """An mmserve audio tower in another model's space: only the audio tower, the space from its config."""
    import onnxruntime
    import torch

    from mmserve.models.clap import export_audio

    sound_tower = pytest.importorskip("mmserve.models.sound_tower")
    config = AudioFeatureConfig(window_seconds=2.0)
    torch.manual_seed(0)
    tower = sound_tower.SoundTower(n_mels=config.n_mels, frames=config.frames, embedding_dim=32)
    audio_dir = sound_tower.save_sound_tower(tower.eval(), tmp_path / "bound", config, space="main")
    out = export_audio(audio_dir, tmp_path / "onnx")
    assert not (out / AUDIO_TEXT_TOWER_FILE).exists() and audio_is_current(audio_dir, out)
    manifest = json.loads((out / AUDIO_MANIFEST_FILE).read_text())
    assert (manifest["family"], manifest["space"], manifest["embedding_dim"], manifest["scoring"]) == \
        ("bound", "main", 32, None)
    waveforms = sounds(2.0)
    features = np.concatenate([log_mel(split_windows(waveforms[name], config)[0], config)
                               for name in ("tones", "noise", "clicks")])
    with torch.no_grad():
        want = sound_tower.load_sound_tower(audio_dir)(torch.from_numpy(features)).numpy()
    session = onnxruntime.InferenceSession(str(out / AUDIO_TOWER_FILE), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        (got,) = session.run(None, {"features": features[:batch]})
        assert cosines(got, want[:batch]).min() >= COSINE
