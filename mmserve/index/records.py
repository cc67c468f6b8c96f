"""What an index stores beside each vector, and what a search returns: the same for every backend."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ItemMetadata(BaseModel):
    """What is stored with each vector. All optional."""

    uri: str | None = Field(default=None, description="Where the item came from (a path or URL).")
    content_hash: str | None = Field(default=None, description="Hash of the source bytes (incremental indexing).")
    caption: str | None = None
    tags: list[str] = Field(default_factory=list)


class Record(ItemMetadata):
    key: int
    created: float
    updated: float


class Hit(BaseModel):
    key: int
    score: float  # cosine similarity
    record: Record
