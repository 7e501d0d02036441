"""From a `run` command's arguments to the RunSpecs it plans: every input checked, nothing written.
"""
from __future__ import annotations

import math
import sys

from bench import precision
from bench.errors import BenchError, unknown
from bench.models import ARCHS
from bench.pipeline import forget_loaded_data, load_dataset, model_splits_of
from bench.presets import get_preset
from bench.registry import ATTACKERS, DATASETS, DEFENSES
from bench.runspec import RunSpec
from bench.storage import cache_root, check_writable_dir
from bench.sweep import configurations, count_configurations, parse_sets
from bench.training import resolve_device

# Sane bounds of one command: past them the input is a typo (0-99999999), not a sweep.
MAX_SEEDS = 1000
MAX_SEED = 2**32 - 1          # what every RNG the plugins use (torch, numpy) accepts as a seed
MAX_JOBS = 1024
MAX_TIMEOUT_S = 7 * 24 * 3600  # one week
MAX_RUNS = 10_000


def parse_seeds(text: str) -> list[int]:
    ranges = []
    try:
        for part in text.split(","):
            lo, dash, hi = part.partition("-")
            lo, hi = int(lo), int(hi) if dash else int(lo)
            if hi < lo:
                raise BenchError(f"--seeds {text!r}: the range {part.strip()} is empty (write low-high, e.g. "
                                 f"{hi}-{lo})")
            ranges.append((lo, hi))
    except ValueError:
        raise BenchError(f"--seeds {text!r}: expected integers like 0 or 0,1,2 or 0-2") from None
    if not ranges or any(lo < 0 for lo, _ in ranges):
        raise BenchError(f"--seeds {text!r}: expected non-negative integers")
    if any(hi > MAX_SEED for _, hi in ranges):
        raise BenchError(f"--seeds {text!r}: a seed is at most {MAX_SEED} (2**32 - 1)")
    # Counted before any range is expanded: 0-99999999 is refused, not built.
    n = sum(hi - lo + 1 for lo, hi in ranges)
    if n > MAX_SEEDS:
        raise BenchError(f"--seeds {text!r} gives {n} seeds; at most {MAX_SEEDS} in one command")
    return sorted({s for lo, hi in ranges for s in range(lo, hi + 1)})


def pick(registry, text: str) -> list[str]:
    """The plugins `text` names. `all` means every plugin that loads: a broken one (its package fails to
    import) is skipped with a one-line warning; naming a broken or unknown plugin is an error."""
    if text.strip() == "all":
        names, broken = registry.usable()
        for why in broken.values():
            print(f"warning: skipping {why}", file=sys.stderr)
        if not names:
            raise BenchError(f"no usable {registry.kind}: every one registered is broken")
        return names
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise BenchError(f"no {registry.kind} given; valid choices: {', '.join(registry.names())}")
    for n in names:
        registry.get(n)  # raises the 'unknown ... valid choices' or the broken plugin's error
    return names


