"""`python -m bench`: run, list, leaderboard, compare, plot."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from bench.errors import BenchError

# Commands import what they use inside their function: `--help`, `list` and `leaderboard` never load
# torch or the plugins, which take seconds.
DEFAULT_ATTACKERS = "all"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: the sweep shuts down exactly as on Ctrl-C."""


def main(argv: list[str] | None = None) -> int:
    with _sigterm_interrupts():
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        try:
            from bench import cores
            cores.openmp_defaults()  # before torch loads: libgomp reads its environment only then
            # loky's resource tracker (a process of its own, started with this environment) would warn of
            # "leaked semaphore objects" when an interrupted sweep ends: the interruption has its own message.
            os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"),
                                                                  "ignore:resource_tracker:UserWarning"]))
            return args.func(args)
        except BenchError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt as e:
            print("interrupted: finished runs are saved; the same command resumes", file=sys.stderr)
            return 128 + signal.SIGTERM if isinstance(e, Terminated) else 130


@contextmanager
def _sigterm_interrupts():
    """Within the block, SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread.

    So a sweep stopped by `kill`, a scheduler or a container runtime ends its workers (joblib aborts
    the pool on any BaseException), keeps every finished record and exits 143, as Ctrl-C does (130).
    Only the first SIGTERM interrupts: further ones while shutting down are ignored, so they cannot
    break the cleanup. The previous handler is restored on exit; outside the main thread nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def on_sigterm(signum, frame):
        nonlocal fired
        if not fired:
            fired = True
            raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        # None: a handler installed from C, which Python cannot reinstate; the default is the closest.
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2, like ours
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _dir_arg(text: str) -> Path:
    """A directory option's value: never empty (Path("") would silently mean the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is empty; give a directory, e.g. results")
    return Path(text)


def _floor_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (a fraction in (0, 1], e.g. 0.9)") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is outside (0, 1]: the floor is a fraction of clean accuracy")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench", description="Benchmark defenses against input repurposing.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    r = sub.add_parser("run", help="run defenses against attackers; append results and regenerate the leaderboard")
    r.add_argument("--defense", default="identity", help="name, comma-separated names, or 'all' (default identity)")
    r.add_argument("--attacker", default=DEFAULT_ATTACKERS, help="name, comma-separated names, or 'all' (default all)")
    r.add_argument("--dataset", help="dataset name (default: the preset's, else fashion-mnist)")
    r.add_argument("--target-task", help="designated task (default: the dataset's)")
    r.add_argument("--private-task", help="task of the `attribute` attacker (default: the dataset's private task)")
    r.add_argument("--target-arch", default="cnn", help="architecture of the designated model (default cnn)")
    r.add_argument("--seeds", default="0", help="e.g. 0 or 0,1,2 or 0-2 (default 0)")
    r.add_argument("--preset", default="default", help="smoke | default | full | paper (default default)")
    r.add_argument("--eval-split", default="test",
                   help="test (default) or val: for tuning, score on a held-out half of val, never on test")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME.PARAM=VALUE",
                   help="hyperparameter of a defense, attacker or dataset; comma-separated values sweep "
                        "(repeatable), e.g. --set finetune.budget=500,2000")
    r.add_argument("--max-release", type=int, metavar="N",
                   help="images of each released split for defenses with a costly per-image release, e.g. FMD "
                        "(default: the preset's cap; recorded in every result)")
    r.add_argument("--jobs", type=int, default=1, help="parallel jobs (default 1)")
    r.add_argument("--backend", default="loky", help="joblib backend: loky (default) or dask")
    r.add_argument("--scheduler", help="Dask scheduler address (with --backend dask; default: a LocalCluster)")
    r.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="seconds each job (a defense's preparation, an attack) may take before it is recorded "
                        "as failed (default: no limit; local backend only)")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    r.add_argument("--precision", default="auto",
                   help="auto | fp32 | bf16 (default auto: bf16 autocast with channels_last on CUDA and on CPUs "
                        "with native bf16, fp32 elsewhere; recorded in every result)")
    r.add_argument("--results-dir", type=_dir_arg, default=Path("results/local"),
                   help="default results/local/ (git-ignored; the reference results are in results/reference/)")
    r.add_argument("--data-dir", type=_dir_arg,
                   help="where datasets live (else $BENCH_DATA_DIR, then each loader's default)")
    r.add_argument("--reference", type=_dir_arg, metavar="DIR",
                   help="results dir whose finished identity runs (same spec, same data) are taken instead of "
                        "recomputed (default: the repository's results/reference/)")
    r.add_argument("--no-reference", action="store_true", help="compute every identity run here")
    r.add_argument("--keep-stale-code", action="store_true",
                   help="count runs recorded by an earlier version of a plugin's code as done (default: they "
                        "run again)")
    r.add_argument("--no-plots", action="store_true", help="skip writing plots after the run")
    r.set_defaults(func=cmd_run)

    ls = sub.add_parser("list", help="show every registered defense, attacker and dataset with its hyperparameters")
    ls.set_defaults(func=cmd_list)

    lb = sub.add_parser("leaderboard", help="regenerate the leaderboard CSVs from results/runs and print them")
    lb.add_argument("--results-dir", type=_dir_arg, default=Path("results/local"))
    lb.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for READMEs and papers)")
    lb.add_argument("--utility-floor", type=_floor_arg, default=None, metavar="F",
                    help="headline: rank configurations whose utility is at least F x clean (default 0.95)")
    lb.set_defaults(func=cmd_leaderboard)

    c = sub.add_parser("compare", help="did it help? two leaderboards, or two configurations, cell by cell with "
                                       "95 %% CIs; cells on one side only are listed")
    c.add_argument("leaderboards", nargs="*", type=Path, metavar="LEADERBOARD",
                   help="long-format leaderboard CSVs: two (the same configurations on both), or one with --a/--b")
    c.add_argument("--results-dir", type=_dir_arg,
                   help="compare --a and --b among the runs of this directory (default results/local/)")
    c.add_argument("--a", dest="config_a", metavar="CONFIG",
                   help="side A: a defense (all its configurations: must be one per dataset) or a label as the "
                        "leaderboard prints it, e.g. vfc, 'fmd(lam=0.03)', 'identity [500 released]', vfc() for "
                        "the defaults")
    c.add_argument("--b", dest="config_b", metavar="CONFIG", help="side B, as --a")
    c.add_argument("--dataset", help="only this dataset")
    c.set_defaults(func=cmd_compare)

    pl = sub.add_parser("plot", help="write the trade-off, per-attacker and image-grid plots")
    pl.add_argument("--results-dir", type=_dir_arg, default=Path("results/local"))
    pl.set_defaults(func=cmd_plot)

    rp = sub.add_parser("report", help="write a static HTML site of a results directory (tables, plots, claims, "
                                       "provenance)")
    rp.add_argument("--results-dir", type=_dir_arg, default=Path("results/local"),
                    help="default results/local/ (the committed site: --results-dir results/reference)")
    rp.add_argument("--out", type=_dir_arg, help="directory of the site (default <results-dir>/report/)")
    rp.add_argument("--claims", type=Path,
                    help="claims-vs-measured CSV (default results/claims.csv when it exists, else no claims table)")
    rp.add_argument("--screenshot", type=Path, metavar="PNG",
                    help="also save the top of the page as PNG with headless Chromium (e.g. docs/report.png)")
    rp.set_defaults(func=cmd_report)
    return p


