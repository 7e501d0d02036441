"""Dataset loaders (plugins in the `bench.datasets` entry-point group) and splits."""
