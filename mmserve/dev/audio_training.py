"""Train the bundled model's audio tower into its existing image-text space (CPU, torch).

    python -m mmserve.dev.audio_training --out mmserve/models/default/audio [--steps N]

The bundled CLIP's text and image towers stay frozen; only `SoundTower` learns (ImageBind's
recipe: bind a new modality to a fixed space through data paired with the modalities it has).
The pairs come from `mmserve.dev.sounds`, whose binding names every sound in the caption
vocabulary the text tower was trained on (pitch -> color, timbre -> shape, rhythm -> size,
noise -> background) and draws its paired image (`sounds.sound_scene`).

Recipe (why each part is there):

- Features are computed by `mmserve.modalities.audio` (`split_windows`, `log_mel`), the code
  serving runs, so the tower sees at serving exactly what it was trained on. Every window of a
  training sound is a training row; a sound's vector is the renormalised mean of its windows'.
- Frozen targets are computed once: the text embeddings of every one-object caption the binding
  can say (each subset of color/shape/size/background, every template: a few thousand texts),
  and the image embeddings of rendered scenes of every bound combination.
- Sound -> text is a softmax over that whole caption bank, with multi-positive targets (every
  caption the sound makes true, as `training.py` does for images), a random template per
  caption each step; text -> sound is the softmax over the batch for every caption with a
  positive in it. Sound -> image is a softmax over the image bank (the positives: every image of
  the sound's combination); image -> sound pairs each sound with one such image in the batch.
  The temperature is the bundled model's own logit scale, so sound scores read like image scores.
- Held-out evaluation uses sound seeds training never draws (`sounds.HELDOUT_SEED_BASE`) and
  images rendered from held-out scene seeds: zero-shot accuracy per sound attribute, text ->
  sound and sound -> image recall@1/@10, each beside its chance level, written with the steps,
  time and seed to `training.json` (and every line to `training.log`).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmserve.dev import quality
from mmserve.dev import sounds as A
from mmserve.dev import synthetic as S
from mmserve.dev.training import soft_cross_entropy
from mmserve.modalities import audio
from mmserve.models.sound_tower import SoundTower, save_sound_tower

# The bundled tower's features: 2 s windows at 16 kHz, 25 ms-ish FFT (512), 10 ms hop, 64 mels over 50 Hz-8 kHz.
DEFAULT_FEATURES: dict[str, Any] = {
    "sample_rate": A.SAMPLE_RATE, "window_seconds": 2.0, "n_fft": 512, "hop_length": 160, "n_mels": 64,
    "f_min": 50.0, "f_max": 8000.0,
}
IMAGE_RENDER_SIZE = 128
# Scene seeds of the held-out image gallery: above the held-out scenes `synthetic` itself uses.
HELDOUT_IMAGE_SEED = S.HELDOUT_SEED_BASE + (1 << 32)


def feature_config(**overrides: Any) -> audio.AudioFeatureConfig:
    fields = {f.name for f in dataclasses.fields(audio.AudioFeatureConfig)}
    return audio.AudioFeatureConfig(**{k: v for k, v in {**DEFAULT_FEATURES, **overrides}.items() if k in fields})


# Features ------------------------------------------------------------------------------------


@dataclasses.dataclass
class SoundSet:
    """Sounds' attributes, their windows' log-mel features and which sound each window belongs to (the samples
    themselves are not kept: a pool of training sounds would hold gigabytes)."""

    attributes: list[A.SoundAttributes]
    features: np.ndarray  # float32 [W, 1, frames, n_mels]
    owner: np.ndarray  # int64 [W]: index into `attributes`


def sound_set(sounds: Iterable[A.Sound], config: audio.AudioFeatureConfig) -> SoundSet:
    """Features of every window of every sound, one sound at a time (memory follows the features only)."""
    attributes, features, owner = [], [], []
    for i, sound in enumerate(sounds):
        windows, _ = audio.split_windows(sound.samples, config)
        attributes.append(sound.attributes)
        features.append(audio.log_mel(windows, config))
        owner.append(np.full(len(windows), i, dtype=np.int64))
    return SoundSet(attributes, np.concatenate(features), np.concatenate(owner))


@torch.no_grad()
def embed_sound_set(tower: torch.nn.Module, data: SoundSet, chunk: int = 256) -> np.ndarray:
    """`[len(sounds), D]`: each sound's window embeddings mean-pooled and renormalised (as serving pools)."""
    tower.eval()
    rows = np.concatenate([tower(torch.from_numpy(data.features[s:s + chunk])).numpy()
                           for s in range(0, len(data.features), chunk)])
    pooled = np.zeros((len(data.attributes), rows.shape[1]), dtype=np.float64)
    np.add.at(pooled, data.owner, rows)
    return _normalize(pooled)


