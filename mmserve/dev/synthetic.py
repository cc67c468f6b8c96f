"""Procedurally drawn image-caption pairs.

Every scene is one or two flat shapes on a background. Each object has four
attributes (color, shape, size, position) and the background has a kind; a
caption names any subset of them. Because the ground truth is known, a caption
can be checked against any scene (`caption_matches`), which is what training
(multi-positive targets, hard negatives), the quality tests, the demo gallery
and the benchmarks all rely on.

Everything is deterministic from a seed: `make_scene(seed)` returns the same
scene on every machine, and `render_scene` draws it the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (235, 205, 30),
    "purple": (135, 50, 175),
    "orange": (245, 135, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
# Object radius as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.10, "medium": 0.17, "large": 0.25}
# Object centre as (x, y) fractions of the image side.
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
POSITIONS_LIST: tuple[str, ...] = tuple(POSITIONS)
BACKGROUNDS: tuple[str, ...] = ("white", "gray", "black", "gradient", "noisy")
ATTRIBUTES: tuple[str, ...] = ("color", "shape", "size", "position")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
}
# Two objects share a scene only at opposite positions, so they never overlap.
_OPPOSITE_PAIRS: tuple[tuple[str, str], ...] = (("left", "right"), ("top", "bottom"))

_TEMPLATES: tuple[str, ...] = (
    "{obj}",
    "a photo of {obj}",
    "an image of {obj}",
    "a picture showing {obj}",
    "there is {obj}",
    "a drawing of {obj}",
)


@dataclasses.dataclass(frozen=True)
class SceneObject:
    color: str
    shape: str
    size: str
    position: str

    def attribute(self, name: str) -> str:
        return str(getattr(self, name))


@dataclasses.dataclass(frozen=True)
class Scene:
    """What an image shows, plus the per-image jitter that makes it unique."""

    objects: tuple[SceneObject, ...]
    background: str
    seed: int


@dataclasses.dataclass(frozen=True)
class ObjectQuery:
    """Attributes a caption names for one object; absent ones are unconstrained."""

    color: str | None = None
    shape: str | None = None
    size: str | None = None
    position: str | None = None

    def named(self) -> dict[str, str]:
        return {a: v for a in ATTRIBUTES if (v := getattr(self, a)) is not None}

    def accepts(self, obj: SceneObject) -> bool:
        return all(obj.attribute(a) == v for a, v in self.named().items())


@dataclasses.dataclass(frozen=True)
class CaptionSpec:
    objects: tuple[ObjectQuery, ...]
    background: str | None = None
    template: int = 0

    @property
    def text(self) -> str:
        phrases = [_object_phrase(q) for q in self.objects]
        text = _TEMPLATES[self.template % len(_TEMPLATES)].format(obj=" and ".join(phrases))
        if self.background is not None:
            text += f" on a {self.background} background"
        return text


def _object_phrase(query: ObjectQuery) -> str:
    words = [w for w in (query.size, query.color) if w is not None]
    words.append(query.shape if query.shape is not None else "shape")
    article = "an" if words[0][0] in "aeiou" else "a"
    phrase = f"{article} {' '.join(words)}"
    if query.position is not None:
        phrase += " " + POSITION_PHRASES[query.position]
    return phrase


def caption_matches(caption: CaptionSpec, scene: Scene) -> bool:
    """True when the scene shows everything the caption says.

    Each object query must be met by a different object of the scene; a caption
    that says nothing about the background accepts any background.
    """
    if caption.background is not None and caption.background != scene.background:
        return False
    queries = caption.objects
    if len(queries) > len(scene.objects):
        return False
    if len(queries) == 1:
        return any(queries[0].accepts(o) for o in scene.objects)
    a, b = scene.objects[0], scene.objects[1]
    return (queries[0].accepts(a) and queries[1].accepts(b)) or (
        queries[0].accepts(b) and queries[1].accepts(a)
    )


def make_scene(seed: int, *, two_object_rate: float = 0.25) -> Scene:
    """The scene for `seed`: one object, or two at opposite positions."""
    rng = np.random.default_rng(seed)
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    if rng.random() < two_object_rate:
        positions = _OPPOSITE_PAIRS[rng.integers(len(_OPPOSITE_PAIRS))]
        objects = tuple(_random_object(rng, p) for p in positions)
    else:
        objects = (_random_object(rng, POSITIONS_LIST[rng.integers(len(POSITIONS_LIST))]),)
    return Scene(objects=objects, background=background, seed=seed)



def _random_object(rng: np.random.Generator, position: str) -> SceneObject:
    return SceneObject(
        color=ATTRIBUTE_VALUES["color"][rng.integers(len(COLORS))],
        shape=SHAPES[rng.integers(len(SHAPES))],
        size=ATTRIBUTE_VALUES["size"][rng.integers(len(SIZES))],
        position=position,
    )


def scene_with(objects: Sequence[SceneObject], background: str, seed: int) -> Scene:
    """A scene with chosen content; `seed` still drives jitter and texture."""
    return Scene(objects=tuple(objects), background=background, seed=seed)


def full_caption(scene: Scene) -> CaptionSpec:
    """The caption naming every attribute of every object (no background)."""
    return CaptionSpec(
        objects=tuple(ObjectQuery(o.color, o.shape, o.size, o.position) for o in scene.objects)
    )


def sample_caption(
    scene: Scene, rng: np.random.Generator, *, attribute_rate: float = 0.6, full_rate: float = 0.3
) -> CaptionSpec:
    """A random true caption for `scene`.

    With probability `full_rate` every attribute is named; otherwise each
    attribute is named with probability `attribute_rate` (at least one always
    is). Two-object scenes are described as a whole or by one of their objects.
    """
    objects = list(scene.objects)
    if len(objects) == 2 and rng.random() < 0.5:
        objects = [objects[rng.integers(2)]]
    full = rng.random() < full_rate
    queries = []
    for obj in objects:
        named = [a for a in ATTRIBUTES if full or rng.random() < attribute_rate]
        if not named:
            named = [ATTRIBUTES[rng.integers(len(ATTRIBUTES))]]
        queries.append(ObjectQuery(**{a: obj.attribute(a) for a in named}))
    background = scene.background if rng.random() < 0.2 else None
    return CaptionSpec(
        objects=tuple(queries), background=background, template=int(rng.integers(len(_TEMPLATES)))
    )


def perturb_caption(caption: CaptionSpec, rng: np.random.Generator) -> CaptionSpec:
    """The caption with one named attribute swapped for another value.

    Used as a hard negative: it differs from a true caption by exactly one word,
    so the towers must encode every attribute to tell them apart.
    """
    slots: list[tuple[int, str]] = [
        (i, a) for i, q in enumerate(caption.objects) for a in q.named()
    ]
    if caption.background is not None:
        slots.append((-1, "background"))
    index, attribute = slots[rng.integers(len(slots))]
    if index < 0:
        others = [b for b in BACKGROUNDS if b != caption.background]
        return dataclasses.replace(caption, background=others[rng.integers(len(others))])
    query = caption.objects[index]
    current = getattr(query, attribute)
    others = [v for v in ATTRIBUTE_VALUES[attribute] if v != current]
    changed = dataclasses.replace(query, **{attribute: others[rng.integers(len(others))]})
    objects = list(caption.objects)
    objects[index] = changed
    return dataclasses.replace(caption, objects=tuple(objects))


def match_matrix(captions: Sequence[CaptionSpec], scenes: Sequence[Scene]) -> np.ndarray:
    """`[len(scenes), len(captions)]` bool: does scene i show caption j.

    Vectorised form of `caption_matches` (training calls it on 256 x 512 pairs
    per step).
    """
    scene_attrs, scene_bg = _encode_scenes(scenes)  # [S, 2, 4] (-2: no object), [S]
    query_attrs, query_bg, query_count = _encode_captions(captions)  # [T, 2, 4] (-1: any)
    # accept[s, t, q, o]: query q of caption t is met by object o of scene s.
    q = query_attrs[None, :, :, None, :]
    o = scene_attrs[:, None, None, :, :]
    accept = ((q == -1) | (q == o)).all(-1) & (scene_attrs[:, None, None, :, 0] >= 0)
    one = accept[:, :, 0, :].any(-1)
    two = (accept[:, :, 0, 0] & accept[:, :, 1, 1]) | (accept[:, :, 0, 1] & accept[:, :, 1, 0])
    objects_ok = np.where(query_count[None, :] == 1, one, two)
    background_ok = (query_bg[None, :] == -1) | (query_bg[None, :] == scene_bg[:, None])
    return objects_ok & background_ok


def _encode_scenes(scenes: Sequence[Scene]) -> tuple[np.ndarray, np.ndarray]:
    attrs = np.full((len(scenes), 2, len(ATTRIBUTES)), -2, dtype=np.int16)
    background = np.empty(len(scenes), dtype=np.int16)
    for i, scene in enumerate(scenes):
        for j, obj in enumerate(scene.objects):
            for k, a in enumerate(ATTRIBUTES):
                attrs[i, j, k] = _VALUE_INDEX[a][obj.attribute(a)]
        background[i] = BACKGROUNDS.index(scene.background)
    return attrs, background


def _encode_captions(captions: Sequence[CaptionSpec]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # An absent second query accepts anything, so `two` reduces to `one` for it;
    # `count` still routes one-object captions through `one` (any object may match).
    attrs = np.full((len(captions), 2, len(ATTRIBUTES)), -1, dtype=np.int16)
    background = np.full(len(captions), -1, dtype=np.int16)
    count = np.empty(len(captions), dtype=np.int16)
    for i, caption in enumerate(captions):
        count[i] = len(caption.objects)
        for j, query in enumerate(caption.objects):
            for a, v in query.named().items():
                attrs[i, j, ATTRIBUTES.index(a)] = _VALUE_INDEX[a][v]
        if caption.background is not None:
            background[i] = BACKGROUNDS.index(caption.background)
    return attrs, background, count


_VALUE_INDEX: dict[str, dict[str, int]] = {
    a: {v: i for i, v in enumerate(values)} for a, values in ATTRIBUTE_VALUES.items()
}


# Drawing ---------------------------------------------------------------------------


def render_scene(scene: Scene, size: int = 256) -> np.ndarray:
    """Draw `scene` as uint8 RGB `[size, size, 3]`."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng((scene.seed, 0x5CE4E))
    image = Image.fromarray(_background(scene.background, size, rng), "RGB")
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_object(draw, obj, size, rng)
    return np.asarray(image)


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "gradient":
        lo, hi = sorted(rng.uniform(20, 235, size=2))
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        t = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle) + 0.5
        plane = lo + (hi - lo) * np.clip(t, 0, 1)
    elif kind == "noisy":
        coarse = rng.uniform(40, 215, size=(16, 16))
        plane = np.kron(coarse, np.ones((size // 16 + 1, size // 16 + 1)))[:size, :size]
    else:
        level = {"white": 240.0, "gray": 128.0, "black": 15.0}[kind] + rng.uniform(-12, 12)
        plane = np.full((size, size), level)
        plane += rng.normal(0, 3, size=(size, size))
    tint = rng.uniform(-6, 6, size=3)
    return np.clip(plane[..., None] + tint, 0, 255).astype(np.uint8)


def _draw_object(draw, obj: SceneObject, size: int, rng: np.random.Generator) -> None:
    cx, cy = POSITIONS[obj.position]
    cx = (cx + rng.uniform(-0.04, 0.04)) * size
    cy = (cy + rng.uniform(-0.04, 0.04)) * size
    r = SIZES[obj.size] * rng.uniform(0.92, 1.08) * size
    fill = tuple(int(np.clip(c + rng.integers(-18, 19), 0, 255)) for c in COLORS[obj.color])
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif obj.shape == "square":
        h = r * 0.85
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif obj.shape == "triangle":
        pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in _TRIANGLE_ANGLES]
        draw.polygon(pts, fill=fill)
    elif obj.shape == "cross":
        w = r * 0.36
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")


_TRIANGLE_ANGLES = tuple(-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))


# Data sets -------------------------------------------------------------------------

# Seed ranges keep the splits apart: training draws from [0, HELDOUT_SEED_BASE),
# the held-out evaluation set and the demo gallery from their own ranges above it.
HELDOUT_SEED_BASE = 1 << 40
GALLERY_SEED_BASE = 2 << 40


def training_scenes(start: int, count: int) -> Iterator[Scene]:
    if start + count > HELDOUT_SEED_BASE:
        raise ValueError("training seeds would run into the held-out range")
    for seed in range(start, start + count):
        yield make_scene(seed)


def heldout_single_object_scenes(per_combination: int) -> list[Scene]:
    """`per_combination` single-object scenes for every attribute combination.

    These never come out of `training_scenes` (disjoint seeds), and each
    combination has the same count, so precision@k has a known ceiling of 1.
    """
    scenes = []
    seed = HELDOUT_SEED_BASE
    for combo in all_combinations():
        for _ in range(per_combination):
            rng = np.random.default_rng(seed)
            background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
            scenes.append(scene_with([combo], background, seed))
            seed += 1
    return scenes


def all_combinations() -> list[SceneObject]:
    return [
        SceneObject(c, s, z, p)
        for c in COLORS
        for s in SHAPES
        for z in SIZES
        for p in POSITIONS
    ]


def gallery_scenes(count: int, seed: int = 0) -> list[Scene]:
    """A demo/benchmark gallery: mixed one- and two-object scenes."""
    return [make_scene(GALLERY_SEED_BASE + seed * 1_000_000 + i) for i in range(count)]
