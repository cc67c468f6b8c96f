"""The generated sounds (`mmserve.dev.sounds`), their binding to the caption vocabulary, and the bundled audio tower
(`mmserve/models/default/audio`, trained by `mmserve.dev.audio_training`).

The attributes are checked in the signal itself, not in the generator's bookkeeping: the fundamental by FFT, the
overtones' pattern, the pulse rate from the envelope, the noise's spectral slope.
"""

import json

import numpy as np
import pytest

from mmserve.dev import sounds as A
from mmserve.dev import synthetic as S

SR = A.SAMPLE_RATE


def clean(pitch="mid_low", timbre="sine", rhythm="continuous", noise="none", seed=0, duration=2.0):
    return A.sound_with(A.SoundAttributes(pitch, timbre, rhythm, noise), seed, duration=duration)


def spectrum_db(samples):
    """Magnitude spectrum (dB, Hann window) and its bin frequencies."""
    window = np.hanning(len(samples))
    magnitude = np.abs(np.fft.rfft(samples * window))
    return 20 * np.log10(magnitude + 1e-12), np.fft.rfftfreq(len(samples), 1 / SR)


def level_at(db, freqs, frequency, width=0.02):
    """Peak level (dB) within +-`width` (relative) of `frequency`."""
    near = np.abs(freqs - frequency) <= width * frequency
    return db[near].max()


def test_sounds_are_deterministic_from_the_seed_and_unique():
    a, b = A.make_sound(1234), A.make_sound(1234)
    assert a.attributes == b.attributes and np.array_equal(a.samples, b.samples)
    assert (a.frequency, a.pulse_rate, a.onset) == (b.frequency, b.pulse_rate, b.onset)
    c = A.sound_with(a.attributes, 1235)
    assert not np.array_equal(a.samples[:SR], c.samples[:SR]) and a.frequency != c.frequency


def test_generator_covers_every_value_within_its_ranges():
    sounds = [A.make_sound(i) for i in range(200)]
    for attribute, values in A.SOUND_ATTRIBUTE_VALUES.items():
        assert {s.attributes.attribute(attribute) for s in sounds} == set(values)
    for s in sounds:
        assert s.samples.dtype == np.float32 and s.sample_rate == SR
        assert 1.0 <= s.duration <= 4.0
        assert 10 ** (-20.5 / 20) < np.abs(s.samples).max() < 10 ** (-2.9 / 20)
        centre = A.PITCH_CENTRES_HZ[s.attributes.pitch]
        assert abs(np.log2(s.frequency / centre)) <= A.PITCH_JITTER_OCTAVES


@pytest.mark.parametrize("timbre", A.TIMBRES)
@pytest.mark.parametrize("pitch", A.PITCHES)
def test_fundamental_by_fft_is_in_the_pitch_band(pitch, timbre):
    for seed, noise in enumerate(("none", "white", "brown")):
        sound = clean(pitch, timbre, "continuous", noise, seed=seed)
        db, freqs = spectrum_db(sound.samples[int(0.25 * SR):])
        audible = freqs > 60
        peak = freqs[audible][np.argmax(db[audible])]
        assert abs(peak / sound.frequency - 1) < 0.01, (pitch, timbre, noise, peak, sound.frequency)
        band = A.PITCH_CENTRES_HZ[pitch] * 2.0 ** np.array([-A.PITCH_JITTER_OCTAVES, A.PITCH_JITTER_OCTAVES])
        assert band[0] <= peak <= band[1] * 1.01


@pytest.mark.parametrize("seed", range(3))
def test_timbre_is_the_pattern_of_overtones(seed):
    levels = {}
    for timbre in A.TIMBRES:
        sound = clean("low", timbre, seed=seed)
        db, freqs = spectrum_db(sound.samples[int(0.25 * SR):])
        f = sound.frequency
        base = level_at(db, freqs, f)
        levels[timbre] = {ratio: level_at(db, freqs, ratio * f, 0.012) - base for ratio in (2.0, 2.756, 3.0)}
    assert levels["sine"][2.0] < -40 and levels["sine"][3.0] < -40
    assert levels["square"][2.0] < -40 and -13 < levels["square"][3.0] < -7  # odd harmonics, 1/k
    assert -9 < levels["sawtooth"][2.0] < -3 and -13 < levels["sawtooth"][3.0] < -7  # every harmonic, 1/k
    assert levels["bell"][2.0] < -40 and levels["bell"][3.0] < -40 and -9 < levels["bell"][2.756] < 0  # inharmonic


def envelope_db(sound, frame=320, hop=160):
    """Level (dB) of the tone's fundamental in 20 ms frames every 10 ms: a narrow band, so noise barely moves it."""
    samples = sound.samples.astype(np.float64)
    starts = np.arange(0, len(samples) - frame, hop)
    frames = samples[starts[:, None] + np.arange(frame)] * np.hanning(frame)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(frame, 1 / SR)
    band = np.abs(freqs - sound.frequency) <= freqs[1]
    return 10 * np.log10(power[:, band].sum(axis=1) + 1e-20)


