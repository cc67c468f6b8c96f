import numpy as np
import pytest

from mmserve.dev import synthetic as S


def test_scenes_and_images_are_deterministic_from_the_seed():
    a, b = S.make_scene(1234), S.make_scene(1234)
    assert a == b
    assert np.array_equal(S.render_scene(a, 96), S.render_scene(b, 96))
    assert S.make_scene(1235) != a


def test_generator_covers_every_attribute_value_and_two_object_scenes():
    scenes = [S.make_scene(i) for i in range(2000)]
    objects = [o for s in scenes for o in s.objects]
    for attribute, values in S.ATTRIBUTE_VALUES.items():
        assert {o.attribute(attribute) for o in objects} == set(values)
    assert {s.background for s in scenes} == set(S.BACKGROUNDS)
    two = [s for s in scenes if len(s.objects) == 2]
    assert 0.15 < len(two) / len(scenes) < 0.35
    for s in two:  # opposite positions never overlap
        assert {o.position for o in s.objects} in ({"left", "right"}, {"top", "bottom"})


def test_drawn_object_has_its_color_at_its_position():
    obj = S.SceneObject("blue", "square", "large", "left")
    image = S.render_scene(S.scene_with([obj], "white", 7), 128).astype(int)
    centre = image[64, 32]
    assert np.abs(centre - np.array(S.COLORS["blue"])).max() <= 20
    assert image[64, 110].min() > 200  # right side is background


def test_captions_use_several_templates_and_are_true_of_their_scene():
    rng = np.random.default_rng(0)
    texts = set()
    for i in range(500):
        scene = S.make_scene(i)
        caption = S.sample_caption(scene, rng)
        assert S.caption_matches(caption, scene)
        texts.add(caption.text.split(" a")[0])
    assert len(texts) >= 4


def test_hard_negative_changes_exactly_one_attribute():
    rng = np.random.default_rng(1)
    for i in range(300):
        scene = S.make_scene(i)
        caption = S.sample_caption(scene, rng)
        negative = S.perturb_caption(caption, rng)
        before = [q.named() for q in caption.objects] + [caption.background]
        after = [q.named() for q in negative.objects] + [negative.background]
        changed = sum(
            (x != y) if not isinstance(x, dict) else sum(x[k] != y[k] for k in x)
            for x, y in zip(before, after)
        )
        assert changed == 1


def test_vectorised_match_matrix_equals_the_definition():
    rng = np.random.default_rng(2)
    scenes = [S.make_scene(i) for i in range(120)]
    captions = [S.sample_caption(s, rng) for s in scenes]
    captions += [S.perturb_caption(c, rng) for c in captions]
    expected = np.array([[S.caption_matches(c, s) for c in captions] for s in scenes])
    assert np.array_equal(S.match_matrix(captions, scenes), expected)
    assert expected[np.arange(120), np.arange(120)].all()


@pytest.mark.parametrize(
    "query, expected",
    [
        (S.ObjectQuery(color="red"), True),
        (S.ObjectQuery(color="red", position="right"), False),
        (S.ObjectQuery(shape="cross", position="right"), True),
    ],
)
def test_caption_matches_any_object_of_a_two_object_scene(query, expected):
    scene = S.scene_with(
        [S.SceneObject("red", "circle", "small", "left"), S.SceneObject("blue", "cross", "large", "right")],
        "gray",
        0,
    )
    assert S.caption_matches(S.CaptionSpec(objects=(query,)), scene) is expected


def test_heldout_seeds_are_disjoint_from_training_seeds():
    heldout = S.heldout_single_object_scenes(1)
    assert len(heldout) == len(S.all_combinations()) == 360
    assert min(s.seed for s in heldout) >= S.HELDOUT_SEED_BASE
    with pytest.raises(ValueError):
        list(S.training_scenes(S.HELDOUT_SEED_BASE - 1, 2))
