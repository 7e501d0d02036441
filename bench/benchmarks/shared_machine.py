"""Two identical harness commands started together vs one alone, under each thread policy.

    python -m bench.benchmarks.shared_machine --max-images 8000 --epochs 4

The command: `bench run --defense identity --attacker adaptive` on a subset of
`--max-images` images (40% owner, 40% attacker, 10% val, 10% test; `--epochs` epochs),
`--jobs` jobs, into a fresh results directory each time. It runs through `bench.cli.main`
in a fresh interpreter (`--child`), which first registers the subset preset; as
`python -m bench` does, it sets the OpenMP defaults before torch loads. A fresh
BENCH_CACHE is warmed by one run beforehand (the decoded data, the designated model and the
released splits), so every timed command does the same work: the adaptive attacker's
training and scoring, which no cache shares. For each `--policy`:
  - alone: one command (`--repeat` times, the fastest kept);
  - together: two identical commands started at the same moment; each one's wall time.
The ratio is the slower of the two together over alone; the issue's goal is <= 2.5x.
Policies (environment of the commands; OMP_NUM_THREADS and the OpenMP wait settings of this
shell are removed, so that the harness decides):
  shared               the default: the cores are shared among the jobs of every harness command
                       (bench.cores), rebalanced while training, libgomp spinning shortened
  static               BENCH_THREAD_POLICY=static: cores / jobs threads each, libgomp's own spinning
                       (the behaviour before bench.cores: "today")
  static-short-spin    static threads, spinning shortened: the spin count's effect on its own
  shared-default-spin  shared threads, libgomp's own spinning: the registry's effect on its own
  shared-passive       shared threads, OMP_WAIT_POLICY=PASSIVE (threads sleep at once)
Every command of a policy uses a fresh registry (BENCH_CORES_DIR): harness commands elsewhere
on the machine do not count, other processes do (measure on an idle machine).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import cores

POLICIES = {
    "shared": {},
    "static": {"BENCH_THREAD_POLICY": "static"},
    "static-short-spin": {"BENCH_THREAD_POLICY": "static", "GOMP_SPINCOUNT": cores.SPIN_COUNT},
    "shared-default-spin": {"GOMP_SPINCOUNT": "300000"},   # libgomp's default when no wait policy is set
    "shared-passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}
# Removed from the commands' environment: the harness decides these.
UNSET = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "BENCH_THREAD_POLICY",
         "BENCH_CORES_DIR", "BENCH_CORES_TRACE", cores.USER_OMP_MARK)
GOAL = 2.5


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default) or synthetic for tests")
    p.add_argument("--data-dir", type=Path, help="where the dataset lives (default: the loader's own search)")
    p.add_argument("--max-images", type=int, default=8000, help="subset size (default 8000)")
    p.add_argument("--epochs", type=int, default=4, help="training epochs of every model (default 4)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--jobs", type=int, default=1, help="--jobs of each command (default 1)")
    p.add_argument("--policy", default="shared,static",
                   help=f"comma-separated, of {', '.join(POLICIES)} (default shared,static)")
    p.add_argument("--repeat", type=int, default=2, help="alone runs per policy, the fastest kept (default 2)")
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | auto")
    p.add_argument("--child", type=Path, metavar="RESULTS_DIR", help=argparse.SUPPRESS)
    return p


def child(args) -> int:
    """One harness command into `args.child`, in this fresh interpreter."""
    cores.openmp_defaults()  # what bench.cli.main does first; here before the preset below loads torch
    from bench.benchmarks.parallel import PRESET_NAME, preset_everywhere, subset_preset
    from bench.cli import main
    from bench.training import TrainConfig

    preset = subset_preset(args.max_images, TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=5e-3,
                                                         augment=False, patience=args.epochs))
    argv = ["run", "--defense", "identity", "--attacker", "adaptive", "--dataset", args.dataset,
            "--preset", PRESET_NAME, "--results-dir", str(args.child), "--jobs", str(args.jobs),
            "--device", args.device, "--no-plots"]
    if args.data_dir:
        argv += ["--data-dir", str(args.data_dir)]
    with preset_everywhere(preset):
        return main(argv)


class Commands:
    """Starts harness commands (this script in `--child` mode) and times them."""

    def __init__(self, args, work: Path, cache: Path):
        self.args, self.work, self.cache = args, work, cache
        self.n = 0

    def env(self, policy: str, registry: Path, trace: Path) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in UNSET}
        return {**env, "BENCH_CACHE": str(self.cache), "BENCH_CORES_DIR": str(registry),
                "BENCH_CORES_TRACE": str(trace), **POLICIES[policy]}

    def argv(self, out: Path) -> list[str]:
        a = self.args
        argv = [sys.executable, "-m", "bench.benchmarks.shared_machine", "--child", str(out),
                "--dataset", a.dataset, "--max-images", str(a.max_images), "--epochs", str(a.epochs),
                "--batch-size", str(a.batch_size), "--jobs", str(a.jobs), "--device", a.device]
        return argv + (["--data-dir", str(a.data_dir)] if a.data_dir else [])

    def run(self, policy: str, copies: int) -> list[dict]:
        """`copies` identical commands started together; each one's wall time, attack fit time, threads."""
        registry = Path(tempfile.mkdtemp(dir=self.work, prefix="registry-"))  # fresh: only these commands count
        started = []
        for _ in range(copies):
            self.n += 1
            name = f"{self.n:02d}-{policy}"
            out, trace = self.work / name, self.work / f"{name}.threads"
            log = open(self.work / f"{name}.log", "w")
            start = time.perf_counter()
            proc = subprocess.Popen(self.argv(out), env=self.env(policy, registry, trace), stdout=log,
                                    stderr=subprocess.STDOUT)
            started.append({"name": name, "out": out, "trace": trace, "log": log, "proc": proc, "start": start})
        left = list(started)
        while left:  # polled, so that each command's end is seen when it happens
            for c in list(left):
                if c["proc"].poll() is not None:
                    c["wall_s"] = time.perf_counter() - c["start"]
                    c["log"].close()
                    left.remove(c)
            time.sleep(0.02)
        for c in started:
            if c["proc"].returncode != 0:
                text = (self.work / f"{c['name']}.log").read_text()
                raise SystemExit(f"{c['name']} exited {c['proc'].returncode}:\n{text[-3000:]}")
            c["attack_fit_s"] = attack_fit_s(c["out"])
            c["threads"] = threads_seen(c["trace"])
        return started


