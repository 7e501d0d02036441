"""A benchmark harness for defenses against input repurposing."""

__version__ = "0.1.0"
