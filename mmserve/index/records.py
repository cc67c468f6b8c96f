"""What an index stores beside each vector, and what a search returns: the same for every backend.

One index may hold several modalities (images, video moments, sounds, texts) and, where a modality has its own
model, several embedding spaces: the image-text model's ("main": images, texts, video frames, and the bundled
audio tower, which was trained into it) and a CLAP checkpoint's ("clap": its sounds, queried by its own text
tower). Cosine similarity is only meaningful within one space, so every item records its space and a search
states the space of its query (`SpaceMismatchError` otherwise).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

Modality = Literal["image", "video", "audio", "text"]
MODALITIES: tuple[str, ...] = ("image", "video", "audio", "text")
MAIN_SPACE = "main"


class SpaceMismatchError(ValueError):
    """A query vector of one embedding space against items of another (their similarities mean nothing)."""


class ItemMetadata(BaseModel):
    """What is stored with each vector. All optional; an item is an image of the main space unless told."""

    uri: str | None = Field(default=None, description="Where the item came from (a path or URL).")
    content_hash: str | None = Field(default=None, description="Hash of the source bytes (incremental indexing).")
    caption: str | None = None
    tags: list[str] = Field(default_factory=list)
    modality: Modality = Field(default="image", description="What the vector embeds.")
    space: str = Field(default=MAIN_SPACE, description="The embedding space of the vector (\"main\": the image-"
                       "text model's; \"clap\": a CLAP checkpoint's audio space).")
    start: float | None = Field(default=None, ge=0, description="A segment's start in its source, seconds "
                                "(video moments, sound windows).")
    end: float | None = Field(default=None, ge=0, description="The segment's end, seconds.")

    @model_validator(mode="after")
    def _times_in_order(self) -> ItemMetadata:
        if (self.start is None) != (self.end is None):
            raise ValueError("a segment has both a start and an end, or neither")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(f"a segment ends ({self.end}) before it starts ({self.start})")
        return self


class Record(ItemMetadata):
    key: int
    created: float
    updated: float


class Hit(BaseModel):
    key: int
    score: float  # cosine similarity
    record: Record


def check_query_space(space: str, modality: str | None, counts: dict[tuple[str, str], int]) -> str | None:
    """The space filter a search needs, given the query's `space`, an optional `modality` filter and the
    index's item counts per (modality, space): None when every searched item is in the query's space, else
    `space`; `SpaceMismatchError` where the items asked for are all in another space."""
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    wanted = {key: n for key, n in counts.items() if n and (modality is None or key[0] == modality)}
    present = {s for _, s in wanted}
    if wanted and space not in present:
        hint = ("a text through the image-text model's text tower (embed_texts without modality), or an image"
                if MAIN_SPACE in present else
                "a text through the audio model's own text tower: embed_texts(..., modality=\"audio\")")
        raise SpaceMismatchError(
            f"the query vector is in the {space!r} space but the {modality or 'indexed'} items are in "
            f"{_describe(wanted)}; their similarities would mean nothing: query with {hint}")
    return None if present <= {space} else space


def _describe(counts: dict[tuple[str, str], int]) -> str:
    by_space: dict[str, list[str]] = {}
    for (modality, space), n in sorted(counts.items()):
        by_space.setdefault(space, []).append(f"{n} {modality}")
    return "; ".join(f"the {space!r} space ({', '.join(items)})" for space, items in by_space.items())
