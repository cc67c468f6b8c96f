"""Serving through Triton: the model repository, the server launcher and the Python models."""
