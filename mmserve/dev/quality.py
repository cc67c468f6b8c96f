"""Retrieval quality of an encoder on the held-out synthetic set.

Works with anything that embeds uint8 images and strings (the PyTorch towers
while training, an exported runtime in the tests), so the figures in the README
come from the same code that gates the default model in `make test`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from mmserve.dev import synthetic as S

ImageEncoder = Callable[[np.ndarray], np.ndarray]
TextEncoder = Callable[[Sequence[str]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class QualityReport:
    zero_shot: dict[str, float]  # attribute -> accuracy
    text_to_image_p_at_5: float
    images: int

    def lines(self) -> list[str]:
        rows = [f"zero-shot {a:<8} accuracy {v:.3f}" for a, v in self.zero_shot.items()]
        rows.append(f"text-to-image precision@5 (all four attributes) {self.text_to_image_p_at_5:.3f}")
        return rows


def heldout_images(scenes: Sequence[S.Scene], image_size: int, render_size: int = 128) -> np.ndarray:
    """Render and preprocess (shortest side, bicubic, centre crop) to uint8 NHWC."""
    from PIL import Image

    out = np.empty((len(scenes), image_size, image_size, 3), dtype=np.uint8)
    for i, scene in enumerate(scenes):
        picture = Image.fromarray(S.render_scene(scene, render_size))
        out[i] = np.asarray(picture.resize((image_size, image_size), Image.Resampling.BICUBIC))
    return out


def attribute_prompts(attribute: str) -> dict[str, list[str]]:
    """For each value of `attribute`, captions naming only that value (all templates)."""
    prompts = {}
    for value in S.ATTRIBUTE_VALUES[attribute]:
        query = S.ObjectQuery(**{attribute: value})
        prompts[value] = [
            S.CaptionSpec(objects=(query,), template=t).text for t in range(len(S._TEMPLATES))
        ]
    return prompts


def evaluate(
    embed_images: ImageEncoder,
    embed_texts: TextEncoder,
    *,
    image_size: int,
    per_combination: int = 5,
    images: np.ndarray | None = None,
) -> QualityReport:
    scenes = S.heldout_single_object_scenes(per_combination)
    if images is None:
        images = heldout_images(scenes, image_size)
    image_emb = _normalize(embed_images(images))
    truth = [scene.objects[0] for scene in scenes]

    zero_shot = {}
    for attribute in S.ATTRIBUTES:
        prompts = attribute_prompts(attribute)
        values = list(prompts)
        class_emb = np.stack(
            [_normalize(_normalize(embed_texts(prompts[v])).mean(0, keepdims=True))[0] for v in values]
        )
        predicted = (image_emb @ class_emb.T).argmax(1)
        actual = np.array([values.index(o.attribute(attribute)) for o in truth])
        zero_shot[attribute] = float((predicted == actual).mean())

    combos = S.all_combinations()
    queries = [S.CaptionSpec(objects=(S.ObjectQuery(**dataclasses.asdict(c)),)).text for c in combos]
    query_emb = _normalize(embed_texts(queries))
    top5 = np.argsort(-(query_emb @ image_emb.T), axis=1)[:, :5]
    hits = [[truth[j] == combo for j in row] for combo, row in zip(combos, top5)]
    return QualityReport(zero_shot, float(np.mean(hits)), len(scenes))


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