# Frozen targets --------------------------------------------------------------------------------


class FrozenSpace:
    """The bundled model's text and image towers, frozen, with its tokenizer."""

    def __init__(self, model_dir: str | Path) -> None:
        from mmserve.modalities.text import load_tokenizer
        from mmserve.models.info import ModelInfo
        from mmserve.models.towers import load_model, towers_for

        self.info = ModelInfo.from_dir(model_dir)
        model = load_model(self.info)
        self.image_tower, self.text_tower = towers_for(model, self.info)
        self.logit_scale = float(model.logit_scale.detach().exp())
        self.tokenizer = load_tokenizer(self.info)
        for p in model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], chunk: int = 512) -> np.ndarray:
        from mmserve.modalities.text import trim_padding

        out = []
        for s in range(0, len(texts), chunk):
            ids = trim_padding(self.tokenizer(list(texts[s:s + chunk])), self.info.eos_token_id)
            out.append(self.text_tower(torch.from_numpy(ids)).numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def embed_images(self, images: np.ndarray, chunk: int = 256) -> np.ndarray:
        return np.concatenate([self.image_tower(torch.from_numpy(images[s:s + chunk])).numpy()
                               for s in range(0, len(images), chunk)])

    def render(self, scenes: Sequence[S.Scene]) -> np.ndarray:
        return quality.heldout_images(scenes, self.info.image_size, IMAGE_RENDER_SIZE)


def caption_bank() -> list[S.CaptionSpec]:
    """Every one-object caption naming a non-empty subset of color/shape/size/background (template 0).

    The unbound "gradient" background is in it too: a caption no sound makes true, a negative for all.
    """
    choices = {a: (None, *S.ATTRIBUTE_VALUES[a]) for a in ("color", "shape", "size")}
    choices["background"] = (None, *S.BACKGROUNDS)
    bank = []
    for values in itertools.product(*choices.values()):
        words = {a: v for a, v in zip(choices, values) if v is not None}
        if words:
            bank.append(A.caption_naming(words))
    return bank


def sound_caption_matrix(captions: Sequence[S.CaptionSpec], attributes: Sequence[A.SoundAttributes]) -> np.ndarray:
    """`[len(attributes), len(captions)]` bool, through `synthetic.match_matrix` on the paired scenes."""
    scenes = [A.sound_scene(a, 0, position="center") for a in attributes]
    return S.match_matrix(captions, scenes)


_COMBINATION_INDEX = {a: i for i, a in enumerate(A.all_sound_attributes())}


def combination_index(attributes: A.SoundAttributes) -> int:
    """Position of `attributes` in `sounds.all_sound_attributes()`."""
    return _COMBINATION_INDEX[attributes]


# Training --------------------------------------------------------------------------------------


def train(args: argparse.Namespace) -> None:
    begin = time.time()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "training.log", "a")  # noqa: SIM115 - open for the whole run

    def say(message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    config = feature_config(window_seconds=args.window_seconds, n_mels=args.n_mels)
    space = FrozenSpace(args.model)
    say(f"frozen space {args.model}: dim {space.info.embedding_dim}, logit scale {space.logit_scale:.1f}")

    t0 = time.time()
    data = sound_set(A.training_sounds(0, args.pool), config)
    say(f"{args.pool} training sounds -> {len(data.features)} windows {data.features.shape[1:]} "
        f"in {time.time() - t0:.0f} s")

    t0 = time.time()
    bank = caption_bank()
    templates = len(S._TEMPLATES)
    texts = [dataclasses.replace(c, template=t).text for c in bank for t in range(templates)]
    text_bank = torch.from_numpy(space.embed_texts(texts)).reshape(len(bank), templates, -1)
    combos = A.all_sound_attributes()
    image_scenes = [A.sound_scene(c, seed=i * len(combos) + k) for i in range(args.images_per_combination)
                    for k, c in enumerate(combos)]
    image_bank = torch.from_numpy(space.embed_images(space.render(image_scenes)))
    image_combo = torch.arange(len(image_scenes)) % len(combos)
    say(f"frozen targets: {len(texts)} captions ({len(bank)} x {templates} templates), "
        f"{len(image_scenes)} images, in {time.time() - t0:.0f} s")

    sound_attrs = data.attributes
    window_targets = torch.from_numpy(sound_caption_matrix(bank, sound_attrs)[data.owner].astype(np.float32))
    window_combo = torch.tensor([combination_index(sound_attrs[o]) for o in data.owner])
    images_of_combo = [torch.nonzero(image_combo == k).flatten() for k in range(len(combos))]

    tower = SoundTower(n_mels=config.n_mels, frames=config.frames, embedding_dim=space.info.embedding_dim,
                       channels=args.channels)
    features = torch.from_numpy(data.features)
    tower.set_feature_statistics(features.mean(dim=(0, 1, 2)), features.std(dim=(0, 1, 2)))
    parameters = sum(p.numel() for p in tower.parameters())
    say(f"SoundTower {args.channels}: {parameters / 1e6:.3f} M parameters")

    optimizer = torch.optim.AdamW(tower.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * 0.5 * (1 + math.cos(math.pi * progress))

    scale = space.logit_scale
    heldout_quick = None
    start = time.time()
    for step in range(args.steps):
        tower.train()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        index = torch.from_numpy(rng.choice(len(features), size=args.batch, replace=False))
        gain = torch.from_numpy(rng.uniform(-args.gain_db, args.gain_db, size=(args.batch, 1, 1, 1)).astype(np.float32))
        emb = tower(features[index] + gain)

        template = torch.from_numpy(rng.integers(templates, size=len(bank)))
        captions = text_bank[torch.arange(len(bank)), template]  # [C, D]
        targets = window_targets[index]  # [B, C]
        logits = scale * emb @ captions.T
        sound_to_text = soft_cross_entropy(logits, targets)
        has_sound = targets.sum(0) > 0
        text_to_sound = soft_cross_entropy(logits.T[has_sound], targets.T[has_sound])

        combo = window_combo[index]
        same_combo = (combo[:, None] == image_combo[None, :]).to(torch.float32)  # [B, I]
        sound_to_image = soft_cross_entropy(scale * emb @ image_bank.T, same_combo)
        paired = torch.stack([images_of_combo[int(k)][rng.integers(args.images_per_combination)] for k in combo])
        in_batch = (combo[:, None] == combo[None, :]).to(torch.float32)
        image_to_sound = soft_cross_entropy(scale * image_bank[paired] @ emb.T, in_batch)

        loss = (sound_to_text + text_to_sound) / 2 + args.image_weight * (sound_to_image + image_to_sound) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        if step % 50 == 0:
            rate = (step + 1) / (time.time() - start)
            say(f"step {step} loss {loss.item():.4f} (s->t {sound_to_text.item():.3f} t->s {text_to_sound.item():.3f} "
                f"s->i {sound_to_image.item():.3f} i->s {image_to_sound.item():.3f}) lr {lr_at(step):.2e} "
                f"({rate:.2f} steps/s)")
        if args.eval_every and step > 0 and step % args.eval_every == 0:
            if heldout_quick is None:
                heldout_quick = Heldout.build(space, config, per_combination=1)
            report = heldout_quick.evaluate(tower)
            say("quick held-out: " + summary(report))
    train_seconds = time.time() - start

    t0 = time.time()
    heldout = Heldout.build(space, config, per_combination=args.heldout_per_combination)
    report = heldout.evaluate(tower)
    for line in report_lines(report):
        say("final: " + line)
    binding = binding_measurements(space)
    for line in binding["lines"]:
        say("binding: " + line)
    say(f"held-out evaluation and binding measurements in {time.time() - t0:.0f} s")

    extra = {"training": "mmserve.dev.audio_training", "frozen_model": "..", "logit_scale": round(scale, 4)}
    save_sound_tower(tower, out, config, extra=extra)
    weights = (out / "model.safetensors").stat().st_size
    training = {
        "steps": args.steps,
        "batch": args.batch,
        "pool_sounds": args.pool,
        "windows": len(features),
        "images_per_combination": args.images_per_combination,
        "lr": args.lr,
        "seed": args.seed,
        "threads": args.threads,
        "train_minutes": round(train_seconds / 60, 1),
        "steps_per_second": round(args.steps / train_seconds, 2),
        "total_minutes": round((time.time() - begin) / 60, 1),
        # Other work on the machine slows the run: the 1/5/15-minute load averages when it ended.
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "parameters": parameters,
        "weights_bytes": weights,
        "channels": list(args.channels),
        "features": config.to_preprocessor_config(),
        "binding": {sound: {"caption_attribute": caption, "words": words}
                    for sound, (caption, words) in A.BINDING.items()},
        "binding_measurements": {k: v for k, v in binding.items() if k != "lines"},
        "heldout": report,
    }
    (out / "training.json").write_text(json.dumps(training, indent=2) + "\n")
    say(f"saved {out} ({weights / 1e6:.2f} MB of weights) in {(time.time() - begin) / 60:.1f} min")
    log.close()


# Held-out evaluation ----------------------------------------------------------------------------


@dataclasses.dataclass
class Heldout:
    """Held-out sounds (every combination, `per_combination` each), their features, and a held-out image gallery
    of the paired scenes (as many per combination), embedded once by the frozen towers."""

    data: SoundSet
    attribute_class_emb: dict[str, np.ndarray]  # sound attribute -> [values, D] (template-mean prompts)
    full_caption_emb: np.ndarray  # [combos * templates, D]
    full_caption_combo: np.ndarray  # [combos * templates]
    single_caption_emb: dict[str, np.ndarray]  # sound attribute -> [values, D]: "a red shape" (template 0)
    image_emb: np.ndarray  # [combos * per_combination, D]
    image_attrs: list[A.SoundAttributes]
    text_to_image: dict[str, float]  # the frozen towers on the same queries and gallery: the reference

    @classmethod
    def build(
        cls,
        space: FrozenSpace,
        config: audio.AudioFeatureConfig,
        per_combination: int,
        *,
        combinations: Sequence[A.SoundAttributes] | None = None,
        query_templates: int = len(S._TEMPLATES),
        start: int = 0,
    ) -> Heldout:
        """Every combination (or `combinations`, for a quicker check), sounds from held-out seed `start` on; the
        all-four queries in the first `query_templates` templates (class prompts always average all of them)."""
        combos = A.all_sound_attributes() if combinations is None else list(combinations)
        data = sound_set(A.heldout_sounds(per_combination, start=start, combinations=combos), config)
        templates = range(len(S._TEMPLATES))
        class_emb, single_emb = {}, {}
        for attribute, (caption_attribute, words) in A.BINDING.items():
            values = A.SOUND_ATTRIBUTE_VALUES[attribute]
            prompts = [A.caption_naming({caption_attribute: words[v]}, t).text for v in values for t in templates]
            emb = space.embed_texts(prompts).reshape(len(values), len(templates), -1)
            class_emb[attribute] = _normalize(emb.mean(axis=1))
            single_emb[attribute] = _normalize(emb[:, 0])
        full = [A.full_sound_caption(c, t).text for c in combos for t in range(query_templates)]
        full_emb = _normalize(space.embed_texts(full))
        full_combo = np.repeat([combination_index(c) for c in combos], query_templates)
        image_attrs = [c for _ in range(per_combination) for c in combos]
        scenes = [A.sound_scene(c, HELDOUT_IMAGE_SEED + i) for i, c in enumerate(image_attrs)]
        image_emb = _normalize(space.embed_images(space.render(scenes)))
        image_combo = np.array([combination_index(c) for c in image_attrs])
        reference = {f"recall@{k}": _recall_at(full_emb @ image_emb.T, full_combo[:, None] == image_combo[None], k)
                     for k in (1, 10)}
        return cls(data, class_emb, full_emb, full_combo, single_emb, image_emb, image_attrs, reference)

    def evaluate(self, tower: torch.nn.Module) -> dict[str, Any]:
        return self.evaluate_embeddings(embed_sound_set(tower, self.data))

    def evaluate_embeddings(self, sound_emb: np.ndarray) -> dict[str, Any]:
        truth = self.data.attributes
        sound_combo = np.array([combination_index(a) for a in truth])
        image_combo = np.array([combination_index(a) for a in self.image_attrs])
        report: dict[str, Any] = {"sounds": len(truth), "images": len(self.image_attrs)}

        zero_shot, text_p10, image_top1 = {}, {}, {}
        image_top1_sims = sound_emb @ self.image_emb.T
        best_image = image_top1_sims.argmax(axis=1)
        for attribute, values in A.SOUND_ATTRIBUTE_VALUES.items():
            actual = np.array([values.index(a.attribute(attribute)) for a in truth])
            zero_shot[attribute] = float(((sound_emb @ self.attribute_class_emb[attribute].T).argmax(1) == actual).mean())
            top10 = np.argsort(-(self.single_caption_emb[attribute] @ sound_emb.T), axis=1)[:, :10]
            text_p10[attribute] = float((actual[top10] == np.arange(len(values))[:, None]).mean())
            image_values = np.array([values.index(a.attribute(attribute)) for a in self.image_attrs])
            image_top1[attribute] = float((image_values[best_image] == actual).mean())
        chance = {a: round(1 / len(v), 4) for a, v in A.SOUND_ATTRIBUTE_VALUES.items()}
        report["zero_shot_accuracy"] = {"value": zero_shot, "chance": chance}
        report["text_to_sound_single_attribute_precision@10"] = {"value": text_p10, "chance": chance}
        report["sound_to_image_top1_shares_attribute"] = {"value": image_top1, "chance": chance}

        text_match = self.full_caption_combo[:, None] == sound_combo[None, :]
        image_match = sound_combo[:, None] == image_combo[None, :]
        report["text_to_sound_all_four"] = {
            **{f"recall@{k}": _recall_at(self.full_caption_emb @ sound_emb.T, text_match, k) for k in (1, 10)},
            **{f"chance@{k}": _chance_recall(text_match, k) for k in (1, 10)},
        }
        report["sound_to_image_all_four"] = {
            **{f"recall@{k}": _recall_at(image_top1_sims, image_match, k) for k in (1, 10)},
            **{f"chance@{k}": _chance_recall(image_match, k) for k in (1, 10)},
        }
        report["text_to_image_all_four_reference"] = self.text_to_image
        return report


def _recall_at(similarity: np.ndarray, match: np.ndarray, k: int) -> float:
    """Fraction of queries (rows) with at least one match among their top `k`."""
    top = np.argsort(-similarity, axis=1)[:, :k]
    return round(float(np.take_along_axis(match, top, axis=1).any(axis=1).mean()), 4)


def _chance_recall(match: np.ndarray, k: int) -> float:
    """The same figure for a random ranking: 1 - C(n - m, k) / C(n, k), averaged over queries."""
    n = match.shape[1]
    misses = [math.comb(n - int(m), k) / math.comb(n, k) for m in match.sum(axis=1)]
    return round(1 - float(np.mean(misses)), 4)


def summary(report: dict[str, Any]) -> str:
    zs = report["zero_shot_accuracy"]["value"]
    return (" ".join(f"{a} {v:.3f}" for a, v in zs.items())
            + f" | t->s R@1 {report['text_to_sound_all_four']['recall@1']:.3f}"
            + f" | s->i R@1 {report['sound_to_image_all_four']['recall@1']:.3f}")


def report_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for name in ("zero_shot_accuracy", "text_to_sound_single_attribute_precision@10",
                 "sound_to_image_top1_shares_attribute"):
        values, chance = report[name]["value"], report[name]["chance"]
        lines.append(f"{name}: " + ", ".join(f"{a} {v:.3f} (chance {chance[a]:.3f})" for a, v in values.items()))
    for name in ("text_to_sound_all_four", "sound_to_image_all_four"):
        r = report[name]
        lines.append(f"{name}: R@1 {r['recall@1']:.3f} (chance {r['chance@1']:.3f}), "
                     f"R@10 {r['recall@10']:.3f} (chance {r['chance@10']:.3f})")
    ref = report["text_to_image_all_four_reference"]
    lines.append(f"reference, frozen text -> image on the same queries: R@1 {ref['recall@1']:.3f}, "
                 f"R@10 {ref['recall@10']:.3f}")
    return lines


def binding_measurements(space: FrozenSpace, per_combination: int = 2) -> dict[str, Any]:
    """What the binding rests on: the bundled model's zero-shot accuracy per caption attribute (background too)
    on held-out images, and how far apart the text tower puts each attribute's class prompts."""
    scenes = S.heldout_single_object_scenes(per_combination)
    image_emb = _normalize(space.embed_images(space.render(scenes)))
    templates = range(len(S._TEMPLATES))
    accuracy, spread = {}, {}
    class_emb_of = {}
    values_of = {**S.ATTRIBUTE_VALUES, "background": S.BACKGROUNDS}
    for attribute, values in values_of.items():
        if attribute == "background":
            prompts = [S.CaptionSpec(objects=(S.ObjectQuery(),), background=v, template=t).text
                       for v in values for t in templates]
            actual = np.array([values.index(s.background) for s in scenes])
        else:
            prompts = [S.CaptionSpec(objects=(S.ObjectQuery(**{attribute: v}),), template=t).text
                       for v in values for t in templates]
            actual = np.array([values.index(s.objects[0].attribute(attribute)) for s in scenes])
        class_emb = _normalize(space.embed_texts(prompts).reshape(len(values), len(templates), -1).mean(axis=1))
        class_emb_of[attribute] = class_emb
        accuracy[attribute] = round(float(((image_emb @ class_emb.T).argmax(1) == actual).mean()), 4)
        cosine = class_emb @ class_emb.T
        spread[attribute] = round(float(cosine[~np.eye(len(values), dtype=bool)].max()), 3)
    backgrounds = class_emb_of["background"]
    subsets = {}
    for subset in itertools.combinations(range(len(S.BACKGROUNDS)), 4):
        cosine = backgrounds[list(subset)] @ backgrounds[list(subset)].T
        left_out = next(S.BACKGROUNDS[i] for i in range(len(S.BACKGROUNDS)) if i not in subset)
        subsets[left_out] = round(float(cosine[~np.eye(4, dtype=bool)].max()), 3)
    lines = [
        "bundled model zero-shot on held-out images: " + ", ".join(f"{a} {v:.3f}" for a, v in accuracy.items()),
        "largest cosine between two class prompts: " + ", ".join(f"{a} {v:.3f}" for a, v in spread.items()),
        "largest background-prompt cosine among the other four, by background left out: "
        + ", ".join(f"{b} {v:.3f}" for b, v in subsets.items()),
    ]
    return {"image_zero_shot_accuracy": accuracy, "max_class_prompt_cosine": spread,
            "max_background_cosine_by_left_out": subsets, "lines": lines}


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def main(argv: list[str] | None = None) -> None:
    from mmserve.models.clip import default_model_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="mmserve/models/default/audio", help="output audio tower directory")
    parser.add_argument("--model", default=str(default_model_dir()), help="the frozen CLIP directory")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--pool", type=int, default=12000, help="training sounds generated up front")
    parser.add_argument("--images-per-combination", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--gain-db", type=float, default=6.0, help="random level shift of each training window")
    parser.add_argument("--image-weight", type=float, default=1.0)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--window-seconds", type=float, default=2.0)
    parser.add_argument("--n-mels", type=int, default=64)
    parser.add_argument("--heldout-per-combination", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    train(parser.parse_args(argv))


if __name__ == "__main__":
    main()
