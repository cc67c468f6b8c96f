"""Audio decoding, features and embedding throughput, as ratios against the obvious PyAV + transformers pipeline
measured in the same run.

Sounds are generated here: speech-like syllables (a gliding voiced pitch with formant-like harmonics, noise
bursts for consonants, pauses), coloured noise under a slow swell, and music-like chords (triads with overtones,
a new chord every beat), in stereo, written by soundfile as WAV (44.1 kHz, 16 bit), FLAC (44.1 kHz), Ogg Opus
(48 kHz: Opus takes no 44.1 kHz) and MP3 (44.1 kHz). Both pipelines cut the same 10 s windows (CLAP's), so both
give the tower the same rows.

  (a) per file, one thread: decode + resample to 48 kHz mono, then + features
      obvious             PyAV decode, `av.AudioResampler` to 48 kHz mono float, then 10 s windows through
                          transformers' ClapFeatureExtractor (truncation="rand_trunc", padding="repeatpad")
      mmserve             `decode_audio` (libsndfile, soxr VHQ), then `split_windows` + `log_mel` (numpy)
  (b) end to end: a sound's vector, on a full-size HTSAT-unfused CLAP with random weights (laion/clap-htsat-unfused's
      sizes: transformers' ClapAudioConfig and ClapTextConfig defaults; kept in --cache-dir with its export)
      obvious (torch)     (a) obvious, then ClapModel.get_audio_features (torch, fp32, on the faster of 1 thread
                          and all cores), the mean over windows
      mmserve             `LocalEmbedder.embed_audio` (ONNX towers on OpenVINO, the Triton models' code)
  features alone: windows per second of log_mel (in its blocks of 4 windows, and one window a call) against
      ClapFeatureExtractor, and the share of (b)'s time log_mel takes in mmserve: whether C++ features would matter.

Rates are audio seconds per second; each figure is the median of --rounds rounds, the order of the cases turning
every round (the host is shared and noisy).

    python bench/bench_audio.py [--sounds speech:5,noise:20,music:60] [--formats wav,flac,opus,mp3] [--rounds 5]
                                [--skip-embed] [--cache-dir DIR] [--update BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmserve.cpu import cpu_features  # noqa: E402

# format -> (soundfile format, subtype, sample rate, label)
FORMATS = {
    "wav": ("WAV", "PCM_16", 44100, "WAV 44.1 kHz 16-bit"),
    "flac": ("FLAC", "PCM_16", 44100, "FLAC 44.1 kHz"),
    "opus": ("OGG", "OPUS", 48000, "Ogg Opus 48 kHz"),
    "mp3": ("MP3", "MPEG_LAYER_III", 44100, "MP3 44.1 kHz"),
}
KINDS = ("speech", "noise", "music")
START, END = "<!-- audio: bench/bench_audio.py -->", "<!-- /audio -->"


def speech(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Syllables of 120-300 ms: a voiced tone gliding around 90-250 Hz with formant-like harmonic weights, a
    noise burst before some of them, and pauses between words."""
    out = np.zeros(int(seconds * rate))
    position = 0
    while position < len(out):
        length = int(rng.uniform(0.12, 0.3) * rate)
        t = np.arange(length) / rate
        pitch = rng.uniform(90, 250) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(pitch) / rate
        formants = rng.uniform(300, 3000, 3)
        voiced = sum(np.exp(-((k * pitch.mean() - formants[:, None]) / 250.0) ** 2).sum() * np.sin(k * phase)
                     for k in range(1, 16))
        envelope = np.sin(np.pi * np.arange(length) / length) ** 0.5
        syllable = 0.3 * voiced * envelope / 3
        if rng.random() < 0.4:  # a consonant: a short high-passed noise burst first
            burst = np.diff(rng.standard_normal(int(0.05 * rate) + 1)) * 0.1
            syllable[: len(burst)] += burst
        end = min(len(out), position + length)
        out[position:end] = syllable[: end - position]
        position = end + int((rng.uniform(0.2, 0.5) if rng.random() < 0.2 else rng.uniform(0.0, 0.05)) * rate)
    return out