def plan_specs(args) -> list:
    """Validate every input and expand the command into RunSpecs; nothing is written here."""

    preset = get_preset(args.preset)
    check_writable_dir(cache_root(), "BENCH_CACHE")   # every decoded dataset and artifact goes there
    forget_loaded_data()  # tasks and classes as the data holds them now, not as an earlier command saw them
    args.dataset = args.dataset or preset.dataset or "fashion-mnist"
    resolve_device(args.device)
    precision.check(args.precision)
    if args.reference is not None:
        if args.no_reference:
            raise BenchError("--reference and --no-reference contradict each other; give one of them")
        if not (args.reference / "runs").is_dir():
            raise BenchError(f"--reference {args.reference}: not a results dir (it has no runs/ directory)")
    if args.eval_split not in ("test", "val"):
        raise unknown("--eval-split", args.eval_split, ("test", "val"))
    if args.max_release is not None and args.max_release < 1:
        raise BenchError(f"--max-release {args.max_release}: must be >= 1")
    if not 1 <= args.jobs <= MAX_JOBS:
        raise BenchError(f"--jobs {args.jobs}: must be between 1 and {MAX_JOBS}")
    if args.backend not in ("loky", "dask"):
        raise unknown("backend", args.backend, ("loky", "dask"))
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise BenchError(f"--timeout {args.timeout:g}: must be a positive, finite number of seconds")
    if args.timeout is not None and args.timeout > MAX_TIMEOUT_S:
        raise BenchError(f"--timeout {args.timeout:g}: must be at most {MAX_TIMEOUT_S} seconds (one week); "
                         "drop --timeout for no limit")
    if args.timeout is not None and args.backend == "dask":
        raise BenchError("--timeout cannot interrupt Dask jobs (they run in worker threads, out of SIGALRM's "
                         "reach); drop --timeout or use --backend loky")
    if args.target_arch not in ARCHS:
        raise unknown("architecture", args.target_arch, ARCHS)
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise BenchError(f"--data-dir {str(args.data_dir)!r} is not a directory")
    defenses, attackers = pick(DEFENSES, args.defense), pick(ATTACKERS, args.attacker)
    DATASETS.get(args.dataset)
    seeds = parse_seeds(args.seeds)
    registries = {**{d: DEFENSES for d in defenses}, **{a: ATTACKERS for a in attackers}, args.dataset: DATASETS}
    sets = parse_sets(args.sets, registries)
    # Counted before anything is expanded or loaded: a sweep too large to mean is refused at once.
    if count_configurations(sets.get(args.dataset, {})) > 1:
        raise BenchError(f"--set {args.dataset}.*: sweeping dataset options is not supported; give one value")
    n_runs = (sum(count_configurations(sets.get(d, {})) for d in defenses)
              * sum(count_configurations(sets.get(a, {})) for a in attackers) * len(seeds))
    if n_runs > MAX_RUNS:
        raise BenchError(f"this command plans {n_runs} runs ({len(defenses)} defense(s) x {len(attackers)} "
                         f"attacker(s) with their --set sweeps x {len(seeds)} seed(s)); at most {MAX_RUNS} in one "
                         "command: split the sweep")
    ds_configs = configurations(DATASETS, args.dataset, sets.get(args.dataset, {}))
    ds_params = ds_configs[0]
    data = load_dataset(args.dataset, tuple(sorted(ds_params.items())), str(args.data_dir) if args.data_dir else None)
    tasks = DATASETS.get(args.dataset).resolve_tasks(data, args.target_task, args.private_task)
    target_task, private_task = tasks.target, tasks.private
    dataset_defaults = DATASETS.get(args.dataset).plugin_overrides.get(args.preset, {})

    def plugin_defaults(name: str) -> dict:
        """The dataset's tuned values for this plugin, under the preset's own (a paper's settings)."""
        return {**dataset_defaults.get(name, {}), **preset.plugin_defaults.get(name, {})}

    specs = []
    for d in defenses:
        # A costly release (per-image optimisation) covers only a capped subset of the released splits.
        release_cap = None
        if DEFENSES.get(d).costly_release:
            release_cap = args.max_release if args.max_release is not None else preset.max_costly_release
        for d_params in configurations(DEFENSES, d, sets.get(d, {}), plugin_defaults(d)):
            DEFENSES.create(d, d_params)  # its own range checks, before any work
            for a in attackers:
                a_cls = ATTACKERS.get(a)
                if a_cls.uses_private_task:
                    if private_task is None:
                        raise BenchError(f"attacker {a} needs a private task and dataset {args.dataset} has no default; "
                                         f"pass --private-task (valid choices: {', '.join(data.tasks)})")
                    attack_task = data.check_task(private_task)
                else:
                    attack_task = target_task
                for a_params in configurations(ATTACKERS, a, sets.get(a, {}), plugin_defaults(a)):
                    ATTACKERS.create(a, a_params)
                    for seed in seeds:
                        specs.append(RunSpec(defense=d, attacker=a, dataset=args.dataset, target_task=target_task,
                                             attack_task=attack_task, target_arch=args.target_arch, seed=seed,
                                             preset=args.preset, eval_split=args.eval_split,
                                             defense_params=d_params, attacker_params=a_params,
                                             dataset_params=ds_params, max_release=release_cap))
    sizes = {}
    for seed in seeds:   # a dataset too small for the preset's splits fails here, not in every run
        sizes[seed] = model_splits_of(data, seed, args.preset, args.eval_split).sizes()
        empty = [name for name, n in sizes[seed].items() if n < 1]
        if empty:
            raise BenchError(f"dataset {args.dataset} ({len(data.images)} images) is too small for preset "
                             f"{args.preset}: seed {seed} leaves {', '.join(empty)} empty (split sizes "
                             f"{', '.join(f'{k} {v}' for k, v in sizes[seed].items())}); add images or use a "
                             f"smaller preset (smoke)")
    for note in dict.fromkeys(_size_notes(specs, sizes)):
        print(f"note: {note}", file=sys.stderr, flush=True)
    _say(tasks)
    # `--set x.p=1,1.0` names one configuration twice: it is one run.
    return list({s.run_id: s for s in specs}.values())


# What this process has already said: a notebook or a test plans many commands on one dataset.
_said: set[str] = set()


def _say(tasks) -> None:
    """The dataset's line on the tasks a command uses (stdout: stderr is for errors) and any warning, once each."""
    for line, stream in [(tasks.said, sys.stdout), *((f"warning: {w}", sys.stderr) for w in tasks.warnings)]:
        if line and line not in _said:
            _said.add(line)
            print(line, file=stream, flush=True)


def _size_notes(specs: list, sizes: dict[int, dict[str, int]]):
    """What a budget or release cap larger than the data means, said rather than silently clipped."""
    for s in specs:
        released = {k: sizes[s.seed][k] for k in ("attacker", "val", "test")}
        if s.max_release is not None and s.max_release >= max(released.values()):
            yield (f"the release cap {s.max_release} of {s.defense} covers every released split of seed {s.seed} "
                   f"({', '.join(f'{k} {v}' for k, v in released.items())}): its runs release every image "
                   "(the cap stays in their identity)")
        budget = s.attacker_params.get("budget") or 0
        available = min(released["attacker"], s.max_release or released["attacker"])
        if budget > available:
            yield (f"{s.attacker}.budget={budget} is more than the {available} released attacker images of seed "
                   f"{s.seed}{' (release cap)' if s.max_release is not None and s.max_release < released['attacker'] else ''}: "
                   f"the attacker learns from all {available}")