def gate_with_hysteresis(env):
    """On above 65% of the level range, off again below 35% (noise near one threshold cannot flicker)."""
    low, high = np.percentile(env, 5), np.percentile(env, 95)
    on_above, off_below = low + 0.65 * (high - low), low + 0.35 * (high - low)
    state, gate = False, np.zeros(len(env), dtype=bool)
    for i, level in enumerate(env):
        state = level > on_above or (state and level > off_below)
        gate[i] = state
    return gate


@pytest.mark.parametrize("rhythm", A.RHYTHMS)
@pytest.mark.parametrize("noise", A.NOISES)
def test_pulse_rate_from_the_envelope_matches_the_rhythm(rhythm, noise):
    for seed in range(3):
        sound = clean("high", "square", rhythm, noise, seed=seed, duration=4.0)
        env = envelope_db(sound)[int(sound.onset * 100) + 2: -2]  # after the onset
        spread = np.percentile(env, 95) - np.percentile(env, 5)
        if rhythm == "continuous":
            assert spread < 2.0, (noise, spread)
            continue
        assert spread > 2.5, (noise, spread)
        on = gate_with_hysteresis(env)
        onsets = np.count_nonzero(on[1:] & ~on[:-1])
        seconds = len(env) / 100
        assert abs(onsets - sound.pulse_rate * seconds) <= 1.5, (rhythm, noise, onsets, sound.pulse_rate)
        low, high = A.PULSE_RATES_HZ[rhythm]
        assert low * seconds - 1.5 <= onsets <= high * seconds + 1.5
        assert 0.3 < on.mean() < 0.8  # the duty cycle (0.35-0.6, widened by the ramps and the 20 ms frames)