def noise(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Pink-ish noise (white through a one-pole low-pass mixed with itself) under a slow swell."""
    white = rng.standard_normal(int(seconds * rate))
    brown = np.cumsum(white)
    brown -= np.convolve(brown, np.ones(4410) / 4410, mode="same")  # keep it from wandering off
    mixed = 0.05 * white + 0.02 * brown / (np.abs(brown).max() + 1e-9) * 10
    t = np.arange(len(white)) / rate
    return 0.5 * mixed * (0.6 + 0.4 * np.sin(2 * np.pi * 0.1 * t))


def music(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A chord a beat (0.4-0.8 s): a major or minor triad over a bass note, five overtones each, decaying."""
    out = np.zeros(int(seconds * rate))
    beat = int(rng.uniform(0.4, 0.8) * rate)
    for start in range(0, len(out), beat):
        root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
        third = 4 if rng.random() < 0.5 else 3
        notes = [root / 2, root, root * 2 ** (third / 12), root * 2 ** (7 / 12), root * 2]
        length = min(beat, len(out) - start)
        t = np.arange(length) / rate
        chord = sum(np.sin(2 * np.pi * k * f * t) / k ** 1.5 for f in notes for k in range(1, 6))
        out[start : start + length] = 0.08 * chord * np.exp(-3.0 * t) * np.minimum(1.0, t / 0.01)
    return out


def sound_file(kind: str, seconds: float, name: str, seed: int) -> bytes:
    import soundfile

    sf_format, subtype, rate, _ = FORMATS[name]
    rng = np.random.default_rng(seed)
    mono = {"speech": speech, "noise": noise, "music": music}[kind](seconds, rate, rng)
    delay = int(0.0007 * rate)  # stereo: the right channel a little later and quieter, as a room gives
    stereo = np.stack([mono, 0.8 * np.concatenate([np.zeros(delay), mono[:-delay]])], axis=1)
    stereo = np.clip(stereo / max(1.0, np.abs(stereo).max() / 0.9), -1, 1).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, stereo, rate, format=sf_format, subtype=subtype)
    return buffer.getvalue()


