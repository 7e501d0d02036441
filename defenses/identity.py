"""No defense: the image itself is released. Calibrates every attacker."""
from bench.protocol import Defense


class Identity(Defense):
    name = "identity"
    description = "no defense: releases the clean image (the baseline every leakage number is relative to)"
    releases = "image"

    def __init__(self):
        pass

    def _release(self, xb):
        return xb
