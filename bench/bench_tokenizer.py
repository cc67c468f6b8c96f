"""Tokenizer throughput on one thread, as ratios against baselines measured in the same run.

    mmserve              C++ tokenizer (batch API, one thread), ftfy.fix_text first as open_clip does (the
                         default; printable ASCII skips it), and without ftfy (fix_text=False)
    HF CLIPTokenizerFast Rust tokenizers, batch encode (RAYON_NUM_THREADS=1)
    open_clip            SimpleTokenizer (the reference, Python)

for short queries (~8 words), captions (~30 words), and non-ASCII queries
(accents, curly quotes: every one takes ftfy's full path). Texts are unique,
so neither cache (mmserve's BPE cache, open_clip's) is primed beyond the words.

    python bench/bench_tokenizer.py [--texts 2000] [--rounds 5]
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


if __name__ == "__main__":
    main()