def obvious_waveform(data: bytes, rate: int) -> np.ndarray:
    """PyAV: decode, resample to `rate` mono float, concatenate."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    pieces = []
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(audio=0):
            pieces.extend(out.to_ndarray()[0] for out in resampler.resample(frame))
        pieces.extend(out.to_ndarray()[0] for out in resampler.resample(None))
    return np.concatenate(pieces)


def obvious_windows(waveform: np.ndarray, size: int, rate: int) -> list[np.ndarray]:
    """10 s pieces back to back; a tail under a second after a full window dropped (as mmserve does)."""
    pieces = [waveform[i : i + size] for i in range(0, len(waveform), size)]
    if len(pieces) > 1 and len(pieces[-1]) < rate:
        pieces.pop()
    return pieces


def fastest_torch_threads(forward) -> int:
    """Give torch the faster of one thread and all cores for `forward`: on a shared host, OpenMP's threads stall
    whenever a core is busy elsewhere, and all cores can run several times slower than one."""
    import torch

    times = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            forward()
            times[threads] = min(timed(forward) for _ in range(2))
    fastest = min(times, key=times.__getitem__)
    torch.set_num_threads(fastest)
    return fastest


def cpu_seconds() -> tuple[float, float] | None:
    """(busy seconds of all the host's cores, of this process and its children) so far; None off Linux."""
    import resource

    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait
    own = sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for field in ("ru_utime", "ru_stime"))
    return busy, own


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def real_size_clap(directory: Path) -> Path:
    """A random-weight ClapModel at laion/clap-htsat-unfused's sizes (the config classes' defaults), kept."""
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    from mmserve.dev.checkpoints import TINY_CLAP_AUDIO, TINY_CLAP_TEXT, write_random_clap

    if (directory / "config.json").exists():
        return directory
    audio_defaults, text_defaults = ClapAudioConfig().to_dict(), ClapTextConfig().to_dict()
    audio = {key: list(value) if isinstance(value, tuple) else value for key, value in audio_defaults.items()
             if key in TINY_CLAP_AUDIO}
    text = {key: text_defaults[key] for key in TINY_CLAP_TEXT}
    return write_random_clap(directory, seed=1, audio_config=audio, text_config=text,
                             projection_dim=ClapConfig().projection_dim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sounds", default="speech:5,noise:20,music:60",
                        help="kind:seconds, comma-separated (kinds: speech, noise, music); each in every format")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the median is reported)")
    parser.add_argument("--skip-embed", action="store_true", help="leave out (b), the end-to-end embedding")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "mmserve" / "bench-audio",
                        help="the random CLAP and its export, kept between runs (export takes minutes)")
    parser.add_argument("--update", type=Path, help="replace the audio section of this Markdown file")
    args = parser.parse_args()

    import av
    import soundfile
    import soxr
    import torch
    import transformers
    from transformers import ClapFeatureExtractor, ClapModel
    from transformers.utils import logging as hf_logging

    from mmserve.config import Settings
    from mmserve.embedder import LocalEmbedder
    from mmserve.modalities.audio import AudioFeatureConfig, decode_audio, log_mel, split_windows
    from mmserve.models.clap import export_audio
    from mmserve.models.export import export_towers

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    sounds = [(kind, float(seconds)) for kind, seconds in (text.split(":") for text in args.sounds.split(","))]
    if any(kind not in KINDS for kind, _ in sounds):
        raise SystemExit(f"sound kinds: {', '.join(KINDS)}")
    formats = [name for name in args.formats.split(",") if name]
    files = {name: [sound_file(kind, seconds, name, seed) for seed, (kind, seconds) in enumerate(sounds)]
             for name in formats}
    total_seconds = sum(seconds for _, seconds in sounds)

    config = AudioFeatureConfig()
    extractor = ClapFeatureExtractor(**config.to_preprocessor_config())
    rate, size = config.sample_rate, config.window_samples

    def obvious_features(data: bytes) -> np.ndarray:
        windows = obvious_windows(obvious_waveform(data, rate), size, rate)
        return extractor(windows, sampling_rate=rate, truncation="rand_trunc", padding="repeatpad",
                         return_tensors="np")["input_features"]

    def mmserve_features(data: bytes) -> np.ndarray:
        windows, _ = split_windows(decode_audio(data, rate), config)
        return log_mel(windows, config)

    cases = {
        "decode obvious": lambda items: [obvious_waveform(data, rate) for data in items],
        "decode mmserve": lambda items: [decode_audio(data, rate) for data in items],
        "a obvious": lambda items: [obvious_features(data) for data in items],
        "a mmserve": lambda items: [mmserve_features(data) for data in items],
    }
    precision = torch_threads = None
    if not args.skip_embed:
        clap_dir = real_size_clap(args.cache_dir / "clap-htsat-unfused-random")
        settings = Settings(audio_model_dir=clap_dir, cache_dir=args.cache_dir / "cache")
        export_towers(settings.model_dir, settings.export_dir())
        started = time.perf_counter()
        export_audio(clap_dir, settings.audio_export_dir(clap_dir))
        if time.perf_counter() - started > 5:
            print(f"exported the CLAP towers in {time.perf_counter() - started:.0f} s", flush=True)
        embedder = LocalEmbedder(settings)
        clap = ClapModel.from_pretrained(str(clap_dir), local_files_only=True).eval()
        torch_threads = fastest_torch_threads(
            lambda: clap.get_audio_features(input_features=torch.zeros((2, 1, config.frames, config.n_mels))))

        def obvious_embed(items: list[bytes]) -> list[np.ndarray]:
            vectors = []
            for data in items:
                features = torch.from_numpy(obvious_features(data))
                with torch.inference_mode():
                    windows = clap.get_audio_features(input_features=features).pooler_output
                vectors.append(torch.nn.functional.normalize(windows.mean(dim=0), dim=0).numpy())
            return vectors

        cases["b obvious (torch)"] = obvious_embed
        cases["b mmserve"] = lambda items: [result.embedding for result in embedder.embed_audio(items)]
        precision = embedder._audio().tower.precision

    # Warm-up, and the window counts both pipelines must agree on.
    windows_per_format = {}
    for name in formats:
        counts = [len(mmserve_features(data)) for data in files[name]]
        if counts != [len(obvious_features(data)) for data in files[name]]:
            raise RuntimeError(f"{name}: the pipelines cut different windows")
        windows_per_format[name] = sum(counts)
    for fn in cases.values():
        fn(files[formats[0]][:1])
    probe = np.random.default_rng(0).standard_normal((4, size)).astype(np.float32) * 0.1
    probe_44k = probe.reshape(-1)[: 40 * 44100].copy()  # 40 s of mono at 44.1 kHz
    feature_cases = {
        "log_mel": lambda: log_mel(probe, config),
        "log_mel, 1 a call": lambda: [log_mel(probe[i : i + 1], config) for i in range(len(probe))],
        "soxr": lambda: soxr.resample(probe_44k, 44100, rate, quality="VHQ"),
        "extractor": lambda: extractor(list(probe), sampling_rate=rate, truncation="rand_trunc",
                                       padding="repeatpad", return_tensors="np"),
    }

    seconds: dict[tuple[str, str], list[float]] = {}
    started, cpu_before = time.perf_counter(), cpu_seconds()
    for round_index in range(args.rounds):
        # The order turns every round, so that no case always follows the same one (a runtime's threads may still
        # spin for a moment after it returns).
        runs = [((name, case), lambda fn=fn, name=name: fn(files[name])) for name in formats
                for case, fn in cases.items()]
        runs += [(("features", case), fn) for case, fn in feature_cases.items()]
        shift = round_index * len(runs) // args.rounds
        for key, fn in runs[shift:] + runs[:shift]:
            seconds.setdefault(key, []).append(timed(fn))
        print(f"round {round_index + 1}/{args.rounds} done ({time.perf_counter() - started:.0f} s)", flush=True)
    cpu_after, wall = cpu_seconds(), time.perf_counter() - started
    # Cores other processes kept busy, on average, during the rounds.
    others = (None if cpu_before is None or cpu_after is None else
              max(0.0, (cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1])) / wall)
    median = {key: statistics.median(values) for key, values in seconds.items()}
    logmel_rate = len(probe) / median[("features", "log_mel")]
    extractor_rate = len(probe) / median[("features", "extractor")]
    single_rate = len(probe) / median[("features", "log_mel, 1 a call")]
    soxr_rate = len(probe_44k) / 44100 / median[("features", "soxr")]

    def speed(name: str, case: str) -> str:
        return f"{total_seconds / median[(name, case)]:.1f}"

    def ratio(name: str, case: str, base: str) -> str:
        return f"{median[(name, base)] / median[(name, case)]:.2f}x"

    host = (f"host: {os.cpu_count()} cores, {' '.join(cpu_features())}; PyAV {av.__version__}, soundfile "
            f"{soundfile.__version__} (libsndfile {soundfile.__libsndfile_version__}), soxr {soxr.__version__}, "
            f"transformers {transformers.__version__}, torch {torch.__version__}"
            + (f" on {torch_threads} thread(s) (the faster of 1 and all cores, measured here)" if torch_threads else "")
            + f"; {time.strftime('%Y-%m-%d')}; median of {args.rounds} rounds"
            + ("" if others is None else f"; other processes kept {others:.1f} of the {os.cpu_count()} cores busy "
               "on average during the rounds"))
    mix = ", ".join(f"{kind} {seconds:g} s" for kind, seconds in sounds)
    lines = [(f"`bench/bench_audio.py`; {host}. Per format: {mix} ({total_seconds:g} s of stereo audio, "
              f"{windows_per_format[formats[0]]} windows of 10 s), one thread."), "",
             "(a) decode + resample to 48 kHz mono, then + CLAP features: audio seconds per second", "",
             *table_header("format", "encoded", "obvious decode: PyAV + AudioResampler",
                           "mmserve decode_audio (libsndfile + soxr VHQ)", "obvious + ClapFeatureExtractor",
                           "mmserve + split_windows + log_mel", "mmserve / obvious, with features")]
    lines += [f"| {FORMATS[name][3]} | {sum(map(len, files[name])) * 8 / total_seconds / 1000:.0f} kbit/s | "
              f"{speed(name, 'decode obvious')} | {speed(name, 'decode mmserve')} | {speed(name, 'a obvious')} | "
              f"{speed(name, 'a mmserve')} | {ratio(name, 'a mmserve', 'a obvious')} |" for name in formats]
    if not args.skip_embed:
        lines += ["", (f"(b) end to end, a sound's vector (HTSAT-unfused at full size, random weights; OpenVINO "
                       f"computes in {precision}, torch in f32): audio seconds per second; then mmserve's decoding and "
                       "its log_mel (their one-thread times, from (a) and from log_mel alone) as shares of its "
                       "end-to-end time"), "",
                  *table_header("format", "obvious: PyAV + ClapFeatureExtractor + ClapModel (torch)",
                                "mmserve LocalEmbedder.embed_audio", "mmserve / obvious", "mmserve: decode + resample",
                                "mmserve: log_mel")]
        for name in formats:
            total = median[(name, "b mmserve")]
            lines.append(f"| {FORMATS[name][3]} | {speed(name, 'b obvious (torch)')} | {speed(name, 'b mmserve')} | "
                         f"{ratio(name, 'b mmserve', 'b obvious (torch)')} | "
                         f"{median[(name, 'decode mmserve')] / total:.0%} | "
                         f"{windows_per_format[name] / logmel_rate / total:.0%} |")
    lines += ["", *table_header("features alone, 10 s windows (1001 x 64 out)", "windows/s", "ms a window",
                                "vs ClapFeatureExtractor"),
              *[f"| {label} | {value:.1f} | {1000 / value:.1f} | {value / extractor_rate:.2f}x |" for label, value in (
                  ("ClapFeatureExtractor, 4 windows a call (a frame at a time inside)", extractor_rate),
                  ("mmserve log_mel, 4 windows a call (its block: one rfft over all their frames)", logmel_rate),
                  ("mmserve log_mel, 1 window a call", single_rate))], ""]
    lines.append(reading(formats, median, windows_per_format, logmel_rate, extractor_rate, single_rate, soxr_rate,
                         args.skip_embed))
    report = "\n".join(lines)
    print("\n" + report)
    if args.update:
        update_section(args.update, report)


