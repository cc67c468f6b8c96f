"""Generated sounds with known attributes, bound to the words of the synthetic image captions.

Every sound is one tone on a noise bed, 1 to 4 s at 16 kHz, with four attributes:

| attribute | values                                             | caption word (the binding)            |
|-----------|----------------------------------------------------|---------------------------------------|
| pitch     | very_low, low, mid_low, mid_high, high, very_high  | color: red, orange, yellow, green,    |
|           | (band centres 2/3 octave apart, 150 Hz-1.5 kHz)    | blue, purple (light's spectrum order) |
| timbre    | sine, square, sawtooth, bell                       | shape: circle, square, triangle, cross|
| rhythm    | continuous, slow (1.5-2.5 pulses/s), fast (5-8/s)  | size: large, medium, small            |
| noise     | none, white, pink, brown                           | background: black, white, gray, noisy |

The text tower has only ever read `synthetic`'s captions, so a sound is described in exactly
that vocabulary and grammar: a low sawtooth in fast pulses over pink noise is "a photo of a
small orange triangle on a gray background". Why this binding (measured on the bundled model,
`mmserve/models/default/audio/training.json` has the figures):

- Counts match one to one (6 pitches : 6 colors, 4 timbres : 4 shapes, 3 rhythms : 3 sizes,
  4 noises : 4 of the 5 backgrounds): each bound word names exactly one sound value, and
  every value of every sound attribute has its own word.
- Every caption attribute bound is one the bundled model reads reliably: zero-shot 1.00 for
  color, shape and size on the held-out images, 0.997 for background. Position is bound to
  nothing: a mono sound has none, so the paired image puts its object anywhere and a sound's
  captions never name a position.
- The background left out is "gradient": of the five, dropping it leaves the four whose class
  prompts are furthest apart in the text tower (largest pairwise cosine 0.51, against 0.56
  or more for any other choice of four).
- Each pairing is a mnemonic, so a person can query it: pitch follows light's frequency (red
  lowest, purple highest); a sine is round (circle), a square wave is a square, a sawtooth's
  teeth are triangles, a bell is a (church) cross; a continuous tone fills the most time
  (large), fast pulses are small pieces; silence is black, white noise is white, pink noise
  sits between white and brown as gray sits between white and black, and brown noise's slow
  random drift is the coarse blotches of the "noisy" background.

The paired image of a sound (`sound_scene`) draws the bound color, shape and size at a random
position on the bound background, so "a sine sound finds circles" holds in the generated data.

Every sound is unique and deterministic from its seed (`make_sound`): the exact frequency
(within +-0.2 octave of its band's centre, leaving a gap between bands), each overtone's level
(within about +-25% of the ideal wave's; a bell's upper partials' ratios within 1%), the
pulse rate and duty cycle, the onset (up to 0.2 s late), the duration, the noise level (3 to 15 dB below the
tone) and the peak level (-20 to -3 dBFS) are drawn from it, and every sound carries a faint
white floor (-75 dBFS) so that "none" is never digital silence.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from mmserve.dev import synthetic as S

SAMPLE_RATE = 16_000

PITCHES: tuple[str, ...] = ("very_low", "low", "mid_low", "mid_high", "high", "very_high")
# Band centres 2/3 octave apart; a sound's frequency stays within +-PITCH_JITTER_OCTAVES of its
# centre, so neighbouring bands never overlap (0.27 octave apart at the closest).
PITCH_CENTRES_HZ: dict[str, float] = {p: 150.0 * 2.0 ** (2 * k / 3) for k, p in enumerate(PITCHES)}
PITCH_JITTER_OCTAVES = 0.2
TIMBRES: tuple[str, ...] = ("sine", "square", "sawtooth", "bell")
# Partials of a bell (a free-free bar's modes): inharmonic, so no harmonic series explains them.
BELL_PARTIALS: tuple[tuple[float, float], ...] = ((1.0, 1.0), (2.756, 0.6), (5.404, 0.4), (8.933, 0.25))
RHYTHMS: tuple[str, ...] = ("continuous", "slow", "fast")
PULSE_RATES_HZ: dict[str, tuple[float, float]] = {"slow": (1.5, 2.5), "fast": (5.0, 8.0)}
NOISES: tuple[str, ...] = ("none", "white", "pink", "brown")
DURATION_SECONDS: tuple[float, float] = (1.0, 4.0)

SOUND_ATTRIBUTES: tuple[str, ...] = ("pitch", "timbre", "rhythm", "noise")
SOUND_ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "pitch": PITCHES,
    "timbre": TIMBRES,
    "rhythm": RHYTHMS,
    "noise": NOISES,
}

# The binding: sound attribute -> (caption attribute, sound value -> caption word).
BINDING: dict[str, tuple[str, dict[str, str]]] = {
    "pitch": ("color", dict(zip(PITCHES, ("red", "orange", "yellow", "green", "blue", "purple")))),
    "timbre": ("shape", dict(zip(TIMBRES, ("circle", "square", "triangle", "cross")))),
    "rhythm": ("size", dict(zip(RHYTHMS, ("large", "medium", "small")))),
    "noise": ("background", dict(zip(NOISES, ("black", "white", "gray", "noisy")))),
}
# Caption attribute -> sound attribute, and caption word -> sound value per caption attribute.
BOUND_TO: dict[str, str] = {caption: sound for sound, (caption, _) in BINDING.items()}
UNBINDING: dict[str, dict[str, str]] = {
    caption: {word: value for value, word in words.items()} for caption, words in BINDING.values()
}

# Seed ranges as in `synthetic`: training draws below HELDOUT_SEED_BASE.
HELDOUT_SEED_BASE = S.HELDOUT_SEED_BASE


@dataclasses.dataclass(frozen=True)
class SoundAttributes:
    pitch: str
    timbre: str
    rhythm: str
    noise: str

    def __post_init__(self) -> None:
        for name in SOUND_ATTRIBUTES:
            if getattr(self, name) not in SOUND_ATTRIBUTE_VALUES[name]:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; one of {SOUND_ATTRIBUTE_VALUES[name]}")

    def attribute(self, name: str) -> str:
        return str(getattr(self, name))

    def words(self) -> dict[str, str]:
        """The caption words of these attributes: {"color": ..., "shape": ..., "size": ..., "background": ...}."""
        return {caption: words[self.attribute(sound)] for sound, (caption, words) in BINDING.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class Sound:
    """A generated sound: its attributes, the jitter drawn for it, and its samples."""

    attributes: SoundAttributes
    frequency: float  # Hz, the fundamental (a bell's lowest partial)
    pulse_rate: float  # pulses per second; 0.0 for a continuous sound
    onset: float  # seconds of noise bed before the tone starts
    seed: int
    samples: np.ndarray  # float32 [n], mono, peak below 1
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def make_sound(seed: int) -> Sound:
    """The sound for `seed`, its attributes drawn uniformly."""
    rng = np.random.default_rng((seed, 0x50DD))
    attributes = SoundAttributes(*(values[rng.integers(len(values))] for values in SOUND_ATTRIBUTE_VALUES.values()))
    return sound_with(attributes, seed)


def sound_with(attributes: SoundAttributes, seed: int, *, duration: float | None = None) -> Sound:
    """A sound with chosen attributes; `seed` still drives every jitter (and the duration unless given)."""
    rng = np.random.default_rng((seed, 0x7A7E))
    if duration is None:
        duration = float(rng.uniform(*DURATION_SECONDS))
    n = round(duration * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    frequency = PITCH_CENTRES_HZ[attributes.pitch] * 2.0 ** rng.uniform(-PITCH_JITTER_OCTAVES, PITCH_JITTER_OCTAVES)
    tone = _tone(attributes.timbre, frequency, t, rng)
    onset = float(rng.uniform(0.0, 0.2))
    pulse_rate = 0.0
    if attributes.rhythm != "continuous":
        pulse_rate = float(rng.uniform(*PULSE_RATES_HZ[attributes.rhythm]))
    envelope = _envelope(t, onset, pulse_rate, rng)
    signal = tone * envelope
    if attributes.noise != "none":
        snr_db = rng.uniform(3.0, 15.0)  # against the tone's level while it sounds
        signal += _noise(attributes.noise, n, rng) * (_rms(tone) * 10.0 ** (-snr_db / 20.0))
    peak = 10.0 ** (rng.uniform(-20.0, -3.0) / 20.0)
    signal *= peak / max(float(np.abs(signal).max()), 1e-12)
    signal += rng.standard_normal(n) * 10.0 ** (-75.0 / 20.0)
    return Sound(attributes, float(frequency), pulse_rate, onset, seed, signal.astype(np.float32))


def _tone(timbre: str, frequency: float, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The tone at about unit level (the mix is scaled later), band-limited below 7.6 kHz: no aliasing."""
    phase = frequency * t + rng.uniform()
    if timbre == "bell":
        tone = np.zeros_like(t)
        for ideal_ratio, amplitude in BELL_PARTIALS:
            ratio = ideal_ratio * rng.uniform(0.99, 1.01) if ideal_ratio > 1 else 1.0
            if ratio * frequency < 7600.0:
                tone += amplitude * rng.uniform(0.8, 1.25) * np.sin(2 * math.pi * (ratio * phase + rng.uniform()))
        return tone
    # Harmonic timbres from one band-limited period (a wavetable), read at the tone's phase.
    table_size = 4096
    harmonics = int(7600.0 // frequency)
    spectrum = np.zeros(table_size // 2 + 1, dtype=np.complex128)
    for k in range(1, harmonics + 1):
        if timbre == "sine":
            amplitude = 1.0 if k == 1 else 0.0
        elif timbre == "square":
            amplitude = 1.0 / k if k % 2 else 0.0
        elif timbre == "sawtooth":
            amplitude = 1.0 / k
        else:
            raise ValueError(f"unknown timbre {timbre!r}")
        if k > 1:  # "-ish": each overtone within about +-25% of the ideal wave's
            amplitude *= rng.uniform(0.8, 1.25)
        spectrum[k] = -0.5j * amplitude * table_size  # sin(2 pi k x)
    table = np.fft.irfft(spectrum, n=table_size)
    position = (phase % 1.0) * table_size
    return np.interp(position, np.arange(table_size + 1), np.append(table, table[0]))


def _envelope(t: np.ndarray, onset: float, pulse_rate: float, rng: np.random.Generator) -> np.ndarray:
    gate = (t >= onset).astype(np.float64)
    if pulse_rate > 0:
        duty = rng.uniform(0.35, 0.6)
        gate *= ((pulse_rate * (t - onset)) % 1.0) < duty
    gate[-1] = 0.0  # off at the last sample, so the smoothing below (zeros past the end) ramps the tone out
    ramp = np.hanning(int(0.008 * SAMPLE_RATE) + 2)[1:-1]  # 8 ms edges: no clicks
    return np.convolve(gate, ramp / ramp.sum(), mode="same")


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise: white (flat), pink (-3 dB/octave) or brown (-6 dB/octave), none below 20 Hz."""
    if kind == "white":
        white = rng.standard_normal(n)
        return white / _rms(white)
    exponent = {"pink": 0.5, "brown": 1.0}.get(kind)
    if exponent is None:
        raise ValueError(f"unknown noise {kind!r}")
    size = 1 << (n - 1).bit_length()  # shaped at a power-of-two length (fast FFTs), then cut
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freqs = np.fft.rfftfreq(size, 1.0 / SAMPLE_RATE)
    spectrum *= np.where(freqs >= 20.0, np.maximum(freqs, 20.0) ** -exponent, 0.0)
    shaped = np.fft.irfft(spectrum, n=size)[:n]
    return shaped / _rms(shaped)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) or 1.0


# Captions and pairing ---------------------------------------------------------------


def sound_caption(
    sound: Sound | SoundAttributes, template_seed: int, *, attribute_rate: float = 0.6, full_rate: float = 0.3
) -> S.CaptionSpec:
    """A random true caption of `sound` in `synthetic`'s vocabulary, drawn from `template_seed`.

    As `synthetic.sample_caption`: with probability `full_rate` every bound attribute is named,
    otherwise each with probability `attribute_rate` (at least one); a random template. Position
    is never named.
    """
    rng = np.random.default_rng((template_seed, 0xCA9))
    words = _attributes_of(sound).words()
    full = rng.random() < full_rate
    named = [a for a in words if full or rng.random() < attribute_rate]
    if not named:
        named = [list(words)[rng.integers(len(words))]]
    return caption_naming({a: words[a] for a in named}, template=int(rng.integers(len(S._TEMPLATES))))


def caption_naming(words: Mapping[str, str], template: int = 0) -> S.CaptionSpec:
    """The caption naming exactly `words` ({"color": "red", "background": "gray", ...})."""
    unknown = set(words) - set(BOUND_TO)
    if unknown:
        raise ValueError(f"{sorted(unknown)} are not bound to a sound attribute; bound: {sorted(BOUND_TO)}")
    query = S.ObjectQuery(**{a: v for a, v in words.items() if a != "background"})
    return S.CaptionSpec(objects=(query,), background=words.get("background"), template=template)


def full_sound_caption(sound: Sound | SoundAttributes, template: int = 0) -> S.CaptionSpec:
    """The caption naming every bound attribute."""
    return caption_naming(_attributes_of(sound).words(), template)


def caption_matches_sound(caption: S.CaptionSpec | Mapping[str, str], sound: Sound | SoundAttributes) -> bool:
    """True when the sound has everything the caption (or attribute mapping) says.

    A mapping may use sound attributes ({"pitch": "low"}) or caption words ({"color": "orange"}).
    A caption names one object (a sound is one tone; two objects never match); a caption naming a
    position raises ValueError (no sound attribute is bound to position); a caption word no sound
    takes (the "gradient" background) matches nothing.
    """
    attributes = _attributes_of(sound)
    if isinstance(caption, S.CaptionSpec):
        if len(caption.objects) != 1:
            return False
        named = caption.objects[0].named()
        if "position" in named:
            raise ValueError("position is not bound to any sound attribute")
        if caption.background is not None:
            named["background"] = caption.background
        wanted: Mapping[str, str] = named
    else:
        wanted = caption
    for key, value in wanted.items():
        if key in SOUND_ATTRIBUTES:
            sound_attribute, sound_value = key, value
        elif key in BOUND_TO:
            sound_attribute = BOUND_TO[key]
            if value not in UNBINDING[key]:
                return False
            sound_value = UNBINDING[key][value]
        else:
            raise ValueError(f"{key!r} is neither a sound attribute nor a bound caption attribute")
        if attributes.attribute(sound_attribute) != sound_value:
            return False
    return True


def sound_scene(sound: Sound | SoundAttributes, seed: int, position: str | None = None) -> S.Scene:
    """The paired image's scene: the bound color, shape and size, at `position` (random from `seed` when None),
    on the bound background. `synthetic.match_matrix` then scores sound captions against sounds too."""
    words = _attributes_of(sound).words()
    if position is None:
        position = S.POSITIONS_LIST[np.random.default_rng((seed, 0x905)).integers(len(S.POSITIONS_LIST))]
    obj = S.SceneObject(words["color"], words["shape"], words["size"], position)
    return S.scene_with([obj], words["background"], seed)


def all_sound_attributes() -> list[SoundAttributes]:
    """Every combination (6 x 4 x 3 x 4 = 288)."""
    return [SoundAttributes(p, t, r, n) for p in PITCHES for t in TIMBRES for r in RHYTHMS for n in NOISES]


def training_sounds(start: int, count: int) -> Iterator[Sound]:
    if start + count > HELDOUT_SEED_BASE:
        raise ValueError("training seeds would run into the held-out range")
    for seed in range(start, start + count):
        yield make_sound(seed)


def heldout_sounds(
    per_combination: int, *, start: int = 0, combinations: Sequence[SoundAttributes] | None = None
) -> list[Sound]:
    """`per_combination` sounds of every attribute combination (or of `combinations`), from seeds training never
    draws.

    They use the seeds `HELDOUT_SEED_BASE + start` onwards, one per sound: a later `start` past those gives a
    disjoint set.
    """
    sounds = []
    seed = HELDOUT_SEED_BASE + start
    for attributes in all_sound_attributes() if combinations is None else combinations:
        for _ in range(per_combination):
            sounds.append(sound_with(attributes, seed))
            seed += 1
    return sounds


def _attributes_of(sound: Sound | SoundAttributes) -> SoundAttributes:
    return sound.attributes if isinstance(sound, Sound) else sound


def write_wav(sound: Sound, path: str | Path) -> Path:
    """16-bit PCM WAV of `sound`."""
    import soundfile

    path = Path(path)
    soundfile.write(str(path), sound.samples, sound.sample_rate, subtype="PCM_16")
    return path
