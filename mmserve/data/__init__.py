"""Data sources: the synthetic image-caption generator."""
