"""Attack jobs through the harness's runner with 1 worker vs 2 workers.

    python -m bench.benchmarks.parallel --max-images 10000 --seeds 4

A grid of independent jobs (the `adaptive` attacker on identity-released data, one
job per seed) runs through `bench.runner.execute` three times, each into a fresh
results directory:
  - 1 worker with 1 torch thread, and `--workers` workers with cores / workers threads
    each: the speed-up of adding workers at a fixed share of the machine per worker
    (the runner's own setting, so the cores are never oversubscribed);
  - 1 worker with every core as torch threads (`--jobs 1`, what a user gets without
    asking for workers): how much the workers gain over intra-op threading alone.
The shared artifacts (dataset decode, designated models, released splits) are built
once beforehand in a fresh BENCH_CACHE, and a warm-up round runs the same jobs once
through the worker pool before any clock runs: every worker has then imported the
harness and loaded the data, and loky, which restarts a worker whose memory grows by
more than 300 MB after its first call, has settled (a bare import as the first call
made it restart every worker after its first real job, timing start-ups, not jobs).

The run uses a benchmark-only preset (a subset of `--max-images` images, a short
TrainConfig); `preset_everywhere` registers it in this process and in every loky
worker, since workers import the harness afresh and would not know it otherwise.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from joblib import parallel_config

import bench.presets
from bench.presets import Preset
from bench.training import TrainConfig

PRESET_NAME = "benchmark"


def subset_preset(max_images: int, train: TrainConfig) -> Preset:
    """A preset over at most `max_images` images: 40% owner, 40% attacker, 10% val, 10% test."""
    val = max(1, max_images // 10)
    half = max(1, (max_images - 2 * val) // 2)
    return Preset(PRESET_NAME, train, max_owner=half, max_attacker=half, max_val=val, max_test=val,
                  description=f"benchmark scripts: <= {max_images} images, {train.epochs} epochs")


def _setup_process(preset: Preset, setups: tuple) -> None:
    """Runs in this process and, as loky's initializer, in every worker before its first job."""
    # Imported here, not named as a global: run as `python -m`, this function is pickled by value
    # and a global dict would travel as a copy, leaving the worker's own PRESETS unchanged.
    import bench.presets

    bench.presets.PRESETS[preset.name] = preset
    for fn, args in setups:
        fn(*args)


@contextmanager
def preset_everywhere(preset: Preset, setups: tuple = ()):
    """Make `preset` (and any extra `(fn, args)` setups) known to in-process and loky-worker jobs alike."""
    _setup_process(preset, setups)
    try:
        with parallel_config(backend="loky", initializer=_setup_process, initargs=(preset, setups)):
            yield
    finally:
        bench.presets.PRESETS.pop(preset.name, None)


@contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch threads in this process, as the runner would leave them otherwise."""
    previous, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    # The runner sets cores // jobs threads unless OMP_NUM_THREADS is set: setting it pins the count.
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


def header(device: str) -> str:
    omp = os.environ.get("OMP_NUM_THREADS")
    return (f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} torch threads "
            f"in this process, device {device}, OMP_NUM_THREADS={omp if omp else 'unset'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default) or synthetic for tests")
    parser.add_argument("--data-dir", type=Path, help="where the dataset lives (default: the loader's own search)")
    parser.add_argument("--max-images", type=int, default=10000, help="subset size (default 10000)")
    parser.add_argument("--seeds", type=int, default=4, help="jobs in the grid, one per seed (default 4)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of every model (default 3)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="jobs of the parallel timing (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default) | cuda | auto")
    args = parser.parse_args()
    if args.seeds < 2 or args.workers < 2:
        parser.error("--seeds and --workers must be >= 2 for a parallel timing to mean anything")

    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as results:
        os.environ["BENCH_CACHE"] = cache  # before any worker starts: they inherit it
        from bench.artifacts import Artifacts
        from bench.pipeline import Stage, load_dataset
        from bench.runner import Env, execute
        from bench.runspec import RunSpec
        from bench.training import resolve_device

        device = resolve_device(args.device)
        data_dir = str(args.data_dir) if args.data_dir else None
        task = load_dataset(args.dataset, (), data_dir).default_task
        preset = subset_preset(args.max_images, TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                                             lr=5e-3, augment=True, patience=args.epochs))
        specs = [RunSpec(defense="identity", attacker="adaptive", dataset=args.dataset, target_task=task,
                         attack_task=task, target_arch="cnn", seed=seed, preset=PRESET_NAME)
                 for seed in range(args.seeds)]
        print(header(str(device)))
        print(f"grid: identity x adaptive x {args.seeds} seeds on {args.dataset}, <= {args.max_images} images, "
              f"{args.epochs} epochs, batch {args.batch_size}")
        with preset_everywhere(preset):
            start = time.perf_counter()
            for spec in specs:  # what the runner's preparation stage builds, so that both timings find it cached
                stage = Stage.open(spec, data_dir, device, Artifacts())
                defense, _ = stage.defense()
                for split in ("attacker", "val", "test"):
                    stage.released(defense, split)
            shared = time.perf_counter() - start
            cores = os.cpu_count() or 1

            def timed(jobs: int, name: str) -> float:
                out = Path(results) / name  # a fresh directory: nothing may be skipped as already done
                start = time.perf_counter()
                summary = execute(specs, Env(results_dir=out, data_dir=data_dir, device=args.device, jobs=jobs))
                if summary.failed or summary.ok != len(specs):
                    raise SystemExit(f"{name}: {summary.text()}")
                return time.perf_counter() - start

            warm_up = timed(args.workers, "warm-up")
            with torch_threads(1):
                one = timed(1, "1-worker-1-thread")
            many = timed(args.workers, "workers")
            with torch_threads(cores):
                threaded = timed(1, "1-worker-all-threads")

    per_worker = max(1, cores // args.workers)
    print(f"shared artifacts:   {shared:8.2f} s (built once, not timed below)")
    print(f"warm-up round:      {warm_up:8.2f} s ({args.workers} workers start, import, load; not timed below)")
    print(f"1 worker:           {one:8.2f} s ({len(specs)} attack jobs, 1 torch thread)")
    print(f"{args.workers} workers:          {many:8.2f} s ({len(specs)} attack jobs, {per_worker} torch "
          f"thread{'s' if per_worker > 1 else ''} each)")
    print(f"{f'1 worker, {cores} threads:':<20}{threaded:8.2f} s ({len(specs)} attack jobs, --jobs 1 on all cores)")
    print(f"speed-up:           {one / many:8.2f} x ({args.workers} workers vs 1 worker)")
    print(f"vs threads alone:   {threaded / many:8.2f} x ({args.workers} workers vs 1 worker on {cores} threads)")

if __name__ == "__main__":
    main()