def attack_fit_s(results_dir: Path) -> float:
    records = [json.loads(p.read_text()) for p in (results_dir / "runs").glob("*.json")]
    if len(records) != 1 or records[0]["status"] != "ok":
        raise SystemExit(f"{results_dir}: expected one ok run, found {[r.get('status') for r in records]}")
    return float(records[0]["metrics"]["attack_fit_s"])


def threads_seen(trace: Path) -> str:
    """The torch thread counts a command's jobs took, in order: `2`, `2 -> 1`, `1 -> 2 -> 1`."""
    if not trace.exists():
        return "not managed"
    seen = []
    for line in trace.read_text().splitlines():
        n = line.split()[-1]
        if not seen or seen[-1] != n:
            seen.append(n)
    return " -> ".join(seen)


def header(args) -> str:
    import torch

    removed = [f"{k}={os.environ[k]}" for k in UNSET if os.environ.get(k) and k != cores.USER_OMP_MARK]
    return (f"machine: {os.cpu_count()} cores ({len(cores.usable_cpus())} usable), torch {torch.__version__}, "
            f"device {args.device}; removed from the commands' environment: {', '.join(removed) or 'nothing'}")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.child is not None:
        return child(args)
    policies = [x.strip() for x in args.policy.split(",") if x.strip()]
    unknown = [x for x in policies if x not in POLICIES]
    if not policies or unknown:
        p.error(f"--policy {args.policy!r}: expected names of {', '.join(POLICIES)}")
    if args.repeat < 1 or args.jobs < 1:
        p.error("--repeat and --jobs must be >= 1")

    begin = time.perf_counter()
    print(header(args))
    print(f"command: bench run --defense identity --attacker adaptive --dataset {args.dataset} --jobs {args.jobs}, "
          f"<= {args.max_images} images, {args.epochs} epochs, batch {args.batch_size}, on a warm cache", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        commands = Commands(args, work, work / "cache")
        [warm] = commands.run("shared", 1)
        print(f"warm-up:    {warm['wall_s']:7.1f} s (builds the cache; not compared)", flush=True)
        alone = {policy: None for policy in policies}
        for _ in range(args.repeat):  # policies interleaved: a slow spell of the machine hits them all
            for policy in policies:
                [c] = commands.run(policy, 1)
                if alone[policy] is None or c["wall_s"] < alone[policy]["wall_s"]:
                    alone[policy] = c
        together = {}
        for policy in policies:
            a = alone[policy]
            print(f"[{policy}] alone:    {a['wall_s']:7.1f} s (attacker training {a['attack_fit_s']:.1f} s; "
                  f"threads {a['threads']})", flush=True)
            pair = together[policy] = commands.run(policy, 2)
            print(f"[{policy}] together: " + ", ".join(f"{c['wall_s']:.1f} s" for c in pair)
                  + " (attacker training " + ", ".join(f"{c['attack_fit_s']:.1f} s" for c in pair)
                  + "; threads " + ", ".join(c["threads"] for c in pair) + ")", flush=True)
            slow = max(c["wall_s"] for c in pair)
            fit = max(c["attack_fit_s"] for c in pair) / a["attack_fit_s"]
            verdict = "met" if slow / a["wall_s"] <= GOAL else "NOT met"
            print(f"[{policy}] shared-machine ratio: {slow / a['wall_s']:.2f}x (two together "
                  + ", ".join(f"{c['wall_s']:.1f} s" for c in pair)
                  + f" vs alone {a['wall_s']:.1f} s; goal <= {GOAL}x: {verdict}); attacker training "
                  f"{fit:.2f}x", flush=True)

    if len(policies) > 1:
        base = "static" if "static" in policies and policies[0] != "static" else policies[1]
        first = policies[0]
        slow = {p: max(c["wall_s"] for c in together[p]) for p in (first, base)}
        print(f"speed-up:   {slow[base] / slow[first]:7.2f} x (two together, the slower of each pair: {base} "
              f"{slow[base]:.1f} s vs {first} {slow[first]:.1f} s)")
        print(f"alone cost: {alone[first]['wall_s'] / alone[base]['wall_s']:7.2f} x ({first} vs {base} alone: "
              f"{alone[first]['wall_s']:.1f} s vs {alone[base]['wall_s']:.1f} s)")
    print(f"benchmark took {time.perf_counter() - begin:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
