"""A new defense's full verdict, cold: how long a researcher waits for it on this machine.

    python -m bench.benchmarks.new_defense --jobs 2

The work is a defense from another package (a small plugin declared by its own distribution,
as a user's would be) x every attacker, on Fashion-MNIST, with an empty BENCH_CACHE and an
empty results directory, each command through `python -m bench run` in a fresh interpreter:

- today's path: `--precision fp32 --no-reference`: every identity calibration run computed here,
  in fp32 (the harness's CPU path before bf16 and reference identity runs);
- the new path: the default `--precision auto` (bf16 autocast with channels_last where the CPU has
  native bf16) with the identity runs taken from the reference results (`--reference`, default the
  repository's results/reference/).

Both paths run seed 0, side by side, and the speed-up is today's time over the new one's. Then
the new path's remaining seeds run into the same cache and results (as one `--seeds 0-2` command
would: seeds share only the decoded data), and their times add up to the minutes of the verdict.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

PLUGIN = '''
import torch.nn.functional as F
from bench.protocol import Defense


class BoxBlur(Defense):
    name = "boxblur"
    description = "average-pool blur of the image (a stand-in for a user's defense)"
    releases = "image"

    def __init__(self, kernel: int = 3):
        self.kernel = kernel

    def _release(self, xb):
        return F.avg_pool2d(xb, self.kernel, stride=1, padding=self.kernel // 2, count_include_pad=False)
'''
GOAL_SPEEDUP = 4.0
GOAL_MIN = 10.0


def install_plugin(site: Path) -> dict:
    """A distribution `userdefense` declaring the `boxblur` defense; returns the environment that sees it."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / "userdefense-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: userdefense\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("[bench.defenses]\nboxblur = userdefense:BoxBlur\n"))
    (site / "userdefense.py").write_text(PLUGIN)
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def timed_run(extra: list[str], args, results: Path, cache: Path, env: dict) -> tuple[float, str]:
    """Seconds one `bench run` took, and its summary line."""
    command = [sys.executable, "-m", "bench", "run", "--defense", "boxblur", "--attacker", "all",
               "--dataset", args.dataset, "--preset", args.preset, "--jobs", str(args.jobs), "--no-plots",
               "--results-dir", str(results), *extra]
    if args.data_dir:
        command += ["--data-dir", str(args.data_dir)]
    start = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, **env, "BENCH_CACHE": str(cache)},
                          capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"error: {' '.join(command)} exited {done.returncode}")
    summary = next((line for line in done.stdout.splitlines() if " ok, " in line), "")
    return took, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default) or synthetic for tests")
    p.add_argument("--preset", default="default", help="the commands' --preset (default: default)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of the new path's verdict (default 3)")
    p.add_argument("--jobs", type=int, default=os.cpu_count(), help="--jobs of each command (default: all cores)")
    p.add_argument("--data-dir", type=Path, help="where the dataset lives (default: the loader's own search)")
    p.add_argument("--reference", type=Path, help="the new path's --reference (default: the repository's)")
    p.add_argument("--skip-today", action="store_true", help="time the new path only (no speed-up)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds {args.seeds}: must be >= 1")
    reference = ["--reference", str(args.reference)] if args.reference else []
    with tempfile.TemporaryDirectory(prefix="new-defense-") as tmp:
        work = Path(tmp)
        env = install_plugin(work / "site")
        print(f"machine: {os.cpu_count()} cores; boxblur x every attacker on {args.dataset}, preset {args.preset}, "
              f"--jobs {args.jobs}; empty cache and results each path", flush=True)
        new_s, summary = timed_run(["--seeds", "0", *reference], args, work / "new", work / "new-cache", env)
        print(f"new path, seed 0:   {new_s / 60:6.2f} min  ({summary})", flush=True)
        if not args.skip_today:
            old_s, summary = timed_run(["--seeds", "0", "--precision", "fp32", "--no-reference"], args,
                                       work / "today", work / "today-cache", env)
            print(f"today's path, seed 0: {old_s / 60:6.2f} min  ({summary})", flush=True)
            print(f"speed-up: {old_s / new_s:.2f} x (goal {GOAL_SPEEDUP:g} x)", flush=True)
        total = new_s
        if args.seeds > 1:
            rest_s, summary = timed_run(["--seeds", f"1-{args.seeds - 1}", *reference], args, work / "new",
                                        work / "new-cache", env)
            total += rest_s
            print(f"new path, seeds 1-{args.seeds - 1}: {rest_s / 60:6.2f} min  ({summary})", flush=True)
        from bench.results.records import load_runs

        runs = load_runs(work / "new")
        statuses = Counter(r["status"] for r in runs)
        taken = sum("taken_from" in r for r in runs)
        print(f"runs: {len(runs)} ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}; "
              f"{taken} identity runs taken from the reference)")
        print(f"verdict: {total / 60:.1f} min for {args.seeds} seed(s) (goal {GOAL_MIN:g} min for 3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
