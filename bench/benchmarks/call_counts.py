"""Counted in every process of a benchmark: trainings of the designated and clean models, and
calls to Defense.fit and Defense.release, appended to a file the parent process reads.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path


def count_calls(path: str) -> None:
    """From now on, append one line per Defense.fit / Defense.release call and per training of a
    designated or clean model by the harness (`bench.pipeline`) in this process to `path`."""
    # Imported here: loky may run this function pickled by value.
    import bench.pipeline
    from bench.protocol import Defense

    for name in ("fit", "release"):
        method = getattr(Defense, name)
        if not hasattr(method, "count_file"):
            method = _counting(name, method)
            setattr(Defense, name, method)
        method.count_file = path
    fit = bench.pipeline.fit_classifier
    if not hasattr(fit, "count_file"):
        fit = _counting_trainings(fit)
        bench.pipeline.fit_classifier = fit
    fit.count_file = path


def _counting(name: str, method):
    def counted(self, *args, **kwargs):
        record(counted.count_file, name)
        return method(self, *args, **kwargs)

    return counted


def _counting_trainings(fit):
    # The pipeline names each training by its role: "target cnn", "attacker-clean resnet", ...
    def counted(*args, desc: str = "classifier", **kwargs):
        record(counted.count_file, "designated" if desc.startswith("target") else "clean")
        return fit(*args, desc=desc, **kwargs)

    return counted


def record(path: str | None, name: str) -> None:
    if path is not None:
        with open(path, "a") as f:
            f.write(name + "\n")


def counts_text(c: Counter) -> str:
    return (f"designated {c['designated']:3d}, clean {c['clean']:3d}, defense fits {c['fit']:3d}, "
            f"release calls {c['release']:3d}")


def read_counts(path: Path) -> Counter:
    return Counter(path.read_text().split()) if path.exists() else Counter()
