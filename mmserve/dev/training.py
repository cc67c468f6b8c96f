"""Train the small default CLIP from scratch on the synthetic data (CPU, torch).

    python -m mmserve.dev.training --out mmserve/models/default

Recipe (why each part is there):

- Multi-positive targets. Captions name a random subset of the attributes, so
  "a red shape" is true of many images in a batch; the targets are the exact
  match matrix from the scene ground truth (`synthetic.match_matrix`), each row
  normalised, instead of the identity of plain CLIP.
- Hard negatives. Every true caption gets a twin with one attribute changed
  ("... on the left" -> "... on the right"). They join the image-to-text
  softmax, so the image tower must encode every attribute (position and shape
  are otherwise learned last or not at all).
- Text is cut after the longest caption's end-of-text token: the text tower is
  causal and pools there, so this is exact and makes steps several times faster.

The output is a Hugging Face `CLIPModel` directory (weights stored as float16 to
keep the repository small) with the real CLIP BPE vocabulary.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmserve.dev import quality
from mmserve.dev import synthetic as S
from mmserve.models import clip as model_files
from mmserve.models.towers import ImageTower, TextTower


def clip_config(image_size: int, patch: int, width: int, layers: int, embed_dim: int, context: int):
    from transformers import CLIPConfig

    tower = {
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, width // 32),
    }
    return CLIPConfig(
        text_config=dict(
            tower,
            vocab_size=49408,
            max_position_embeddings=context,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=0,
        ),
        vision_config=dict(tower, image_size=image_size, patch_size=patch),
        projection_dim=embed_dim,
    )


def reference_tokenizer():
    """open_clip's SimpleTokenizer, loaded from its file (open_clip's package init pulls torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_clip_torch is needed for training: pip install --no-deps open_clip_torch")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("_open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SimpleTokenizer(), Path(module.default_bpe())


class CaptionTokens:
    """Caption -> ids with start/end tokens, memoised (captions repeat a lot)."""

    def __init__(self, tokenizer, start: int, end: int) -> None:
        self._tokenizer, self._start, self._end = tokenizer, start, end
        self._cache: dict[str, list[int]] = {}

    def batch(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for t in texts:
            ids = self._cache.get(t)
            if ids is None:
                ids = self._cache[t] = [self._start, *self._tokenizer.encode(t), self._end]
            rows.append(ids)
        out = torch.zeros((len(rows), max(map(len, rows))), dtype=torch.int32)
        for i, ids in enumerate(rows):
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int32)
        return out


def render_pool(count: int, image_size: int, render_size: int, seed_start: int) -> tuple[list, np.ndarray]:
    scenes = list(S.training_scenes(seed_start, count))
    images = quality.heldout_images(scenes, image_size, render_size)  # same render + resize path
    return scenes, images


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of cross-entropy against row-normalised 0/1 targets."""
    weights = targets / targets.sum(dim=1, keepdim=True)
    return -(weights * logits.log_softmax(dim=1)).sum(dim=1).mean()


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out.parent / f"{out.name}.train.log", "a")  # noqa: SIM115 - open for the whole run

    def say(message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    from transformers import CLIPModel

    config = clip_config(args.image_size, args.patch, args.width, args.layers, args.embed_dim, 77)
    clip = CLIPModel(config)
    image_tower = ImageTower(clip, model_files.OPENAI_MEAN, model_files.OPENAI_STD)
    text_tower = TextTower(clip, eos_token_id=49407)
    tokenizer, bpe_file = reference_tokenizer()
    tokens = CaptionTokens(tokenizer, 49406, 49407)
    say(f"parameters: {sum(p.numel() for p in clip.parameters()) / 1e6:.2f} M")

    t0 = time.time()
    scenes, images = render_pool(args.pool, args.image_size, args.render_size, 0)
    images_t = torch.from_numpy(images)
    say(f"rendered {len(scenes)} training scenes in {time.time() - t0:.0f} s")

    decay = [p for n, p in clip.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in clip.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * 0.5 * (1 + math.cos(math.pi * progress))

    clip.train()
    start = time.time()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        index = rng.choice(len(scenes), size=args.batch, replace=False)
        batch_scenes = [scenes[i] for i in index]
        positives = [S.sample_caption(s, rng) for s in batch_scenes]
        negatives = [S.perturb_caption(c, rng) for c in positives]
        captions = positives + negatives
        targets = torch.from_numpy(S.match_matrix(captions, batch_scenes).astype(np.float32))

        image_emb = image_tower(images_t[index])
        text_emb = text_tower(tokens.batch([c.text for c in captions]))
        scale = clip.logit_scale.exp().clamp(max=100)
        logits = scale * image_emb @ text_emb.T  # [B, 2B]
        image_to_text = soft_cross_entropy(logits, targets)
        has_image = targets.sum(0) > 0  # every positive caption, some negatives
        text_to_image = soft_cross_entropy(logits.T[has_image], targets.T[has_image])
        loss = (image_to_text + text_to_image) / 2

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(clip.parameters(), 1.0)
        optimizer.step()

        if step % 50 == 0:
            rate = (step + 1) / (time.time() - start)
            say(f"step {step} loss {loss.item():.4f} scale {scale.item():.1f} ({rate:.2f} steps/s)")
        if args.eval_every and step > 0 and step % args.eval_every == 0:
            report = evaluate(image_tower, text_tower, tokens, args.image_size, per_combination=1)
            say(" | ".join(report.lines()))
            save(clip, out, bpe_file, args.image_size)
            clip.train()

    report = evaluate(image_tower, text_tower, tokens, args.image_size, per_combination=5)
    say("final: " + " | ".join(report.lines()))
    save(clip, out, bpe_file, args.image_size)
    training = {
        "steps": args.steps,
        "batch": args.batch,
        "pool": args.pool,
        "minutes": round((time.time() - start) / 60, 1),
        "threads": args.threads,
        "zero_shot": report.zero_shot,
        "text_to_image_p_at_5": report.text_to_image_p_at_5,
    }
    (out / "training.json").write_text(json.dumps(training, indent=2) + "\n")
    say(f"saved {out}")


@torch.no_grad()
def evaluate(image_tower, text_tower, tokens, image_size: int, per_combination: int):
    image_tower.eval()
    text_tower.eval()

    def embed_images(batch: np.ndarray) -> np.ndarray:
        chunks = np.array_split(batch, max(1, len(batch) // 256))
        return torch.cat([image_tower(torch.from_numpy(c)) for c in chunks]).numpy()

    def embed_texts(texts) -> np.ndarray:
        return text_tower(tokens.batch(list(texts))).numpy()

    return quality.evaluate(embed_images, embed_texts, image_size=image_size, per_combination=per_combination)


def save(clip, out: Path, bpe_file: Path, image_size: int) -> None:
    half = copy.deepcopy(clip).to(torch.float16)
    half.save_pretrained(str(out), safe_serialization=True)
    vocabulary = model_files.vocabulary_from_open_clip_bpe(bpe_file)
    model_files.write_hf_tokenizer_files(out, vocabulary, clip.config.text_config.max_position_embeddings)
    model_files.write_preprocessor_config(out, image_size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="mmserve/models/default", help="output model directory")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--pool", type=int, default=60000, help="training scenes rendered up front")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--render-size", type=int, default=128)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--embed-dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    train(parser.parse_args(argv))


if __name__ == "__main__":
    main()
