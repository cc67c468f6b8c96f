"""Tokenizer throughput on one thread, as ratios against baselines measured in the same run.

    mmserve              C++ tokenizer (batch API, one thread), ftfy.fix_text first as open_clip does (the
                         default; printable ASCII skips it), and without ftfy (fix_text=False)
    HF CLIPTokenizerFast Rust tokenizers, batch encode (RAYON_NUM_THREADS=1)
    open_clip            SimpleTokenizer (the reference, Python)

for short queries (~8 words), captions (~30 words), and non-ASCII queries
(accents, curly quotes: every one takes ftfy's full path). Texts are unique,
so neither cache (mmserve's BPE cache, open_clip's) is primed beyond the words.

Then SigLIP's and SigLIP 2's tokenizers (random-weight checkpoints written
here, tokenizers trained on the mixed corpus) against transformers' own
(`SiglipTokenizer`, `GemmaTokenizer`), and, with `--siglip-tower`, the
full-size SigLIP base text tower at its 64 positions (OpenVINO, batch 32, the
host's threads): the tokenizer must outrun the tower by far for Python-level
tokenizing (no new C++) to be right.

    python bench/bench_tokenizer.py [--texts 2000] [--rounds 5] [--siglip-tower]
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from mmserve.models.clip import default_model_dir  # noqa: E402
from mmserve.modalities.text import ClipTokenizer  # noqa: E402
from mmserve.dev.training import reference_tokenizer  # noqa: E402

WORDS = ("a photo of the red blue green large small dog cat car tree house sunset beach mountain city street "
         "person people running sitting under over next to with in on at near bright dark old new wooden "
         "glass metal painting drawing close-up view night morning winter summer river sky clouds").split()


NON_ASCII = "caf\u00e9 na\u00efve don\u2019t \u201cquoted\u201d r\u00e9sum\u00e9 stra\u00dfe \u00fcber".split()


def texts(count: int, words: int, seed: int, vocabulary: tuple[str, ...] | list[str] = WORDS) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(vocabulary) for _ in range(words)) + f" {i}" for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    parser.add_argument("--siglip-tower", action="store_true", help="also time the full-size SigLIP text tower")
    args = parser.parse_args()

    from transformers import CLIPTokenizerFast

    model_dir = default_model_dir()
    mmserve = ClipTokenizer.from_model_dir(model_dir, threads=1)
    unfixed = ClipTokenizer.from_model_dir(model_dir, threads=1, fix_text=False)
    hf = CLIPTokenizerFast.from_pretrained(str(model_dir), local_files_only=True)
    reference, _ = reference_tokenizer()
    cases = {
        "open_clip (reference)": lambda batch: reference(batch, context_length=77),
        "HF CLIPTokenizerFast": lambda batch: hf(batch, padding="max_length", max_length=77, truncation=True),
        "mmserve (C++)": lambda batch: mmserve(batch),
        "mmserve, no ftfy": lambda batch: unfixed(batch),
    }
    print(f"one thread, {args.texts} unique texts per round, median of {args.rounds} rounds\n")
    for label, words, vocabulary in (("short queries (~8 words)", 8, WORDS), ("captions (~30 words)", 30, WORDS),
                                     ("non-ASCII queries (~8 words)", 8, [*WORDS, *NON_ASCII])):
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for round_index in range(args.rounds):
            batch = texts(args.texts, words, seed=round_index * 7 + words, vocabulary=vocabulary)
            if vocabulary is not WORDS:
                batch = [f"{text} caf\u00e9" for text in batch]  # every text non-ASCII
            for name, fn in cases.items():
                start = time.perf_counter()
                fn(batch)
                samples[name].append(len(batch) / (time.perf_counter() - start))
        rates = {name: float(np.median(v)) for name, v in samples.items()}
        print(label)
        print(f"  {'tokenizer':<24} {'texts/s':>10} {'vs open_clip':>13} {'vs HF fast':>11}")
        for name, rate in rates.items():
            print(f"  {name:<24} {rate:>10.0f} {rate / rates['open_clip (reference)']:>12.1f}x "
                  f"{rate / rates['HF CLIPTokenizerFast']:>10.2f}x")
        print()
    siglip(args)


def siglip(args) -> None:
    import tempfile
    from pathlib import Path

    from transformers import AutoTokenizer

    from mmserve.dev.checkpoints import write_random_siglip
    from mmserve.modalities.text import load_tokenizer
    from mmserve.models import ModelInfo

    with tempfile.TemporaryDirectory() as tmp:
        print("SigLIP tokenizers, captions (~12 words), padded to 64")
        print(f"  {'tokenizer':<34} {'texts/s':>10} {'vs transformers':>16}")
        for variant in ("siglip", "siglip2"):
            directory = write_random_siglip(Path(tmp) / variant, variant=variant)
            ours = load_tokenizer(ModelInfo.from_dir(directory))
            theirs = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            cases = {f"transformers {type(theirs).__name__}":
                     lambda batch, t=theirs: t(batch, padding="max_length", max_length=64, truncation=True),
                     f"mmserve {type(ours).__name__}": lambda batch, t=ours: t(batch)}
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for round_index in range(args.rounds):
                batch = texts(args.texts, 12, seed=round_index * 11)
                for name, fn in cases.items():
                    start = time.perf_counter()
                    fn(batch)
                    samples[name].append(len(batch) / (time.perf_counter() - start))
            rates = {name: float(np.median(v)) for name, v in samples.items()}
            base = next(iter(rates.values()))
            for name, rate in rates.items():
                print(f"  {name:<34} {rate:>10.0f} {rate / base:>15.2f}x")
        if args.siglip_tower:
            print()
            print(f"  {'SigLIP base text tower (OpenVINO)':<34} {tower_rate(Path(tmp)):>10.0f}   texts/s, batch 32")
        print()


def tower_rate(tmp) -> float:
    from mmserve.dev.checkpoints import write_random_siglip
    from mmserve.models import ModelInfo
    from mmserve.models.export import TEXT_TOWER_FILE, export_towers
    from mmserve.runtimes import load_tower

    directory = write_random_siglip(tmp / "base", full_size=True)
    export_towers(directory, tmp / "base-onnx")
    tower = load_tower(tmp / "base-onnx" / TEXT_TOWER_FILE, "openvino")
    info = ModelInfo.from_dir(directory)
    ids = np.full((32, info.context_length), info.pad_token_id, dtype=np.int32)
    ids[:, :10] = 7
    tower(ids)
    start, runs = time.perf_counter(), 10
    for _ in range(runs):
        tower(ids)
    return 32 * runs / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
