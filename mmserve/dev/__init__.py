"""Tooling around the product, outside the serving path: training the bundled model and its synthetic data,
quality figures, the demo, the load generator and the soak test. Nothing under `mmserve.serving`, the client
or the index imports from here."""
