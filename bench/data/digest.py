"""The content digest of the data a run was computed from (its data identity).

Cache keys and run_ids name a dataset by its name, options, split indices and seed; two
different contents under one name (a corrected `labels.csv`, replaced images) would share
them. This digest covers the bytes themselves: the images and the labels of every task at
the indices a run uses, with the class names that give the labels their meaning. Every
shared artifact is keyed by it and every record carries it, so nothing computed on other
data is ever reused or counted as done.
"""
from __future__ import annotations

import hashlib

import torch

from bench.data.base import ImageDataset


def content_digest(data: ImageDataset, indices: torch.Tensor) -> str:
    """sha256 of images, labels and class names of `data` at `indices` (in the given order)."""
    idx = indices.to(torch.long)
    h = hashlib.sha256()
    h.update(f"{tuple(data.images.shape[1:])}|{len(idx)}".encode())
    h.update(idx.numpy().tobytes())
    # Indexing copies; one contiguous block of the whole selection hashes fastest.
    h.update(data.images[idx].contiguous().numpy().tobytes())
    for task in sorted(data.labels):
        h.update(f"\0task {task}: {data.classes[task]!r}\0".encode())
        h.update(data.labels[task][idx].to(torch.int64).numpy().tobytes())
    return h.hexdigest()
