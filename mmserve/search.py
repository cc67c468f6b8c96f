"""Cross-modal search: an `Index` of image embeddings queried through the embedding server.

    search = Search(mmserve.Client("grpc://127.0.0.1:8001"), Index.open("photos.index", view=True))
    search.search_text("a red circle", k=5)          # text -> image
    search.search_image("query.jpg", k=5)            # image -> image
    search.classify("query.jpg", ["cat", "dog"])     # image -> text: zero-shot labels with probabilities
    search.rank("query.jpg", ["a cat", "a dog"])     # image -> text: the texts by similarity
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from mmserve.index import Hit, Index

# CLIP's learned temperature is capped at 100 (logit_scale = ln 100); zero-shot probabilities use it.
CLIP_LOGIT_SCALE = 100.0


class Label(BaseModel):
    label: str
    score: float  # cosine similarity between the image and the label's text
    probability: float  # softmax over the given labels at CLIP's temperature


class Search:
    def __init__(self, client, index: Index | None = None) -> None:
        """`client`: an `mmserve.Client` (or anything with `embed_texts` / `embed_images`)."""
        self.client = client
        self.index = index

    def search_text(self, text: str, k: int = 10, *, tags: Sequence[str] | None = None) -> list[Hit]:
        return self._index().search(self.client.embed_texts([text])[0], k, tags=tags)

    def search_image(self, image, k: int = 10, *, tags: Sequence[str] | None = None) -> list[Hit]:
        return self._index().search(self.client.embed_images([image])[0], k, tags=tags)

    def classify(self, image, labels: Sequence[str], *, template: str = "{}") -> list[Label]:
        """Zero-shot classification: each label (formatted with `template`, e.g. "a photo of a {}"), best first."""
        if not labels:
            raise ValueError("classify needs at least one label")
        scores = self._scores(image, [template.format(label) for label in labels])
        logits = CLIP_LOGIT_SCALE * (scores - scores.max())
        probabilities = np.exp(logits) / np.exp(logits).sum()
        order = np.argsort(-scores, kind="stable")
        return [Label(label=labels[i], score=float(scores[i]), probability=float(probabilities[i])) for i in order]

    def rank(self, image, texts: Sequence[str]) -> list[tuple[str, float]]:
        """The texts ordered by cosine similarity to the image, best first."""
        scores = self._scores(image, list(texts))
        return [(texts[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")]

    def _scores(self, image, texts: list[str]) -> np.ndarray:
        image_vector = self.client.embed_images([image])[0]
        return self.client.embed_texts(texts) @ image_vector

    def _index(self) -> Index:
        if self.index is None:
            raise ValueError("this Search has no index: pass one to search the collection")
        return self.index
