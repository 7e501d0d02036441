"""Built-in attackers, one a file, discovered through the `bench.attackers` entry points."""