def cmd_run(args) -> int:
    from bench.planning import plan_specs
    from bench.progress import duration
    from bench.results.records import repository_reference
    from bench.runner import Env, RunFinished, execute
    from bench.storage import check_writable_dir

    start = time.perf_counter()  # before planning: "done in" includes loading the data
    # Before any work: a results dir that is a file, lies under one or cannot be written would
    # otherwise fail only when the first run finishes.
    check_writable_dir(args.results_dir, "--results-dir")
    check_writable_dir(args.results_dir / "runs", "--results-dir")
    specs = plan_specs(args)
    env = Env(results_dir=args.results_dir, data_dir=str(args.data_dir) if args.data_dir else None,
              device=args.device, jobs=args.jobs, timeout=args.timeout, precision=args.precision,
              reference=None if args.no_reference else (args.reference or repository_reference()),
              keep_stale_code=args.keep_stale_code)
    # Flushed: stdout to a file is block-buffered, and a log must show at once that the sweep began.
    print(f"{len(specs)} run(s) requested on {args.dataset}, preset {args.preset} (identity calibration runs "
          "added as needed)", flush=True)

    def progress(run: RunFinished):
        eta = "unknown" if run.eta_s is None else duration(run.eta_s)
        print(f"  [{run.status}] [{run.done}/{run.total}] {run.label} ({duration(run.wall_s)}, ETA {eta})"
              + (f": {run.reason}" if run.reason else ""), flush=True)

    if args.backend == "dask":
        # joblib only hands work to Dask when more than one job is asked for.
        env = replace(env, jobs=max(env.jobs, 2))
        summary = _with_dask(args.scheduler, lambda: execute(specs, env, progress))
    else:
        summary = execute(specs, env, progress)
    print(summary.text())
    _print_leaderboards(args.results_dir, specs)
    if not args.no_plots:
        from bench.plots.write import write_plots
        for path in write_plots(args.results_dir):
            print(f"plot: {path}")
    print(f"done in {time.perf_counter() - start:.1f}s; results in {args.results_dir}/")
    return 1 if summary.failed else 0


