"""Wall time to regenerate the Fashion-MNIST reference grid from nothing, on this machine.

    python -m bench.benchmarks.grid_time --seeds 0-2 --jobs 2

The grid is what `results/reference` holds for Fashion-MNIST's four main defenses: identity,
VFC and ARL against every attacker, and FMD against every attacker on 5,000 released images
per split with the adaptive attacker's budget curve. Its commands run one after the
other, as a user would type them, each through `python -m bench run` in a fresh interpreter,
with an empty BENCH_CACHE (the data is decoded, every model trained, every split released), an
empty results directory and `--no-reference` (the identity runs are part of the grid), at the
default precision. With fewer seeds than 3, the time of 3 is estimated as
time x 3 / seeds: seeds share nothing but the decoded data, so the estimate is a slight upper
bound. The goal is 60 minutes for the 3 seeds on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

GOAL_MIN = 60.0
GRID = (
    ["--defense", "identity,vfc,arl", "--attacker", "all"],
    ["--defense", "fmd", "--attacker", "all", "--max-release", "5000",
     "--set", "adaptive.budget=0,300,1000,3000"],
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0-2", help="seeds to run (default 0-2; fewer are scaled to 3)")
    p.add_argument("--jobs", type=int, default=os.cpu_count(), help="--jobs of each command (default: all cores)")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default) or synthetic for tests")
    p.add_argument("--preset", default="default", help="the commands' --preset (default: default)")
    p.add_argument("--data-dir", type=Path, help="where Fashion-MNIST lives (default: the loader's own search)")
    p.add_argument("--keep", type=Path, help="keep the results here (default: a temporary directory)")
    args = p.parse_args(argv)
    from bench.planning import parse_seeds
    from bench.errors import BenchError
    from bench.results.records import load_runs

    try:
        seeds = parse_seeds(args.seeds)
    except BenchError as e:
        p.error(str(e))
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        # Finished runs there would be skipped, and the time would not be the grid's.
        p.error(f"--keep {args.keep}: not empty; the grid is timed into an empty results directory")
    with tempfile.TemporaryDirectory(prefix="grid-time-") as tmp:
        results = args.keep or Path(tmp) / "results"
        env = {**os.environ, "BENCH_CACHE": str(Path(tmp) / "cache")}
        cores = os.cpu_count() or 1
        print(f"machine: {cores} cores; {args.dataset}, preset {args.preset}, seeds {args.seeds}, "
              f"--jobs {args.jobs}; empty cache and results", flush=True)
        total = cpu_total = 0.0
        for extra in GRID:
            command = [sys.executable, "-m", "bench", "run", *extra, "--seeds", args.seeds, "--jobs", str(args.jobs),
                       "--dataset", args.dataset, "--preset", args.preset,
                       "--no-plots", "--no-reference", "--results-dir", str(results)]
            if args.data_dir:
                command += ["--data-dir", str(args.data_dir)]
            start, cpu_start = time.perf_counter(), _children_cpu_s()
            done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            took, cpu = time.perf_counter() - start, _children_cpu_s() - cpu_start
            if done.returncode:
                print(done.stderr[-4000:], file=sys.stderr)
                print(f"error: {' '.join(command)} exited {done.returncode}", file=sys.stderr)
                return 1
            total += took
            cpu_total += cpu
            print(f"{' '.join(['bench run', *extra])}: {took / 60:6.1f} min, CPU {cpu / 60:6.1f} min "
                  f"({cpu / took / cores:.0%} of {cores} cores)", flush=True)
        runs = load_runs(results)
        statuses = Counter(r["status"] for r in runs)
        print(f"runs: {len(runs)} ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))})")
        # The CPU time (every process of the commands) bounds any scheduler on these cores.
        print(f"CPU time: {cpu_total / 60:.1f} min over {total / 60:.1f} min wall = {cpu_total / total / cores:.0%} of "
              f"{cores} cores; at full use of them: {cpu_total / cores / 60:.1f} min")
        estimate = total * 3 / len(seeds)
        scaled = "" if len(seeds) == 3 else f" (measured {total / 60:.1f} min for {len(seeds)} seed(s), x 3/{len(seeds)})"
        print(f"grid time ratio: {estimate / 60 / GOAL_MIN:.2f} of the {GOAL_MIN:.0f}-min goal: "
              f"{estimate / 60:.1f} min for 3 seeds{scaled}")
    return 0


def _children_cpu_s() -> float:
    """User + system CPU seconds of every finished child process (and their reaped children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    raise SystemExit(main())
