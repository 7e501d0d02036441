"""Built-in defenses, one a file, discovered through the `bench.defenses` entry points."""
