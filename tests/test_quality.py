"""The bundled model's quality on the held-out set, through the serving runtime.

Thresholds from the foundation issue: zero-shot accuracy >= 0.95 for color and
shape, >= 0.90 for size and position; text-to-image precision@5 >= 0.80 for
queries naming all four attributes. The held-out scenes come from a seed range
training never draws from (`synthetic.HELDOUT_SEED_BASE`).
"""

import pytest

from mmserve.embedder import LocalEmbedder
from mmserve.dev.quality import evaluate

THRESHOLDS = {"color": 0.95, "shape": 0.95, "size": 0.90, "position": 0.90}


@pytest.fixture(scope="module")
def report(bundled_settings):
    embedder = LocalEmbedder(bundled_settings)
    return evaluate(embedder.embed_pixels, embedder.embed_texts, image_size=embedder.info.image_size)


@pytest.mark.parametrize("attribute", sorted(THRESHOLDS))
def test_zero_shot_accuracy(report, attribute):
    assert report.zero_shot[attribute] >= THRESHOLDS[attribute], report.lines()


def test_text_to_image_precision_at_5(report):
    assert report.images == 360 * 5
    assert report.text_to_image_p_at_5 >= 0.80, report.lines()
