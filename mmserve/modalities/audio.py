"""Audio for an audio tower: encoded files -> mono waveform -> fixed windows -> log-mel features.

    waveform = decode_audio(data, 48000)                 # WAV, FLAC, Ogg Vorbis/Opus, MP3 -> float32 mono
    windows, times = split_windows(waveform, config)     # [W, 480000] and each window's (start, end) seconds
    features = log_mel(windows, config)                  # float32 [W, 1, 1001, 64], the tower's input

The features are CLAP's (`ClapFeatureExtractor` with `truncation="rand_trunc"`, `padding="repeatpad"`, see
REFERENCE.md): a centred STFT (periodic Hann, reflect padding, power 2), a Slaney mel filter bank and
10*log10 with a 1e-10 floor, computed here in float64 numpy exactly as the extractor does (tested to 1e-4 dB).
Where the extractor takes a random crop of a long input, `split_windows` cuts deterministic windows back to back
instead, so one item becomes several windows (`AudioModality` returns rows per window, each naming its item) and
an embedding never depends on chance.

Decoding is libsndfile's (the `soundfile` wheel), resampling soxr's at "VHQ". Each file's header is checked
against `AudioLimits` (duration, channels, rate) before any sample is read, and the samples are read in blocks,
downmixed and resampled block by block, so memory follows the mono output, not the file's channels or rate.

This module is on the serving path: numpy, soundfile and soxr only, no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import struct
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr

from mmserve.errors import ErrorCode, InvalidInputError, ItemError
from mmserve.modalities import Rows

PREPROCESSOR_FILE = "preprocessor_config.json"
MEL_SCALES = ("slaney", "htk", "kaldi")
# CLAP's truncation modes and the mel filters its extractor uses for each.
_TRUNCATION_MELS = {"rand_trunc": ("slaney", "slaney"), "fusion": ("htk", None)}
# The extractor's defaults for keys a preprocessor_config.json leaves out (not the checkpoints' values).
_EXTRACTOR_DEFAULTS: dict[str, Any] = {
    "feature_size": 64, "sampling_rate": 48000, "hop_length": 480, "max_length_s": 10, "fft_window_size": 1024,
    "frequency_min": 0.0, "frequency_max": 14000.0, "top_db": None, "truncation": "fusion", "padding": "repeatpad",
}
_MEL_FLOOR = 1e-10  # the extractor's mel_floor and power_to_db min_value: -100 dB
_WINDOWS_PER_FFT = 4  # windows per rfft call: about 65 MB of float64 frames each time
MIN_TAIL_SECONDS = 1.0  # a shorter tail after a full window is dropped: mostly repeat padding, little signal


@dataclasses.dataclass(frozen=True)
class AudioFeatureConfig:
    """How a waveform becomes the audio tower's features; the defaults are the unfused CLAP checkpoints'."""

    sample_rate: int = 48000  # Hz; CLAP takes 48 kHz only
    window_seconds: float = 10.0  # one window of the tower (CLAP's max_length_s)
    n_fft: int = 1024  # STFT frame and FFT size (fft_window_size)
    hop_length: int = 480
    n_mels: int = 64  # mel bins (feature_size)
    f_min: float = 50.0
    f_max: float = 14000.0
    mel_scale: str = "slaney"  # "slaney" (CLAP's rand_trunc), "htk" (its fusion), "kaldi"
    mel_norm: str | None = "slaney"  # "slaney": area normalisation; None: peak 1
    top_db: float | None = None  # dynamic range clip below each window's peak; CLAP uses none

    def __post_init__(self) -> None:
        if self.mel_scale not in MEL_SCALES:
            raise ValueError(f"mel_scale must be one of {MEL_SCALES}, got {self.mel_scale!r}")
        if self.mel_norm not in (None, "slaney"):
            raise ValueError(f"mel_norm must be None or 'slaney', got {self.mel_norm!r}")
        if min(self.sample_rate, self.n_fft, self.hop_length, self.n_mels) <= 0 or self.window_seconds <= 0:
            raise ValueError(f"sizes and rates must be positive: {self}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {self.f_min}, {self.f_max}")
        if self.window_samples <= self.n_fft // 2:
            raise ValueError(f"a window of {self.window_samples} samples is too short for n_fft {self.n_fft}")

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    @property
    def frames(self) -> int:
        """STFT frames per window (centred): 1001 for CLAP."""
        return self.window_samples // self.hop_length + 1

    @classmethod
    def from_preprocessor_config(cls, source: Mapping[str, Any] | str | Path) -> AudioFeatureConfig:
        """The config a `ClapFeatureExtractor` `preprocessor_config.json` describes (a dict, the file, or the
        directory holding it); keys it leaves out take the extractor's own defaults, as transformers would."""
        if isinstance(source, Mapping):
            values = dict(source)
        else:
            path = Path(source)
            path = path / PREPROCESSOR_FILE if path.is_dir() else path
            values = json.loads(path.read_text())
        kind = values.get("feature_extractor_type", "ClapFeatureExtractor")
        if kind != "ClapFeatureExtractor":
            raise ValueError(f"feature_extractor_type {kind!r} is not supported; mmserve computes "
                             "ClapFeatureExtractor's features")
        values = {**_EXTRACTOR_DEFAULTS, **{key: value for key, value in values.items() if value is not None or
                                            key == "top_db"}}
        truncation, padding = values["truncation"], values["padding"]
        if truncation not in _TRUNCATION_MELS:
            raise ValueError(f"truncation {truncation!r} is not one of CLAP's {tuple(_TRUNCATION_MELS)}")
        if padding != "repeatpad":
            raise ValueError(f"padding {padding!r} is not supported; mmserve pads short audio as CLAP does "
                             "('repeatpad')")
        mel_scale, mel_norm = _TRUNCATION_MELS[truncation]
        return cls(
            sample_rate=int(values["sampling_rate"]),
            window_seconds=float(values["max_length_s"]),
            n_fft=int(values["fft_window_size"]),
            hop_length=int(values["hop_length"]),
            n_mels=int(values["feature_size"]),
            f_min=float(values["frequency_min"]),
            f_max=float(values["frequency_max"]),
            mel_scale=mel_scale,
            mel_norm=mel_norm,
            top_db=None if values["top_db"] is None else float(values["top_db"]),
        )

    def to_preprocessor_config(self, directory: str | Path | None = None) -> dict[str, Any]:
        """The `preprocessor_config.json` of this config, as `ClapFeatureExtractor.from_pretrained` loads it
        (written into `directory` when given)."""
        truncation = next((name for name, mels in _TRUNCATION_MELS.items() if mels == (self.mel_scale,
                                                                                        self.mel_norm)), None)
        if truncation is None:
            raise ValueError(f"ClapFeatureExtractor has no mode with mel scale {self.mel_scale!r} and norm "
                             f"{self.mel_norm!r}")
        seconds = self.window_seconds
        config = {
            "feature_extractor_type": "ClapFeatureExtractor",
            "feature_size": self.n_mels,
            "sampling_rate": self.sample_rate,
            "hop_length": self.hop_length,
            # An integer where it is one: the extractor multiplies it into a sample count it pads with.
            "max_length_s": int(seconds) if float(seconds).is_integer() else seconds,
            "fft_window_size": self.n_fft,
            "frequency_min": self.f_min,
            "frequency_max": self.f_max,
            "top_db": self.top_db,
            "truncation": truncation,
            "padding": "repeatpad",
            "padding_value": 0.0,
            "padding_side": "right",
            "return_attention_mask": False,
        }
        if directory is not None:
            (Path(directory) / PREPROCESSOR_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return config


def log_mel(windows: np.ndarray, config: AudioFeatureConfig = AudioFeatureConfig()) -> np.ndarray:
    """float32 `[W, 1, frames, n_mels]` log-mel features (dB) of `W` windows of `config.window_samples`, exactly
    what `ClapFeatureExtractor` puts in `input_features` for each window as one input (pad them with
    `split_windows` first)."""
    windows = np.asarray(windows)
    if windows.dtype not in (np.float32, np.float64):
        raise TypeError(f"windows must be float32 (or float64), got {windows.dtype}")
    if windows.ndim != 2 or windows.shape[1] != config.window_samples:
        raise ValueError(f"windows must be [W, {config.window_samples}], got {list(windows.shape)}")
    hann, filters = _analysis(config)
    half = config.n_fft // 2
    out = np.empty((len(windows), 1, config.frames, config.n_mels), dtype=np.float32)
    for start in range(0, len(windows), _WINDOWS_PER_FFT):
        block = windows[start:start + _WINDOWS_PER_FFT].astype(np.float64)
        padded = np.pad(block, ((0, 0), (half, half)), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, config.n_fft, axis=1)[:, ::config.hop_length]
        spectrum = np.fft.rfft(frames * hann, axis=-1)
        power = np.square(spectrum.real)
        power += np.square(spectrum.imag)
        mel = np.maximum(power @ filters, _MEL_FLOOR)
        decibels = 10.0 * np.log10(mel)
        if config.top_db is not None:
            decibels = np.maximum(decibels, decibels.max(axis=(1, 2), keepdims=True) - config.top_db)
        out[start:start + len(block), 0] = decibels
    return out


@functools.lru_cache(maxsize=8)
def _analysis(config: AudioFeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """The periodic Hann window and the mel filter bank `[n_fft // 2 + 1, n_mels]` (float64, read-only)."""
    hann = np.hanning(config.n_fft + 1)[:-1]
    filters = _mel_filter_bank(config)
    hann.flags.writeable = filters.flags.writeable = False
    return hann, filters


def _mel_filter_bank(config: AudioFeatureConfig) -> np.ndarray:
    """Triangular filters between mel-spaced centres on the FFT bins, as transformers' `mel_filter_bank` builds
    them (its arithmetic, so the bank is the extractor's to the last bit)."""
    bins = config.n_fft // 2 + 1
    mels = np.linspace(_hertz_to_mel(config.f_min, config.mel_scale), _hertz_to_mel(config.f_max, config.mel_scale),
                       config.n_mels + 2)
    centres = _mel_to_hertz(mels, config.mel_scale)
    # The extractor's bin frequencies: 0 to sample_rate // 2 (integer division, as it writes it).
    fft_freqs = np.linspace(0, config.sample_rate // 2, bins)
    widths = np.diff(centres)
    slopes = centres[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(np.zeros(1), np.minimum(down, up))
    if config.mel_norm == "slaney":
        filters *= (2.0 / (centres[2:config.n_mels + 2] - centres[:config.n_mels]))[None, :]
    return filters


def _hertz_to_mel(freq: float, scale: str) -> float:
    if scale == "htk":
        return float(2595.0 * np.log10(1.0 + freq / 700.0))
    if scale == "kaldi":
        return float(1127.0 * np.log(1.0 + freq / 700.0))
    if freq >= 1000.0:  # Slaney: linear below 1 kHz, logarithmic above
        return float(15.0 + np.log(freq / 1000.0) * (27.0 / np.log(6.4)))
    return 3.0 * freq / 200.0


def _mel_to_hertz(mels: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 700.0 * (np.power(10, mels / 2595.0) - 1.0)
    if scale == "kaldi":
        return 700.0 * (np.exp(mels / 1127.0) - 1.0)
    freq = 200.0 * mels / 3.0
    log_region = mels >= 15.0
    freq[log_region] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels[log_region] - 15.0))
    return freq


def split_windows(waveform: np.ndarray, config: AudioFeatureConfig = AudioFeatureConfig()
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic tower windows of a mono waveform at `config.sample_rate`: float32 `[W, window_samples]` and
    float64 `[W, 2]`, each window's real (unpadded) span in seconds.

    Every full window back to back, then the tail, repeat-padded as CLAP's "repeatpad" pads a short input (the
    tail repeated int(window / length) times, then zeros). A tail under `MIN_TAIL_SECONDS` after a full window is
    dropped; an input shorter than one window is its one padded window."""
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"waveform must be mono [n], got {list(waveform.shape)}")
    if len(waveform) == 0:
        raise ValueError("an empty waveform has no windows")
    size, total = config.window_samples, len(waveform)
    full = total // size
    tail = total - full * size
    keep_tail = tail > 0 and (full == 0 or tail >= MIN_TAIL_SECONDS * config.sample_rate)
    windows = np.zeros((full + int(keep_tail), size), dtype=np.float32)
    windows[:full] = waveform[:full * size].reshape(full, size)
    if keep_tail:
        piece = waveform[full * size:]
        repeated = np.tile(piece, int(size / len(piece)))  # the extractor's own expression for the count
        windows[full, :len(repeated)] = repeated
    starts = np.arange(len(windows), dtype=np.float64) * size
    ends = np.minimum(starts + size, total)
    return windows, np.stack([starts, ends], axis=1) / config.sample_rate


@dataclasses.dataclass(frozen=True)
class AudioLimits:
    """Per-file limits, checked against the header before any sample is read."""

    max_encoded_bytes: int = 64 * 1024 * 1024  # 64 MiB encoded
    max_seconds: float = 3600.0  # 1 h of audio (about 690 MB of float32 at 48 kHz, and 360 tower windows)
    max_channels: int = 8  # 7.1
    max_sample_rate: int = 384000  # the highest rate studio gear records


SUPPORTED_FORMATS = "WAV, FLAC, Ogg Vorbis, Ogg Opus, MP3"
# libsndfile's names of the major formats served (it reads more; those stay refused).
_SOUNDFILE_FORMATS = {"WAV": "WAV", "WAVEX": "WAV", "RF64": "WAV", "FLAC": "FLAC", "OGG": "Ogg", "MP3": "MP3"}
_OGG_CODECS = {"VORBIS": "Ogg Vorbis", "OPUS": "Ogg Opus"}
# Signatures of formats that are not served, so the refusal can name them.
_KNOWN_UNSUPPORTED = (
    (4, b"ftyp", "MP4/M4A (AAC, ALAC)"),
    (0, b"\x1a\x45\xdf\xa3", "WebM/Matroska"),
    (0, b"FORM", "AIFF"),
    (0, b"caff", "CAF"),
    (0, b".snd", "AU"),
    (0, b"#!AMR", "AMR"),
    (0, b"wvpk", "WavPack"),
    (0, b"MAC ", "Monkey's Audio"),
    (0, b"MThd", "MIDI"),
)
_BLOCK_FRAMES = 1 << 16
_UNKNOWN_FRAMES = 1 << 62  # libsndfile's count when a stream's length is unknown (SF_COUNT_MAX)
_MP3_FRAME_SAMPLES = 1152  # an MPEG-1 Layer III frame
_MAX_RIFF_CHUNKS = 64
_MAX_OGG_PAGE = 27 + 255 + 255 * 255  # header, 255 lacing values, 255 segments of 255 bytes


def decode_audio(data: bytes, sample_rate: int, limits: AudioLimits = AudioLimits()) -> np.ndarray:
    """float32 mono samples at `sample_rate` of one encoded file (WAV, FLAC, Ogg Vorbis/Opus, MP3).

    Channels are averaged; another rate is resampled with soxr ("VHQ"). Raises `InvalidInputError` (a ValueError)
    with the code of the refusal: `empty`, `too_large` (a limit of `limits`), `unsupported_format`, `invalid` (a
    header libsndfile cannot read, non-finite samples), `corrupt` (damaged or truncated data)."""
    if not data:
        raise _refused(ErrorCode.EMPTY, "empty input (0 bytes)")
    if len(data) > limits.max_encoded_bytes:
        raise _refused(ErrorCode.TOO_LARGE, f"encoded audio of {len(data)} bytes exceeds the limit of "
                                            f"{limits.max_encoded_bytes} bytes (max_audio_bytes)")
    container = _container(data)
    if container == "WAV":
        _check_riff(data)
    elif container == "Ogg":
        _check_ogg_end(data)
    try:
        sound = soundfile.SoundFile(io.BytesIO(data))
    except soundfile.SoundFileError as error:
        raise _refused(ErrorCode.INVALID, f"invalid {container}: {_libsndfile_reason(error)}") from error
    with sound:
        name = _check_header(sound, limits)
        waveform, read = _read_mono(sound, name, sample_rate, limits)
        declared = sound.frames
    if read == 0:
        raise _refused(ErrorCode.EMPTY, f"{name} audio has no samples")
    # An MP3's count may be libsndfile's estimate from the bit rate, a little over the real one (its issue #1001).
    slack = _MP3_FRAME_SAMPLES + declared // 100 if name == "MP3" else 0
    if declared < _UNKNOWN_FRAMES and read + slack < declared:
        raise _refused(ErrorCode.CORRUPT, f"incomplete {name}: its header declares {declared} samples "
                                          f"({_duration(declared / sound.samplerate)}), the decoder got {read} "
                                          "(truncated or damaged data)")
    if not np.isfinite(waveform).all():
        raise _refused(ErrorCode.INVALID, f"{name} audio has non-finite samples (NaN or infinity)")
    return waveform


def _container(data: bytes) -> str:
    """The served container the bytes start as, or the refusal (named when the format is known)."""
    head = data[:12]
    if head[8:12] == b"WAVE" and head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64"):
        return "WAV"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "Ogg"
    if head[:3] == b"ID3" or _mpeg_audio_sync(head):
        return "MP3"
    for offset, signature, name in _KNOWN_UNSUPPORTED:
        if head[offset:offset + len(signature)] == signature:
            raise _refused(ErrorCode.UNSUPPORTED_FORMAT, f"unsupported format: {name} (supported: "
                                                         f"{SUPPORTED_FORMATS})")
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        raise _refused(ErrorCode.UNSUPPORTED_FORMAT, f"unsupported format: AAC (ADTS) (supported: "
                                                     f"{SUPPORTED_FORMATS})")
    raise _refused(ErrorCode.UNSUPPORTED_FORMAT, "unsupported format: not a WAV, FLAC, Ogg (Vorbis, Opus) or MP3 "
                                                 "file")


def _mpeg_audio_sync(head: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, then a layer other than 0 (which is AAC's ADTS)."""
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and (head[1] >> 1) & 3 != 0


def _check_riff(data: bytes) -> None:
    """Refuse a WAV whose data chunk runs past the end of the bytes (libsndfile would silently read less). Real
    files put it within the first few chunks; past `_MAX_RIFF_CHUNKS`, libsndfile's own parsing decides."""
    order = ">I" if data[:4] == b"RIFX" else "<I"
    offset = 12
    for _ in range(_MAX_RIFF_CHUNKS):
        if offset + 8 > len(data):
            return
        chunk, (size,) = data[offset:offset + 4], struct.unpack(order, data[offset + 4:offset + 8])
        if chunk == b"data":
            # 0 and 0xFFFFFFFF: a streamed WAV's unknown size, or RF64's (the real one is in its ds64 chunk).
            if size not in (0, 0xFFFFFFFF) and offset + 8 + size > len(data):
                raise _refused(ErrorCode.CORRUPT, f"truncated WAV: its data chunk declares {size} bytes, "
                                                  f"{len(data) - offset - 8} are present")
            return
        offset += 8 + size + (size & 1)


def _check_ogg_end(data: bytes) -> None:
    """Refuse an Ogg file that does not end with a whole end-of-stream page: a cut Ogg file otherwise reads as
    empty (Vorbis) or as a malformed header (Opus) in libsndfile. Only the tail is searched (a page is at most
    65307 bytes), and a page found there must end exactly at the last byte, so an "OggS" inside packet data
    cannot pass for the last page."""
    position = data.find(b"OggS", max(0, len(data) - _MAX_OGG_PAGE))
    while position >= 0:
        if _ogg_page_end(data, position) == len(data) and data[position + 5] & 0x04:
            return
        position = data.find(b"OggS", position + 1)
    raise _refused(ErrorCode.CORRUPT, "truncated Ogg: the data does not end with a whole end-of-stream page")


def _ogg_page_end(data: bytes, start: int) -> int:
    """Where the Ogg page at `start` ends (-1 when its header runs past the data)."""
    segments_end = start + 27 + (data[start + 26] if start + 27 <= len(data) else 0)
    if start + 27 > len(data) or segments_end > len(data):
        return -1
    return segments_end + sum(data[start + 27:segments_end])


def _libsndfile_reason(error: Exception) -> str:
    reason = str(getattr(error, "error_string", "") or error).strip().rstrip(".").removeprefix("Error : ")
    if "not a regular file" in reason:  # what libsndfile's MP3 reader says of a stream with no frame in it
        return "no decodable MPEG audio frames"
    return reason


def _check_header(sound: Any, limits: AudioLimits) -> str:
    """The format's name, once the header is within the limits (before any sample is read)."""
    name = _SOUNDFILE_FORMATS.get(sound.format)
    if name is None:
        raise _refused(ErrorCode.UNSUPPORTED_FORMAT, f"unsupported format: {sound.format_info} (supported: "
                                                     f"{SUPPORTED_FORMATS})")
    if name == "Ogg":
        name = _OGG_CODECS.get(sound.subtype, "")
        if not name:
            raise _refused(ErrorCode.UNSUPPORTED_FORMAT, f"unsupported format: Ogg {sound.subtype_info} "
                                                         f"(supported: {SUPPORTED_FORMATS})")
    if sound.channels < 1 or sound.samplerate < 1:
        raise _refused(ErrorCode.INVALID, f"invalid {name}: {sound.channels} channels at {sound.samplerate} Hz")
    if sound.channels > limits.max_channels:
        raise _refused(ErrorCode.TOO_LARGE, f"audio has {sound.channels} channels; the limit is "
                                            f"{limits.max_channels} (max_audio_channels)")
    if sound.samplerate > limits.max_sample_rate:
        raise _refused(ErrorCode.TOO_LARGE, f"audio is sampled at {sound.samplerate} Hz; the limit is "
                                            f"{limits.max_sample_rate} Hz (max_audio_sample_rate)")
    if _UNKNOWN_FRAMES > sound.frames > limits.max_seconds * sound.samplerate:
        raise _too_long(_duration(sound.frames / sound.samplerate), limits)
    return name


def _read_mono(sound: Any, name: str, sample_rate: int, limits: AudioLimits) -> tuple[np.ndarray, int]:
    """The samples, downmixed and resampled block by block, and how many frames the file gave."""
    resampler = (None if sound.samplerate == sample_rate else
                 soxr.ResampleStream(sound.samplerate, sample_rate, 1, dtype="float32", quality="VHQ"))
    most = int(limits.max_seconds * sound.samplerate)
    block = np.empty((_BLOCK_FRAMES, sound.channels), dtype=np.float32)
    pieces, read = [], 0
    while True:
        try:
            samples = block[:_read_frames(sound, block)]
        except soundfile.SoundFileError as error:
            raise _refused(ErrorCode.CORRUPT, f"corrupt {name}: {_libsndfile_reason(error)}") from error
        if len(samples) == 0:
            break
        read += len(samples)
        if read > most:  # a header that understated the length (or an MP3 with none)
            raise _too_long(f"over {_duration(limits.max_seconds)}", limits)
        mono = samples.mean(axis=1, dtype=np.float32) if sound.channels > 1 else samples[:, 0].copy()
        pieces.append(mono if resampler is None else resampler.resample_chunk(mono))
    if resampler is not None:
        pieces.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    waveform = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return waveform, read


def _read_frames(sound: Any, out: np.ndarray) -> int:
    """libsndfile's `sf_readf_float` into `out` (C-contiguous `[frames, channels]`): the frames it gave.

    Not `SoundFile.read`: after each read it seeks to where the read ended, and libsndfile 1.2's MP3 seek
    restarts the decoder from an approximate position, so every block after the first would start with
    silence and shifted samples."""
    frames = soundfile._snd.sf_readf_float(sound._file, soundfile._ffi.cast("float *", out.ctypes.data), len(out))
    code = soundfile._snd.sf_error(sound._file)
    if code:
        raise soundfile.LibsndfileError(code)
    return int(frames)


def _too_long(duration: str, limits: AudioLimits) -> InvalidInputError:
    return _refused(ErrorCode.TOO_LARGE, f"audio is {duration} long; the limit is {_duration(limits.max_seconds)} "
                                         "(max_audio_seconds)")


def _duration(seconds: float) -> str:
    """A length as people say it: "2 h 10 min", "4 min 12 s", "3.7 s"."""
    if seconds >= 3600:
        hours, minutes = divmod(int(seconds // 60), 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if seconds >= 60:
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    return f"{seconds:.1f} s"


def _refused(code: ErrorCode, message: str) -> InvalidInputError:
    return InvalidInputError(message, code=code, errors=[ItemError(None, code, message)])


class AudioModality:
    """Audio for an audio tower (the `Modality` interface), segmented: one item becomes one or more windows.

    `decode` returns rows per window: `features` float32 `[S, 1, frames, n_mels]`, `item` int64 `[S]` (the item
    each window belongs to, in order) and `times` float64 `[S, 2]` (its start and end in seconds); a refused item
    has no rows. Items decode on a small thread pool (libsndfile, soxr and numpy release the GIL)."""

    kind, encoded_input = "audio", "audio"
    tensor_inputs: tuple[str, ...] = ("features",)

    def __init__(self, config: AudioFeatureConfig = AudioFeatureConfig(), *, limits: AudioLimits = AudioLimits(),
                 threads: int = 0) -> None:
        self.config = config
        self.limits = limits
        self.shape = (1, config.frames, config.n_mels)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.threads = threads or min(4, cores)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="mmserve-audio")

    def decode(self, items: Sequence[bytes]) -> tuple[Rows, list[ItemError]]:
        outcomes = list(self._pool.map(self._windows, range(len(items)), items))
        errors = [outcome for outcome in outcomes if isinstance(outcome, ItemError)]
        kept = [(index, outcome) for index, outcome in enumerate(outcomes) if not isinstance(outcome, ItemError)]
        if not kept:
            return self._no_rows(), errors
        return {
            "features": np.concatenate([features for _, (features, _) in kept]),
            "item": np.concatenate([np.full(len(times), index, dtype=np.int64) for index, (_, times) in kept]),
            "times": np.concatenate([times for _, (_, times) in kept]),
        }, errors

    def _windows(self, index: int, item: object) -> tuple[np.ndarray, np.ndarray] | ItemError:
        """One item's features and window times, or why it is refused."""
        if not isinstance(item, (bytes, bytearray, memoryview)):
            return ItemError(index, ErrorCode.WRONG_TYPE, f"expected encoded audio bytes, got {type(item).__name__}")
        try:
            waveform = decode_audio(bytes(item), self.config.sample_rate, self.limits)
            windows, times = split_windows(waveform, self.config)
            return log_mel(windows, self.config), times
        except InvalidInputError as error:
            return ItemError(index, error.code or ErrorCode.INVALID, str(error))
        except Exception as error:  # noqa: BLE001 - a file a decoder trips over fails alone, never the batch
            return ItemError(index, ErrorCode.CORRUPT, f"cannot decode the sound ({type(error).__name__}: {error})")

    def _no_rows(self) -> Rows:
        return {"features": np.zeros((0, *self.shape), dtype=np.float32), "item": np.zeros(0, dtype=np.int64),
                "times": np.zeros((0, 2), dtype=np.float64)}

    def accept(self, tensors: Mapping[str, np.ndarray]) -> tuple[Rows, list[ItemError]]:
        """Tower-ready features `[N, 1, frames, n_mels]` float32: one window per item, spanning a whole window."""
        features = tensors["features"]
        if features.dtype != np.float32 or features.ndim != 4 or features.shape[1:] != self.shape:
            expected = ", ".join(map(str, self.shape))
            return {}, [ItemError(None, ErrorCode.INVALID, f"features must be float32 [N, {expected}], got "
                                                           f"{features.dtype} {list(features.shape)}")]
        bad = ~np.isfinite(features).reshape(len(features), -1).all(axis=1)
        errors = [ItemError(int(row), ErrorCode.INVALID, "features have non-finite values (NaN or infinity)")
                  for row in np.flatnonzero(bad)]
        if errors:
            return {}, errors
        times = np.zeros((len(features), 2), dtype=np.float64)
        times[:, 1] = self.config.window_seconds
        return {"features": features, "item": np.arange(len(features), dtype=np.int64), "times": times}, []

    def batch(self, parts: Sequence[Rows]) -> np.ndarray:
        arrays = [part["features"] for part in parts]
        return np.ascontiguousarray(arrays[0] if len(arrays) == 1 else np.concatenate(arrays))

    def warm_up_batches(self, max_batch_size: int) -> list[np.ndarray]:
        return [np.zeros((size, *self.shape), dtype=np.float32) for size in sorted({1, max_batch_size})]