def noise_slope_db_per_octave(sound):
    """Slope of the noise's power spectrum (Welch, tone partials masked) over 100 Hz - 5 kHz."""
    segment = 2048
    chunks = sound.samples[: len(sound.samples) // segment * segment].reshape(-1, segment).astype(np.float64)
    power = (np.abs(np.fft.rfft(chunks * np.hanning(segment), axis=1)) ** 2).mean(axis=0)
    freqs = np.fft.rfftfreq(segment, 1 / SR)
    keep = (freqs > 100) & (freqs < 5000)
    for k in range(1, 8):
        keep &= np.abs(freqs - k * sound.frequency) > 60
    return np.polyfit(np.log2(freqs[keep]), 10 * np.log10(power[keep]), 1)[0], power, freqs


@pytest.mark.parametrize("noise, slope", [("white", 0.0), ("pink", -3.0), ("brown", -6.0)])
def test_noise_kind_is_the_spectral_slope(noise, slope):
    for seed in range(3):
        measured, _, _ = noise_slope_db_per_octave(clean("very_high", "sine", "continuous", noise, seed=seed, duration=3))
        assert abs(measured - slope) < 1.0, (noise, measured)


def test_no_noise_is_a_faint_floor_only():
    sound = clean("very_high", "sine", "continuous", "none", duration=3)
    _, power, freqs = noise_slope_db_per_octave(sound)
    tone = power[np.argmin(np.abs(freqs - sound.frequency))]
    away = power[(freqs > 100) & (np.abs(freqs - sound.frequency) > 200)]
    assert 10 * np.log10(np.median(away) / tone) < -50
    noisy = clean("very_high", "sine", "continuous", "white", duration=3)
    _, power, freqs = noise_slope_db_per_octave(noisy)
    tone = power[np.argmin(np.abs(freqs - noisy.frequency))]
    assert 10 * np.log10(np.median(power[(freqs > 100) & (np.abs(freqs - noisy.frequency) > 200)]) / tone) > -50


def synthetic_vocabulary():
    words = {w for template in S._TEMPLATES for w in template.replace("{obj}", "").split()}
    words |= {"a", "an", "and", "shape", "on", "background"}
    words |= {v for values in S.ATTRIBUTE_VALUES.values() for v in values} | set(S.BACKGROUNDS)
    return words


def test_binding_is_one_to_one_onto_synthetic_words_and_never_position():
    for sound_attribute, (caption_attribute, words) in A.BINDING.items():
        caption_values = S.BACKGROUNDS if caption_attribute == "background" else S.ATTRIBUTE_VALUES[caption_attribute]
        assert caption_attribute != "position"
        assert set(words) == set(A.SOUND_ATTRIBUTE_VALUES[sound_attribute])
        assert len(set(words.values())) == len(words) and set(words.values()) <= set(caption_values)
    assert A.BINDING["timbre"][1]["sine"] == "circle"  # a sine sound finds circles
    vocabulary = synthetic_vocabulary()
    texts = set()
    for seed in range(200):
        sound = A.make_sound(seed)
        caption = A.sound_caption(sound, seed)
        texts.add(caption.text)
        assert set(caption.text.split()) <= vocabulary, caption.text
        assert A.caption_matches_sound(caption, sound)
        assert caption.objects[0].position is None
    assert len(texts) > 120


def test_caption_matches_sound_agrees_with_the_paired_scene():
    rng = np.random.default_rng(3)
    sounds = [A.make_sound(i) for i in range(60)]
    captions = [A.sound_caption(s, i) for i, s in enumerate(sounds)]
    captions += [S.perturb_caption(c, rng) for c in captions]
    for sound in sounds:
        scene = A.sound_scene(sound, seed=7)
        for caption in captions:
            assert A.caption_matches_sound(caption, sound) == S.caption_matches(caption, scene)
    sine = clean(timbre="sine", pitch="low", noise="white")
    assert A.caption_matches_sound({"shape": "circle", "color": "orange"}, sine)
    assert A.caption_matches_sound({"timbre": "sine", "noise": "white"}, sine)
    assert not A.caption_matches_sound({"background": "gradient"}, sine)
    assert not A.caption_matches_sound({"pitch": "high"}, sine)
    with pytest.raises(ValueError, match="position"):
        A.caption_matches_sound(S.CaptionSpec(objects=(S.ObjectQuery(shape="circle", position="left"),)), sine)
    scene = A.sound_scene(sine, seed=1)
    assert (scene.objects[0].shape, scene.objects[0].color, scene.background) == ("circle", "orange", "white")


def test_write_wav_round_trips(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    sound = A.make_sound(5)
    data, rate = soundfile.read(str(A.write_wav(sound, tmp_path / "s.wav")), dtype="float32")
    assert rate == SR and np.abs(data - sound.samples).max() < 1 / 2**14


# The committed tower ---------------------------------------------------------------------------------------------

# The committed tower scores 0.998-1.000 on training.json's held-out figures and 1.000 on this check; the thresholds
# leave room for a retrain, far above chance (zero-shot 0.17-0.33, recall@10 0.10 among this check's 96).
ZERO_SHOT_THRESHOLD = 0.90
RECALL_AT_10_THRESHOLD = 0.85


@pytest.fixture(scope="module")
def audio_dir():
    from mmserve.models.clip import default_model_dir

    return default_model_dir() / "audio"


@pytest.fixture(scope="module")
def tower(audio_dir):
    pytest.importorskip("torch")
    from mmserve.models.sound_tower import load_sound_tower

    return load_sound_tower(audio_dir)


def test_committed_tower_loads_and_gives_unit_vectors_of_the_space_dimension(audio_dir, tower):
    import torch

    from mmserve.modalities import audio
    from mmserve.models.info import ModelInfo

    config = json.loads((audio_dir / "config.json").read_text())
    assert config["model_type"] == "mmserve-audio" and config["space"] == "main"
    dim = ModelInfo.from_dir(audio_dir.parent).embedding_dim
    assert config["embedding_dim"] == dim
    assert (audio_dir / "model.safetensors").stat().st_size < 5_000_000
    features_config = audio.AudioFeatureConfig.from_preprocessor_config(audio_dir)
    assert features_config.sample_rate == SR and features_config.frames == config["frames"]
    windows, _ = audio.split_windows(A.make_sound(9).samples, features_config)
    features = audio.log_mel(windows, features_config)
    with torch.no_grad():
        embedding = tower(torch.from_numpy(np.concatenate([features, features[:1] - 10.0])))
    assert embedding.shape == (len(windows) + 1, dim)
    np.testing.assert_allclose(embedding.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_committed_tower_retrieves_held_out_sounds_far_above_chance(audio_dir, tower):
    from mmserve.dev import audio_training
    from mmserve.modalities import audio

    space = audio_training.FrozenSpace(audio_dir.parent)
    config = audio.AudioFeatureConfig.from_preprocessor_config(audio_dir)
    # Every third combination (96 sounds, each pitch, timbre, rhythm and noise among them), from seeds past the
    # held-out set of training.json: a quick check on sounds neither training nor its evaluation saw.
    combinations = A.all_sound_attributes()[::3]
    heldout = audio_training.Heldout.build(space, config, 1, combinations=combinations, query_templates=1,
                                           start=10_000)
    report = heldout.evaluate(tower)
    for attribute, accuracy in report["zero_shot_accuracy"]["value"].items():
        assert accuracy >= ZERO_SHOT_THRESHOLD, (attribute, report["zero_shot_accuracy"])
    assert report["text_to_sound_all_four"]["recall@10"] >= RECALL_AT_10_THRESHOLD, report["text_to_sound_all_four"]
    assert report["sound_to_image_all_four"]["recall@10"] >= RECALL_AT_10_THRESHOLD, report["sound_to_image_all_four"]
