"""The HTTP API and search page (`mmserve api`): OpenAI-compatible embeddings, search, classify, rank and index
items over Triton, through the async SDK (`app.create_app`)."""

from mmserve.api.app import ApiSettings, create_app

__all__ = ["ApiSettings", "create_app"]
