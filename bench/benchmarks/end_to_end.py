"""A grid of runs through the harness vs a naive per-run research pipeline.

    python -m bench.benchmarks.end_to_end --max-images 6000 --seeds 2 --defense identity
    python -m bench.benchmarks.end_to_end --grid sweep --defense noise --values 0.1,0.2,0.4

Two grids, each with the same short TrainConfig on both sides:
  - `--grid defended` (default): one defense (identity by default; `--defense vfc` for VFC
    with its default, small settings) x 5 attackers (transfer, finetune, adaptive,
    attribute, inversion) x `--seeds` seeds on a subset of `--max-images` images;
  - `--grid sweep`: identity plus one defense at several settings (`--defense noise` with
    `--values` of its sigma, or `--defense vfc` with values of its keep fraction) x the 5
    attackers x `--seeds` seeds: the shape of a real sweep, where leakage needs the
    identity runs and both sides run them.
  (a) harness: `bench.runner.execute` over RunSpecs with `--jobs` workers, starting
      from a fresh, empty BENCH_CACHE (cold: the dataset is decoded, every model trained).
      Defended grid: then once more into new results on the now-warm cache: what is left
      is the attack models no cache shares, so naive / warm bounds what any cold run could
      gain. Sweep grid: then three more runs into the same results and cache, each the grid
      plus one more thing (a setting `--extra-value`, an attacker configuration, a seed),
      whose wall time is the marginal cost of that thing (finished runs are skipped);
  (b) naive: what a typical research script does for each run on its own: decode the
      raw data, train the designated model, fit the defense, release the three splits,
      train the attacker's models, all through DataLoaders with per-sample torchvision
      transforms, sharing and caching nothing between runs. It reuses the harness's
      model builders and its defense classes (their fit is the same code on both sides)
      and takes the attackers' hyperparameters from the harness's attacker classes.
Counted on both sides, in every process: trainings of the designated model, of clean
models (the transfer attacker's off-the-shelf models and the one finetune starts from),
and calls to Defense.fit and Defense.release.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import torch

from bench.benchmarks.call_counts import count_calls, counts_text, read_counts
from bench.benchmarks.cpu_time import tree_cpu_s
from bench.benchmarks.naive_pipeline import NaiveRun, decode_raw
from bench.benchmarks.parallel import PRESET_NAME, preset_everywhere, subset_preset
from bench.training import TrainConfig, resolve_device

ATTACKER_GRID = ("transfer", "finetune", "adaptive", "attribute", "inversion")
DEFENSE_CHOICES = ("identity", "vfc")
# The hyperparameter `--grid sweep` varies, by defense.
SWEEP_PARAMS = {"noise": "sigma", "vfc": "keep"}
# The marginal cost of one more attacker: an attacker configuration the grid does not hold.
EXTRA_ATTACKER = ("adaptive", "budget", "1000")


def harness_specs(args, data, configs: list[tuple[str, dict]] | None = None, seeds=None,
                  attackers: list[tuple[str, dict]] | None = None) -> list:
    """RunSpecs of every (defense configuration, attacker configuration, seed); by default the defended grid."""
    from bench.registry import ATTACKERS
    from bench.runspec import RunSpec

    configs = configs if configs is not None else [(args.defense, {})]
    attackers = attackers if attackers is not None else [(a, {}) for a in ATTACKER_GRID]
    seeds = seeds if seeds is not None else range(args.seeds)
    specs = []
    for defense, defense_params in configs:
        for attacker, attacker_params in attackers:
            task = data.private_task if ATTACKERS.get(attacker).uses_private_task else data.default_task
            specs += [RunSpec(defense=defense, attacker=attacker, dataset=args.dataset,
                              target_task=data.default_task, attack_task=task, target_arch="cnn", seed=seed,
                              preset=PRESET_NAME, defense_params=defense_params, attacker_params=attacker_params)
                      for seed in seeds]
    return specs


def _since(cpu_start: float | None) -> float | None:
    now = tree_cpu_s()
    return None if now is None or cpu_start is None else now - cpu_start


def cpu_bound(cpu_s: float | None, wall_s: float, naive_s: float, cores: int | None = None) -> str:
    """The harness's CPU time, how busy it kept the cores, and the speed-up it would reach at full use:
    no schedule of the same work on these cores ends before CPU time / cores."""
    from bench.cores import usable_cpus

    cores = cores or len(usable_cpus())
    if cpu_s is None or cpu_s <= 0:
        return "harness CPU time:              not measured (no /proc on this system)"
    floor_s = cpu_s / cores
    return (f"harness CPU time (cold):       {cpu_s:8.1f} s   = cores busy {100 * cpu_s / (cores * wall_s):.0f} % "
            f"of {cores} x {wall_s:.1f} s; at full use {floor_s:.1f} s: speed-up bound {naive_s / floor_s:.2f} x")


def sweep_configs(defense: str, values: list[str]) -> list[tuple[str, dict]]:
    """identity, then `defense` at each value of its swept hyperparameter, typed as `--set` would type them."""
    from bench.registry import DEFENSES
    from bench.sweep import configurations

    identity = configurations(DEFENSES, "identity", {})[0]  # {}: what the runner's identity twins hold
    return [("identity", identity)] + [(defense, p) for p in
                                       configurations(DEFENSES, defense, {SWEEP_PARAMS[defense]: values})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default) or synthetic for tests")
    parser.add_argument("--data-dir", type=Path, help="where the IDX files live (default: Debian's location)")
    parser.add_argument("--grid", default="defended", choices=("defended", "sweep"),
                        help="defended (default): one defense x 5 attackers x seeds; sweep: identity + one "
                             "defense at several settings x 5 attackers x seeds, and the marginal costs")
    parser.add_argument("--max-images", type=int,
                        help="subset size (default 6000 for the defended grid, 3000 for the sweep)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds in the grid (default 2)")
    parser.add_argument("--defense", choices=sorted({*DEFENSE_CHOICES, *SWEEP_PARAMS}),
                        help="defended grid: identity (default) or vfc (its default settings: 2 epochs, 16-d "
                             "latent); sweep: noise (default, its sigma swept) or vfc (its keep fraction swept)")
    parser.add_argument("--values", default="0.1,0.2,0.4",
                        help="sweep: the settings of the swept hyperparameter (default 0.1,0.2,0.4)")
    parser.add_argument("--extra-value", default="0.3",
                        help="sweep: the setting whose marginal cost is measured (default 0.3)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of every model the preset trains (default 2)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="harness workers (default: all cores)")
    parser.add_argument("--loader-workers", type=int, default=0,
                        help="DataLoader worker processes of the naive side (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default) | cuda | auto")
    args = parser.parse_args()
    if args.grid == "defended":
        args.defense = args.defense or "identity"
        if args.defense not in DEFENSE_CHOICES:
            parser.error(f"--defense {args.defense}: the defended grid takes {' or '.join(DEFENSE_CHOICES)}")
    else:
        args.defense = args.defense or "noise"
        if args.defense not in SWEEP_PARAMS:
            parser.error(f"--defense {args.defense}: the sweep takes {' or '.join(SWEEP_PARAMS)}")
    if args.max_images is None:
        args.max_images = 6000 if args.grid == "defended" else 3000
    device = resolve_device(args.device)
    preset = subset_preset(args.max_images, TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=5e-3,
                                                        augment=True, patience=args.epochs))

    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as work:
        os.environ["BENCH_CACHE"] = cache  # fresh and empty: the harness starts cold
        print(f"machine: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, device {device}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS') or 'unset'}")
        if args.grid == "defended":
            defended_grid(args, preset, device, Path(work))
        else:
            sweep_grid(args, preset, device, Path(work))


def defended_grid(args, preset, device: torch.device, work: Path) -> None:
    from bench.runner import Env, execute

    data = decode_raw(args.dataset, args.data_dir)  # only for task names; not timed
    specs = harness_specs(args, data)
    print(f"grid: {args.defense} x {', '.join(ATTACKER_GRID)} x {args.seeds} seeds on {args.dataset}, "
          f"<= {args.max_images} images, {args.epochs} epochs, batch {args.batch_size}")

    setups = ((count_calls, (str(work / "harness-calls"),)),)
    with preset_everywhere(preset, setups):
        start, cpu_start = time.perf_counter(), tree_cpu_s()
        env = Env(results_dir=work / "results", device=args.device, jobs=args.jobs,
                  data_dir=str(args.data_dir) if args.data_dir else None)
        summary = execute(specs, env)
        harness_s, harness_cpu_s = time.perf_counter() - start, _since(cpu_start)
        harness_calls = read_counts(work / "harness-calls")
        # The same grid again into new results, on the now-warm cache: only the work no cache
        # can share is left (the attackers' non-cached models), a floor for any cold harness run.
        start = time.perf_counter()
        warm = execute(specs, dataclasses.replace(env, results_dir=work / "results-warm"))
        warm_s = time.perf_counter() - start
    if summary.failed or warm.failed:
        raise SystemExit(f"harness: {summary.text()}; warm: {warm.text()}")
    warm_calls = read_counts(work / "harness-calls") - harness_calls

    naive_file = str(work / "naive-calls")
    count_calls(naive_file)
    start = time.perf_counter()
    for seed in range(args.seeds):
        for attacker in ATTACKER_GRID:
            NaiveRun(args, preset, device, seed, count_file=naive_file).run(attacker)
    naive_s = time.perf_counter() - start
    naive_calls = read_counts(work / "naive-calls")

    n_runs = len(ATTACKER_GRID) * args.seeds
    print(f"harness  ({args.jobs} jobs, cold cache): {harness_s:8.1f} s   {counts_text(harness_calls)}  "
          f"({summary.ok} runs ok)")
    print(f"naive per-run pipeline:        {naive_s:8.1f} s   {counts_text(naive_calls)}  ({n_runs} runs)")
    print(f"speed-up:                      {naive_s / harness_s:8.2f} x")
    print(cpu_bound(harness_cpu_s, harness_s, naive_s))
    print(f"harness again, warm cache:     {warm_s:8.1f} s   {counts_text(warm_calls)}  "
          f"(left: the attack models no cache shares)")
    print(f"bound for any cold harness:    {naive_s / warm_s:8.2f} x   (naive / warm)")
    print("differences that remain:")
    if args.defense != "identity":
        print(f"  - the harness also runs the {n_runs} identity calibration runs leakage needs (the naive side "
              f"does not), and fits identity too: it does more work than the naive side")
    print("  - the harness computes more metrics (agreement, SSIM, chance levels) and writes one JSON per run")
    print("  - the defense's own fit is the same code on both sides (its training loop is the harness's)")
    print(f"  - the naive side decodes the data {n_runs} times; the harness once per process into its cache")


def sweep_grid(args, preset, device: torch.device, work: Path) -> None:
    from bench.registry import ATTACKERS
    from bench.runner import Env, execute
    from bench.sweep import configurations

    data = decode_raw(args.dataset, args.data_dir)  # only for task names; not timed
    param = SWEEP_PARAMS[args.defense]
    values = [v.strip() for v in args.values.split(",") if v.strip()]
    configs = sweep_configs(args.defense, values)
    extra_config = sweep_configs(args.defense, [args.extra_value])[1:]
    name, extra_param, extra_value = EXTRA_ATTACKER
    extra_attacker = [(name, configurations(ATTACKERS, name, {extra_param: [extra_value]})[0])]
    specs = harness_specs(args, data, configs)
    n_runs = len(configs) * len(ATTACKER_GRID) * args.seeds
    print(f"grid: identity + {args.defense} {param}={','.join(values)} x {', '.join(ATTACKER_GRID)} x {args.seeds} "
          f"seeds = {n_runs} runs on {args.dataset}, <= {args.max_images} images, {args.epochs} epochs, "
          f"batch {args.batch_size}")

    calls = work / "harness-calls"
    setups = ((count_calls, (str(calls),)),)
    env = Env(results_dir=work / "results", device=args.device, jobs=args.jobs,
              data_dir=str(args.data_dir) if args.data_dir else None)
    marginal = []
    with preset_everywhere(preset, setups):
        start, cpu_start = time.perf_counter(), tree_cpu_s()
        summary = execute(specs, env)
        harness_s, harness_cpu_s = time.perf_counter() - start, _since(cpu_start)
        if summary.failed:
            raise SystemExit(f"harness: {summary.text()}")
        harness_calls = read_counts(calls)
        # Each on top of the grid, into the same results and cache: its finished runs are skipped,
        # so the wall time is what adding that one thing to a sweep costs.
        more = {f"one setting ({param}={args.extra_value}, {len(ATTACKER_GRID)} attackers x {args.seeds} seeds)":
                harness_specs(args, data, extra_config),
                f"one attacker ({name} {extra_param}={extra_value}, on each setting and seed)":
                harness_specs(args, data, configs, attackers=extra_attacker),
                f"one seed (seed {args.seeds}, the whole grid)":
                harness_specs(args, data, configs, seeds=[args.seeds])}
        for label, extra in more.items():
            before = read_counts(calls)
            start = time.perf_counter()
            result = execute(specs + extra, env)
            wall = time.perf_counter() - start
            if result.failed:
                raise SystemExit(f"harness, {label}: {result.text()}")
            marginal.append((label, wall, read_counts(calls) - before, result.ok))

    naive_file = str(work / "naive-calls")
    count_calls(naive_file)
    start = time.perf_counter()
    for defense, params in configs:
        for seed in range(args.seeds):
            for attacker in ATTACKER_GRID:
                NaiveRun(args, preset, device, seed, defense, params, count_file=naive_file).run(attacker)
    naive_s = time.perf_counter() - start
    naive_calls = read_counts(Path(naive_file))

    print(f"harness  ({args.jobs} jobs, cold cache): {harness_s:8.1f} s   {counts_text(harness_calls)}  "
          f"({summary.ok} runs ok)")
    print(f"naive per-run pipeline:        {naive_s:8.1f} s   {counts_text(naive_calls)}  ({n_runs} runs)")
    print(f"speed-up:                      {naive_s / harness_s:8.2f} x")
    print(cpu_bound(harness_cpu_s, harness_s, naive_s))
    per_run = naive_s / n_runs
    print(f"marginal cost in the harness (each added alone to the grid above, same results and cache; naive: "
          f"its mean {per_run:.1f} s per run x the runs added):")
    for label, wall, counted, ok in marginal:
        print(f"  + {label}: {wall:7.1f} s  {counts_text(counted)}  ({ok} runs; naive ~{ok * per_run:.0f} s)")
    print("differences that remain:")
    print("  - both sides run every identity run leakage needs (they are part of the grid)")
    print("  - the harness computes more metrics (agreement, SSIM, chance levels, leakage) and writes one JSON per run")
    print("  - the defense's own fit is the same code on both sides (its training loop is the harness's)")
    print(f"  - the naive side decodes the data {n_runs} times; the harness once per process into its cache")


if __name__ == "__main__":
    main()