def _with_dask(scheduler: str | None, fn):
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise BenchError("--backend dask needs dask[distributed]: pip install 'repurpose-bench[dask]'") from None
    import joblib

    cluster = None if scheduler else LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
    with Client(scheduler or cluster), joblib.parallel_config(backend="dask"):
        try:
            return fn()
        finally:
            if cluster is not None:
                cluster.close()


def cmd_list(args) -> int:
    from bench.registry import ATTACKERS, DATASETS, DEFENSES

    for title, reg in (("defenses", DEFENSES), ("attackers", ATTACKERS), ("datasets", DATASETS)):
        print(f"{title}:")
        for name in reg.names():
            why = reg.broken(name)
            if why is not None:  # one line; the other plugins are listed as usual
                print(f"  {name} [broken]: {why}")
                continue
            cls = reg.get(name)
            extra = f" [{cls.knowledge}]" if hasattr(cls, "knowledge") else ""
            extra += f" releases {cls.releases}" if hasattr(cls, "releases") else ""
            print(f"  {name}{extra}: {cls.description}")
            if getattr(cls, "tasks", ""):
                print(f"      tasks: {cls.tasks}")
            for preset, plugins in getattr(cls, "plugin_overrides", {}).items():
                for plugin, values in plugins.items():
                    print(_values_line(f"tuned for it ({preset} preset): {plugin}", values))
            params = reg.hparams(name)
            if params:
                print(_values_line("hyperparameters", params))
    from bench.presets import PRESETS
    print("presets:")
    for p in PRESETS.values():
        print(f"  {p.name}: {p.description}")
    return 0


def _values_line(label: str, values: dict) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return textwrap.indent(textwrap.fill(f"{label}: {text}", 96), "      ")


def _print_leaderboards(results_dir: Path, specs=None, markdown: bool = False, floor: float | None = None) -> None:
    import pandas as pd

    from bench import views
    from bench.results.leaderboards import write_leaderboards

    tables = write_leaderboards(results_dir, floor=floor)
    if tables["agg"].empty:
        print("leaderboard: no finished runs yet")
        return
    table = views.per_attacker(tables["agg"], specs)
    worst = views.worst(tables["worst"])
    top = views.headline(tables["headline"])
    if markdown:
        print("\nHeadline: per dataset, configurations within the utility floor evaluated against every attacker, "
              "ranked by worst-case leakage (lower is better):\n")
        print(views.markdown(top))
        print("\nPer attacker (mean over seeds):\n")
        print(views.markdown(table))
        print("\nWorst case per defense (calibrated attackers only; private tasks derivable from the designated one "
              "left out):\n")
        print(views.markdown(worst))
        return
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40,
                           "display.float_format", "{:.4f}".format):
        print("\nleaderboard (mean over seeds; leaderboard_agg.csv has std, n, ci95):")
        print(table.to_string(index=False))
        print("\nworst case per defense (calibrated attackers only; derivable private tasks left out):")
        print(worst.to_string(index=False))
        print("\nheadline (ranked by worst case among configurations within the utility floor and run against "
              "every attacker):")
        print(top.to_string(index=False))
    for line in views.missing_baselines(tables["headline"]):
        print(f"note: {line}")
    print(f"\nwritten: {results_dir}/leaderboard.csv, leaderboard_agg.csv, leaderboard_worst.csv, "
          "leaderboard_label_cost.csv, leaderboard_headline.csv")


def cmd_leaderboard(args) -> int:
    if not (args.results_dir / "runs").is_dir():
        raise BenchError(f"no runs in {args.results_dir}/runs; run `python -m bench run` first")
    _print_leaderboards(args.results_dir, markdown=args.markdown, floor=args.utility_floor)
    return 0


def cmd_compare(args) -> int:
    from bench.compare.command import compare_command

    for line in compare_command(args.leaderboards, args.results_dir, args.config_a, args.config_b, args.dataset):
        print(line)
    return 0


def cmd_plot(args) -> int:
    from bench.plots.write import write_plots

    if not (args.results_dir / "runs").is_dir():
        raise BenchError(f"no runs in {args.results_dir}/runs; run `python -m bench run` first")
    for path in write_plots(args.results_dir):
        print(f"plot: {path}")
    return 0


def cmd_report(args) -> int:
    from bench.report.browser import screenshot
    from bench.report.build import build_report

    index = build_report(args.results_dir, args.out, args.claims)
    if args.screenshot is not None:
        screenshot(index, args.screenshot)
        print(f"screenshot: {args.screenshot}")
    print(f"report: {index}")
    return 0
