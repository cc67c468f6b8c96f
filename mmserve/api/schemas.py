"""The HTTP API's request and response bodies (pydantic: they are also its OpenAPI schema).

`/v1/embeddings` follows OpenAI's schema exactly, so OpenAI's own clients work unchanged; an input item is a
text, or an image as a `data:image/jpeg|png;base64,...` URI (NVIDIA NV-CLIP's convention), or a video or a
sound as a `data:video/...;base64,` / `data:audio/...;base64,` URI (its pooled vector).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

# -- OpenAI embeddings -----------------------------------------------------------------------------------------


class EmbeddingRequest(BaseModel):
    model: str = Field(description="The model's id (GET /v1/models).")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list: each item a text, or an image as a data:image/jpeg|png;base64,... URI "
        "(http(s) image URLs only from hosts the server allows). Token arrays are refused: mmserve tokenizes.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, description="Must equal the model's dimension (no truncation).")
    user: str | None = None
    modality: Literal["image", "video", "audio"] | None = Field(
        default=None, description="mmserve's extension: embed the texts as queries for items of this modality "
        "(for a CLAP model's sounds, its own text tower); default: the image-text model's text tower.")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32, as OpenAI encodes it


class Usage(BaseModel):
    prompt_tokens: int = Field(description="One per input item (mmserve does not meter by token).")
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "mmserve"
    # mmserve's own: what the model is.
    family: str
    embedding_dim: int
    score_function: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- search, classify, rank, index items ---------------------------------------------------------------------


class SearchRequest(BaseModel):
    query: str | None = Field(default=None, description="Text to images, video moments and sounds.")
    image: str | None = Field(default=None, description="An image (base64, or a data: URI) to look-alikes.")
    video: str | None = Field(default=None, description="A video (base64, or a data: URI): its pooled vector.")
    audio: str | None = Field(default=None, description="A sound (base64, or a data: URI): its pooled vector.")
    vector: list[float] | None = Field(default=None, description="An embedding of the model's dimension.")
    space: str = Field(default="main", description="The space of `vector` (\"main\", or the audio model's).")
    k: int = Field(default=10, ge=1)
    tags: list[str] | None = Field(default=None, description="Only items carrying every one of these tags.")
    modality: Literal["image", "video", "audio"] | None = Field(
        default=None, description="Only items of this modality (a CLAP model's sounds: the query text goes "
        "through its own text tower).")
    per_source: bool = Field(default=True, description="Each video once, at its best moment (false: every "
                             "matching moment).")
    index: str | None = Field(default=None, description="Which index (default: the only one, or the first).")


class SearchHit(BaseModel):
    key: int
    score: float
    uri: str | None
    caption: str | None
    tags: list[str]
    modality: str = "image"
    space: str = "main"
    start: float | None = Field(default=None, description="A video moment's start (seconds).")
    end: float | None = None


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    index: str
    data: list[SearchHit]


class ClassifyRequest(BaseModel):
    image: str = Field(description="The image (base64, or a data: URI).")
    labels: list[str] = Field(min_length=1)
    template: str = Field(default="{}", description='Formats each label, e.g. "a photo of a {}".')


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="Cosine similarity.")
    probability: float = Field(description="Softmax over the labels (CLIP) or the label's sigmoid (SigLIP).")


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[LabelScore]


class RankRequest(BaseModel):
    image: str
    texts: list[str] = Field(min_length=1)


class RankedText(BaseModel):
    text: str
    score: float = Field(description="The cosine (CLIP) or the pair's sigmoid probability (SigLIP).")


class RankResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[RankedText]


class NewItem(BaseModel):
    """One of image, video or audio: a video adds an item per sampled moment."""

    image: str | None = Field(default=None, description="The image's bytes, base64 (or a data: URI).")
    video: str | None = Field(default=None, description="A video's bytes, base64 (or a data: URI).")
    audio: str | None = Field(default=None, description="A sound's bytes, base64 (or a data: URI).")
    uri: str | None = None
    caption: str | None = None
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_medium(self) -> NewItem:
        if sum(value is not None for value in (self.image, self.video, self.audio)) != 1:
            raise ValueError("give exactly one of image, video or audio")
        return self

    @property
    def modality(self) -> str:
        return "image" if self.image is not None else "video" if self.video is not None else "audio"


class AddItemsRequest(BaseModel):
    items: list[NewItem] = Field(min_length=1)


class AddItemsResponse(BaseModel):
    index: str
    keys: list[int]
    size: int


class DeletedItem(BaseModel):
    index: str
    key: int
    deleted: bool


# -- errors, health --------------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    server: str
    models_ready: bool
    indexes: dict[str, int]
