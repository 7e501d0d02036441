"""First decode vs cached reload of CIFAR-10 from its tarballs.

    python -m bench.benchmarks.data_cache --data-dir ../shared/data

Points BENCH_CACHE at a fresh temporary directory, so the first load really decodes.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--repeats", type=int, default=3, help="cached reloads to time (the median is reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["BENCH_CACHE"] = cache
        from bench.data.cifar10 import CIFAR10

        start = time.perf_counter()
        ds = CIFAR10(download=False).load(args.data_dir)
        first = time.perf_counter() - start
        reloads = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            CIFAR10(download=False).load(args.data_dir)
            reloads.append(time.perf_counter() - start)
        reload = sorted(reloads)[len(reloads) // 2]
        size = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file())
    print(f"CIFAR-10 from {args.data_dir}: {len(ds.images)} images {tuple(ds.image_shape)}")
    print(f"first decode:   {first:8.2f} s")
    print(f"cached reload:  {reload:8.2f} s (median of {args.repeats})")
    print(f"speed-up:       {first / reload:8.1f} x")
    print(f"cache on disk:  {size / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