def reading(formats, median, windows, logmel_rate: float, extractor_rate: float, single_rate: float,
            soxr_rate: float, skip_embed: bool) -> str:
    def spread(values: list[float], form: str = ".2f", unit: str = "x") -> str:
        low, high = f"{min(values):{form}}", f"{max(values):{form}}"
        return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"

    def gains(name: str, base: str) -> list[float]:
        return [median[(fmt, base)] / median[(fmt, name)] for fmt in formats]

    features = gains("a mmserve", "a obvious")
    decoding = dict(zip(formats, gains("decode mmserve", "decode obvious"), strict=True))
    text = (f"Reading: with features, mmserve runs at {spread(features)} the obvious pipeline's speed. log_mel runs at "
            f"{logmel_rate / extractor_rate:.2f}x ClapFeatureExtractor's speed in its blocks of 4 windows and "
            f"{single_rate / extractor_rate:.2f}x one window a call")
    if single_rate > 1.1 * logmel_rate:
        text += " (a block of 4 holds about 100 MB of float64 frames and spectra at once"
        cache = os.sysconf("SC_LEVEL3_CACHE_SIZE") if "SC_LEVEL3_CACHE_SIZE" in os.sysconf_names else 0
        text += f", against a {cache >> 20} MB L3 cache here)" if cache > 0 else ")"
    if logmel_rate < 1.5 * extractor_rate:
        text += ": transformers' frame-by-frame rfft loop costs little beside the FFTs themselves"
    text += (". Decoding + resampling, mmserve against PyAV: "
             + ", ".join(f"{FORMATS[fmt][3]} {gain:.2f}x" for fmt, gain in decoding.items()) + ".")
    if "opus" in decoding and decoding["opus"] < 0.9:
        text += (" Ogg Opus is at 48 kHz, nothing to resample, so its gap is libsndfile's Opus decoding against "
                 "FFmpeg's.")
    if "wav" in decoding:  # WAV's decoding is a copy: what is left is the resampling
        text += (f" WAV, whose decoding is a copy, prices the resampling (soxr VHQ in mmserve, {soxr_rate:.0f} audio "
                 "seconds a second alone from 44.1 to 48 kHz mono, against PyAV's swresample at its default): "
                 f"mmserve's side runs at {decoding['wav']:.2f}x.")
        behind = [FORMATS[fmt][3] for fmt, gain in decoding.items()
                  if fmt not in ("wav", "opus") and gain < 0.8 * decoding["wav"]]
        if behind:
            text += (f" {' and '.join(behind)} {'falls' if len(behind) == 1 else 'fall'} behind that: libsndfile's "
                     "decoder against FFmpeg's.")
    if not skip_embed:
        e2e = gains("b mmserve", "b obvious (torch)")
        shares = [windows[fmt] / logmel_rate / median[(fmt, "b mmserve")] for fmt in formats]
        decode_shares = [median[(fmt, "decode mmserve")] / median[(fmt, "b mmserve")] for fmt in formats]
        rest = [1 - a - b for a, b in zip(shares, decode_shares, strict=True)]
        text += (f" End to end on a full-size HTSAT, mmserve is {spread(e2e)} as fast as the torch pipeline, the tower "
                 f"and the rest taking about {spread(rest, '.0%', '')} of its time. log_mel takes "
                 f"{spread(shares, '.0%', '')} (decoding {spread(decode_shares, '.0%', '')}): features in C++ could "
                 "win at most that share, less what numpy's pocketfft and matmul already do well")
        if single_rate > 1.1 * logmel_rate:
            text += (f", and one window a call in numpy already runs {single_rate / logmel_rate:.1f}x as fast as the "
                     "block of 4 mmserve uses: a smaller block is the cheaper win, not a C++ kernel")
        text += "."
    return text


def table_header(*columns: str) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def update_section(path: Path, report: str) -> None:
    text = path.read_text() if path.exists() else ""
    block = f"{START}\n{report}\n{END}"
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        heading = "## Audio: decoding, features and embedding against the obvious pipeline"
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
