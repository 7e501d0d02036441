"""`python -m bench report`: a self-contained static site of one results directory.

`<out>/index.html` holds, per dataset, the headline ranking, the plots and the per-attacker
tables; then the claims-vs-measured table (`bench.claims`) and one provenance row per run. The
plots and the run records are copied beside it (`plots/`, `runs/`), so every link works offline
and the directory can be published as it is: the page loads nothing from the network (inline
CSS, no script; its Content-Security-Policy forbids anything but its own files).

The results directory is only read. The leaderboards are taken from its CSVs when they are there
(the numbers the README quotes), else computed in memory from the run records, never written.
Everything shown comes from records, which are untrusted text: the page is rendered by Jinja2 with
autoescaping, and plots are copied only when they are regular files inside `plots/` (a symlink
could publish any file of the machine).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from bench.claims import format_interval, format_number, judge, labelled, load_claims
from bench.errors import BenchError
from bench.storage import atomic_write_bytes, check_writable_dir

DEFAULT_CLAIMS = Path("results/claims.csv")
TEMPLATES = Path(__file__).resolve().parent / "templates"
# Marks an index.html written here.
GENERATOR = "repurpose-bench report"
# What a report wrote into its site, with a digest of each file: the only files a rebuild replaces or removes.
MANIFEST = ".bench-report.json"
# Subdirectories of a results dir the site must never be written into (it would copy onto itself,
# or a JSON in runs/ would become a run record).
PROTECTED = ("runs", "plots", "samples", "tuning")
# Per-attacker tables: which metrics, in this order, under these headings (columns with no value are left out).
SHOWN_METRICS = {"utility_acc": "utility", "agreement": "agreement", "attack_acc": "attack acc.",
                 "attack_acc_mean": "attack acc. (mean of models)", "chance": "chance", "leakage": "leakage",
                 "psnr": "PSNR (dB)", "ssim": "SSIM"}
# Plot kinds (the first part of a plot's file name) in the order a dataset section shows them.
PLOT_KINDS = ("tradeoff", "attackers", "sweep", "budget", "grid")
CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_TIMEOUT_S = 180
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def build_report(results_dir: Path, out_dir: Path | None = None, claims_path: Path | None = None) -> Path:
    """Write the site of `results_dir` into `out_dir` (default `<results_dir>/report`); the index.html path.

    `claims_path`: the claims file (None: DEFAULT_CLAIMS when it exists, else no claims section).
    Everything that can be refused is checked before the first file is written.
    """
    from bench.results import load_runs

    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "report"
    if not (results_dir / "runs").is_dir():
        raise BenchError(f"no runs in {results_dir}/runs; run `python -m bench run` first (or give --results-dir, "
                         "e.g. results/reference)")
    _check_out_dir(results_dir, out_dir)
    runs = load_runs(results_dir)
    agg, top = _tables(results_dir, runs)
    claims = None
    if claims_path is not None or DEFAULT_CLAIMS.is_file():
        claims = load_claims(claims_path if claims_path is not None else DEFAULT_CLAIMS)
    verdicts = None
    if claims is not None:
        tuning = results_dir / "tuning"
        tuning_agg = (_tables(tuning, None)[0]
                      if (tuning / "leaderboard_agg.csv").is_file() or (tuning / "runs").is_dir() else None)
        verdicts = judge(claims, {"main": labelled(agg),
                                  "tuning": labelled(tuning_agg) if tuning_agg is not None else None})
    plots = _plot_files(results_dir)
    page = _render(results_dir, runs, labelled(agg), top, plots, verdicts)
    return _write_site(out_dir, page, plots, {r["run_id"]: _run_file(results_dir, r["run_id"]) for r in runs})


# --- reading ------------------------------------------------------------------------------------
def _tables(results_dir: Path, runs: list[dict] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(leaderboard_agg, leaderboard_headline) of `results_dir`: its CSVs, else computed from its runs."""
    from bench.headline import COLUMNS as HEADLINE_COLUMNS, FLOOR, headline
    from bench.results import GROUP, aggregate, load_runs, long_table, worst_case

    agg_csv, top_csv = results_dir / "leaderboard_agg.csv", results_dir / "leaderboard_headline.csv"
    if agg_csv.is_file() and top_csv.is_file():
        agg = _read_csv(agg_csv, text=[c for c in GROUP if c != "max_release"] + ["metric"],
                        numbers=["max_release", "mean", "std", "n", "ci95_low", "ci95_high"],
                        flags=["weak_attacker", "derivable"])
        text = ["dataset", "config", "worst_attacker", "listed_apart", "baseline", "baseline_compared_over"]
        # A headline written before it stated its floor was made at the default one.
        top = _read_csv(top_csv, text=text, numbers=[c for c in HEADLINE_COLUMNS if c not in text + ["utility_floor"]])
        top["utility_floor"] = (pd.to_numeric(top["utility_floor"], errors="coerce") if "utility_floor" in top
                                else FLOOR)
        return agg, top
    runs = load_runs(results_dir) if runs is None else runs
    agg = aggregate(long_table(runs))
    return agg, headline(worst_case(agg), agg, runs)


def _read_csv(path: Path, text: list[str], numbers: list[str], flags: tuple | list = ()) -> pd.DataFrame:
    """A leaderboard CSV with its columns typed, or one BenchError naming the file, the row and the cell."""
    from bench.results import from_spreadsheet_safe

    regenerate = f"regenerate it: python -m bench leaderboard --results-dir {path.parent}"
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise BenchError(f"{path} is not a readable leaderboard CSV ({type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0]}); {regenerate}") from None
    missing = [c for c in [*text, *numbers, *flags] if c not in df.columns]
    if missing:
        raise BenchError(f"{path} lacks column(s) {', '.join(missing)} (written by another version?); {regenerate}")
    for c in text:
        df[c] = from_spreadsheet_safe(df[c])
    for c in numbers:
        values = pd.to_numeric(df[c].replace("", float("nan")), errors="coerce")
        bad = values.isna() & (df[c] != "")
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise BenchError(f"{path} row {i + 1}: {c} is {df[c].iloc[i]!r}, not a number; {regenerate}")
        df[c] = values
    for c in flags:
        bad = ~df[c].isin(["True", "False"])
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise BenchError(f"{path} row {i + 1}: {c} is {df[c].iloc[i]!r}, not True or False; {regenerate}")
        df[c] = df[c] == "True"
    return df


def _plot_files(results_dir: Path) -> list[Path]:
    """The PNGs of `results_dir/plots`, sorted; a symlink or special file there is refused, never published."""
    plots = results_dir / "plots"
    if plots.is_symlink() or (plots.exists() and not plots.is_dir()):
        raise BenchError(f"{plots} is a symlink or not a directory; the report publishes only plots written in "
                         "place by `python -m bench plot`: remove it")
    if not plots.exists():
        return []
    found = []
    for p in sorted(plots.iterdir()):
        # Dot files are plots being written right now (atomic writes go through `.name.tmp`).
        if p.name.startswith(".") or not p.name.endswith(".png"):
            continue
        if p.is_symlink() or not p.is_file():
            raise BenchError(f"{p} is a symlink or not a regular file; the report publishes only plots written in "
                             "place by `python -m bench plot`: remove it")
        found.append(p)
    return found


def _run_file(results_dir: Path, run_id: str) -> Path:
    from bench.results import run_path

    return run_path(results_dir, run_id)


def _check_out_dir(results_dir: Path, out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchError(f"--out {out_dir} is a file, not a directory; give a directory for the site "
                         f"(default {results_dir / 'report'})")
    check_writable_dir(out_dir, "--out")
    out, res = out_dir.resolve(), results_dir.resolve()
    inside = [res / d for d in PROTECTED if out == res / d or (res / d) in out.parents]
    if out == res or inside:
        raise BenchError(f"--out {out_dir} would write into the results directory {results_dir}"
                         f"{' (' + str(inside[0]) + ')' if inside else ''}, which the report only reads; give "
                         f"another directory, e.g. {results_dir / 'report'}")
    _check_site_dir(out_dir)   # empty, new, or a site a report wrote: refused now, before any work


# --- the page -----------------------------------------------------------------------------------
def _render(results_dir: Path, runs: list[dict], agg: pd.DataFrame, top: pd.DataFrame, plots: list[Path],
            verdicts) -> str:
    import jinja2
    from markupsafe import Markup, escape

    datasets = sorted(set(agg.dataset) | set(top.dataset) | {r["spec"]["dataset"] for r in runs})
    by_dataset = _plots_by_dataset(plots, datasets)
    sections = [{"name": ds, "anchor": _anchor(ds), "headline": _headline_rows(top[top.dataset == ds]),
                 "plots": by_dataset.get(ds, []),
                 "attackers": _attacker_tables(agg[agg.dataset == ds], top[top.dataset == ds])}
                for ds in datasets]
    statuses = pd.Series([r["status"] for r in runs], dtype=object).value_counts().to_dict()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    # `code` is markdown's `code` in claims prose: escaped first, so only the <code> tags are markup.
    env.filters["code"] = lambda s: Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(s))))
    return env.get_template("report.html.j2").render(
        generator=GENERATOR, results_dir=str(results_dir), n_runs=len(runs), statuses=statuses,
        latest=max((str(r.get("timestamp", "")) for r in runs), default=""),
        summary=[_summary_row(s) for s in sections], sections=sections,
        general_plots=by_dataset.get(None, []), verdicts=verdicts, provenance=_provenance_rows(runs),
        floor=_floor(top))


def _floor(top: pd.DataFrame) -> str:
    """The utility floor the shown headline was ranked at (one per headline; the default without one)."""
    from bench.headline import FLOOR

    floors = sorted(set(pd.to_numeric(top.get("utility_floor", pd.Series(dtype=float)), errors="coerce").dropna()))
    return " / ".join(f"{f:g}" for f in floors) or f"{FLOOR:g}"


def _anchor(name: str) -> str:
    """An HTML id for a dataset section: safe characters only, whatever the record says it is called."""
    from bench.plots import slug

    return "ds-" + slug(name)


def _headline_rows(top: pd.DataFrame) -> list[dict]:
    rows = []
    for r in top.to_dict("records"):
        # Text cells are empty, not NaN, where the headline has nothing to say (no baseline, ranked).
        r.update({k: _text(r[k]) for k in ("config", "worst_attacker", "listed_apart", "baseline",
                                           "baseline_compared_over")})
        flags = []
        if not (_finite(r["n_seeds"]) and r["n_seeds"] >= 2):
            flags.append("one seed: no CI")
        if not _finite(r["worst_leakage"]):
            flags.append("no calibrated attacker")
        rows.append({"rank": "" if pd.isna(r["rank"]) else str(int(r["rank"])), "config": r["config"],
                     "utility": format_number(r["utility_acc"]) if _finite(r["utility_acc"]) else "",
                     "ratio": format_number(r["utility_ratio"]) + " × clean" if _finite(r["utility_ratio"]) else "",
                     "worst": format_interval(r["worst_leakage"], r["worst_ci95_low"], r["worst_ci95_high"],
                                              r["n_seeds"]) if _finite(r["worst_leakage"]) else "",
                     "attacker": r["worst_attacker"], "n_seeds": _count(r["n_seeds"]),
                     "apart": r["listed_apart"], "flags": ", ".join(flags),
                     "baseline": _baseline_cell(r)})
    return rows


def _baseline_cell(r: dict) -> str:
    """The matched baseline and its worst case; over a subset of attackers, which, and this row's worst there."""
    if not r["baseline"] or not _finite(r["baseline_worst_leakage"]):
        return r["baseline"]
    cell = f"{r['baseline']} ({format_number(r['baseline_worst_leakage'])}"
    if r["baseline_compared_over"]:
        cell += (f" over {r['baseline_compared_over']}, where this configuration's worst is "
                 f"{format_number(r['worst_leakage_vs_baseline'])}")
    return cell + ")"


def _text(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA else str(v)


def _finite(v) -> bool:
    return not pd.isna(v) and math.isfinite(float(v))


def _summary_row(section: dict) -> dict:
    """The top-ranked configuration of a dataset (the headline's first row), or why there is none."""
    ranked = [r for r in section["headline"] if r["rank"]]
    best = ranked[0] if ranked else None
    return {"name": section["name"], "anchor": section["anchor"], "best": best, "n_ranked": len(ranked),
            "n_apart": len(section["headline"]) - len(ranked)}


def _attacker_tables(agg: pd.DataFrame, top: pd.DataFrame) -> list[dict]:
    """One table per attacker (and attack task) of a dataset: a row per configuration, mean [CI] per metric."""
    order = {c: i for i, c in enumerate(top["config"])}
    tables = []
    for (attacker, task), g in agg.groupby(["attacker_label", "attack_task"], sort=True):
        metrics = [m for m in SHOWN_METRICS if m in set(g.metric)]
        rows = []
        for config, c in sorted(g.groupby("config"), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
            cells = {r["metric"]: format_interval(r["mean"], r["ci95_low"], r["ci95_high"], r["n"])
                     for r in c[c.metric.isin(metrics)].to_dict("records")}
            flags = [f.replace("_", " ") for f in ("weak_attacker", "derivable") if c[f].any()]
            rows.append({"config": config, "cells": [cells.get(m, "") for m in metrics],
                         "n": _count(c["n"].max()), "flags": ", ".join(flags)})
        tables.append({"attacker": attacker, "task": task, "headings": [SHOWN_METRICS[m] for m in metrics],
                       "rows": rows})
    return tables


def _plots_by_dataset(plots: list[Path], datasets: list[str]) -> dict[str | None, list[dict]]:
    """Each plot under the dataset its file name names (`<kind>-<dataset>[-...].png`), else under None."""
    from bench.plots import slug

    slugs = sorted(((slug(d), d) for d in datasets), key=lambda sd: -len(sd[0]))  # `cifar-10` before `cifar`
    grouped: dict[str | None, list[dict]] = {}
    for p in plots:
        kind, _, rest = p.stem.partition("-")
        dataset, detail = None, ""
        for s, d in slugs:
            if rest == s or rest.startswith(s + "-"):
                dataset, detail = d, rest[len(s) + 1:]
                break
        grouped.setdefault(dataset, []).append({"src": "plots/" + quote(p.name), "name": p.name,
                                                "caption": _caption(kind, dataset, detail), "kind": kind})
    rank = {k: i for i, k in enumerate(PLOT_KINDS)}
    for items in grouped.values():
        items.sort(key=lambda i: (rank.get(i["kind"], len(rank)), i["name"]))
    return grouped


def _caption(kind: str, dataset: str | None, detail: str) -> str:
    where = f" on {dataset}" if dataset else " (one panel per dataset)" if kind == "tradeoff" else ""
    if kind == "tradeoff":
        return (f"Utility against worst-case leakage{where}, one point per defense configuration "
                "(error bars: 95 % CI of the worst attacker).")
    if kind == "attackers":
        return f"Leakage (accuracy for no defense) per attacker and defense configuration{where}, with 95 % CIs."
    if kind == "grid":
        return f"Original, released and inverted test images per defense configuration{where}."
    if kind == "sweep" and "-" in detail:
        defense, param = detail.rsplit("-", 1)
        return (f"{defense} at several values of {param}{where}: utility and each attack against the value, "
                "with the no-defense and chance levels.")
    if kind == "budget":
        return f"Leakage against the attacker's budget of labelled released images{where}."
    return f"{kind}{where}."


class _Plugins:
    """What the report asks the plugin registries, asked once per distinct question of one build.

    Each question loads the plugin's entry point, which costs milliseconds (its distribution's
    metadata is parsed): asked for every run and every table row, that took minutes.
    """

    def __init__(self):
        self._answers: dict[tuple, object] = {}

    def _memo(self, key: tuple, answer):
        if key not in self._answers:
            self._answers[key] = answer()
        return self._answers[key]

    def defaults(self, registry, name: str) -> dict:
        """The plugin's current defaults ({} for a plugin no longer installed: every value then counts)."""
        def ask():
            try:
                return registry.hparams(name)
            except BenchError:
                return {}
        return self._memo(("defaults", registry.kind, name), ask)

    def run_defaults(self, registry, name: str, dataset: str, preset: str) -> dict:
        """The values `python -m bench run --dataset DATASET --preset PRESET` gives a plugin without --set:
        its defaults, under the dataset's tuned values, under the preset's (as `cli.plan_specs` does)."""
        from bench.presets import get_preset
        from bench.registry import DATASETS

        def ask():
            try:
                tuned = DATASETS.get(dataset).plugin_overrides.get(preset, {}).get(name, {})
            except BenchError:  # a dataset no longer installed: nothing tuned for it
                tuned = {}
            try:
                presets = get_preset(preset).plugin_defaults.get(name, {})
            except BenchError:  # a preset that no longer exists: its values are given with --set anyway
                presets = {}
            return {**self.defaults(registry, name), **tuned, **presets}
        return self._memo(("run_defaults", registry.kind, name, dataset, preset), ask)

    def recorded(self, registry, name: str, params: dict) -> dict:
        from bench.results import recorded_params

        return self._memo(("recorded", registry.kind, name, json.dumps(params, sort_keys=True)),
                          lambda: recorded_params(name, params, registry))

    def label(self, registry, name: str, params: dict) -> str:
        from bench.results import config_label

        return self._memo(("label", registry.kind, name, json.dumps(params, sort_keys=True)),
                          lambda: config_label(name, json.dumps(self.recorded(registry, name, params),
                                                                sort_keys=True), registry))


def _provenance_rows(runs: list[dict]) -> list[dict]:
    from bench.registry import ATTACKERS, DEFENSES
    from bench.results import setting_label

    plugins = _Plugins()
    rows = []
    for r in runs:
        s = r["spec"]
        rows.append({"run_id": r["run_id"], "href": f"runs/{r['run_id']}.json", "dataset": s["dataset"],
                     "defense": plugins.label(DEFENSES, s["defense"], s["defense_params"])
                     + setting_label(s.get("eval_split", "test"), s.get("max_release") or 0),
                     "attacker": f"{plugins.label(ATTACKERS, s['attacker'], s['attacker_params'])}[{s['attack_task']}]",
                     "seed": s["seed"], "command": _command(r, plugins), "commit": _commit(r.get("git_commit")),
                     "versions": _versions(r.get("versions")), "wall": _duration(r.get("wall_s")),
                     "status": r["status"], "reason": str(r.get("reason", ""))})
    return sorted(rows, key=lambda x: (x["dataset"], x["defense"], x["attacker"], x["seed"], x["run_id"]))


def _command(record: dict, plugins: _Plugins) -> str:
    """The command line that makes this run: the record's own when it has one, else rebuilt from its spec."""
    recorded = record.get("command")
    if isinstance(recorded, list) and all(isinstance(a, str) for a in recorded):
        return shlex.join(recorded)
    if isinstance(recorded, str) and recorded:
        return recorded
    return reproduce_command(record["spec"], plugins)


def reproduce_command(spec: dict, plugins: _Plugins | None = None) -> str:
    """`python -m bench run ...` that plans exactly the run `spec` describes (its run_id), on any data dir.

    Every hyperparameter that differs from the value the command would give it anyway (the plugin's
    default under the dataset's and preset's tuned values) is given with --set, with the value the run
    had (legacy ones included), so a later change of a default cannot make the command mean another run.
    """
    from bench.registry import ATTACKERS, DATASETS, DEFENSES

    plugins = plugins or _Plugins()
    args = ["python", "-m", "bench", "run", "--dataset", spec["dataset"], "--target-task", spec["target_task"]]
    if spec["attack_task"] != spec["target_task"]:
        args += ["--private-task", spec["attack_task"]]
    args += ["--defense", spec["defense"], "--attacker", spec["attacker"], "--seeds", str(spec["seed"])]
    for name, params, registry in ((spec["defense"], spec["defense_params"], DEFENSES),
                                   (spec["attacker"], spec["attacker_params"], ATTACKERS),
                                   (spec["dataset"], spec["dataset_params"], DATASETS)):
        if registry is DATASETS:  # dataset options take no preset or tuned values
            defaults, values = plugins.defaults(registry, name), params
        else:
            defaults = plugins.run_defaults(registry, name, spec["dataset"], spec["preset"])
            values = plugins.recorded(registry, name, params)
        for k, v in sorted(values.items()):
            if k not in defaults or json.dumps(defaults[k]) != json.dumps(v):
                args += ["--set", f"{name}.{k}={_set_value(v)}"]
    if spec["preset"] != "default":
        args += ["--preset", spec["preset"]]
    if spec["target_arch"] != "cnn":
        args += ["--target-arch", spec["target_arch"]]
    if spec.get("eval_split", "test") != "test":
        args += ["--eval-split", spec["eval_split"]]
    if spec.get("max_release"):
        args += ["--max-release", str(spec["max_release"])]
    return shlex.join(args)


def _set_value(v) -> str:
    """A hyperparameter as `--set` reads it back (`registry.coerce`): exact floats, `a+b` tuples."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "+".join(map(_set_value, v))
    return repr(v) if isinstance(v, float) else str(v)


def _commit(commit) -> str:
    if not isinstance(commit, str) or not commit:
        return "" if commit is None else str(commit)
    return commit[:10] + ("-dirty" if commit.endswith("-dirty") else "")


def _versions(versions) -> str:
    if isinstance(versions, dict):
        return ", ".join(f"{k} {v}" for k, v in versions.items())
    return "" if versions is None else str(versions)


def _duration(seconds) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return "" if seconds is None else str(seconds)
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def _count(n) -> str:
    """A seed count as text; '' when there is none (NaN, or pandas' NA from an empty CSV cell)."""
    return "" if pd.isna(n) else str(int(n))


# --- writing --------------------------------------------------------------------------------------
def _write_site(out_dir: Path, page: str, plots: list[Path], run_files: dict[str, Path]) -> Path:
    """Copies first, index.html and the manifest last: a reader never finds a page whose files are not
    there yet. Only files this module wrote (listed in the manifest with the digest of what was written,
    and unchanged since) are ever replaced or removed."""
    index = out_dir / "index.html"
    written = _check_site_dir(out_dir)
    copies = {out_dir / "plots" / p.name: p for p in plots}
    copies.update({out_dir / "runs" / f"{run_id}.json": path for run_id, path in run_files.items()})
    contents = {}
    for target, source in copies.items():
        try:
            contents[target] = source.read_bytes()
        except OSError as e:
            raise BenchError(f"cannot read {source}: {e.strerror or e}") from None
    contents[index] = page.encode("utf-8")
    foreign = [t for t in contents if t.exists() and not _ours(out_dir, t, written)]
    if foreign:
        raise BenchError(f"--out {out_dir}: {foreign[0]} exists and was not written by a report; the report never "
                         "replaces a file it did not write: give an empty or new directory")
    for target, data in contents.items():
        if target != index:
            atomic_write_bytes(target, data)
    atomic_write_bytes(index, contents[index])
    manifest = {"generator": GENERATOR,
                "files": {str(t.relative_to(out_dir)): hashlib.sha256(d).hexdigest() for t, d in contents.items()}}
    atomic_write_bytes(out_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    # A plot or run gone from the results leaves no stale copy behind: only files written here, unchanged.
    for name in sorted(set(written) - set(manifest["files"])):
        stale = out_dir / name
        if _ours(out_dir, stale, written):
            try:
                stale.unlink()
            except OSError as e:
                raise BenchError(f"cannot remove the stale copy {stale}: {e.strerror or e}") from None
    return index


def _check_site_dir(out_dir: Path) -> dict[str, str]:
    """{file: sha256} of what an earlier report wrote into `out_dir` ({} for a new or empty directory).

    A directory holding anything else (a results dir given as --out by a slip, say) is refused.
    """
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return {}
    manifest = out_dir / MANIFEST
    try:
        recorded = json.loads(manifest.read_text())
        files = recorded["files"]
        if recorded.get("generator") != GENERATOR or not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and ".." not in Path(k).parts and not Path(k).is_absolute()
                for k, v in files.items()):
            raise ValueError("not a report's manifest")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BenchError(f"--out {out_dir} is not empty and holds no site a report wrote ({MANIFEST} missing or "
                         "unreadable); the report writes only into an empty directory or its own site: give "
                         "another --out (a site written by an older version has no manifest: delete it and report "
                         "again)") from None
    return files


def _ours(out_dir: Path, path: Path, written: dict[str, str]) -> bool:
    """`path` is a file an earlier report wrote into `out_dir`, unchanged since."""
    digest = written.get(str(path.relative_to(out_dir)))
    try:
        return digest is not None and path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest
    except OSError:
        return False


# --- the browser ----------------------------------------------------------------------------------
def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, CHROMIUMS) if path), None)


def run_chromium(page: Path, *flags: str, timeout: float = BROWSER_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Headless Chromium on the local file `page` with `flags`; BenchError when there is none or it fails.

    --no-sandbox: Chromium refuses to start as root otherwise (CI containers), and the page is our own
    static file with no script. A throwaway profile keeps the user's (and parallel runs') apart.
    """
    browser = find_chromium()
    if browser is None:
        raise BenchError(f"no Chromium on PATH (looked for {', '.join(CHROMIUMS)}); install it, e.g. "
                         "apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile:
        cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", *flags, Path(page).resolve().as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "LANG": "C.UTF-8"})
        except subprocess.TimeoutExpired:
            raise BenchError(f"{browser} did not finish within {timeout:g} s on {page}") from None
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise BenchError(f"{browser} failed on {page} (exit {proc.returncode}): {tail}")
    return proc


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 1700,
               flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The top `width` x `height` pixels of `page` as a PNG at `png` (written atomically); Chromium's run.

    `flags`: more Chromium switches, e.g. ("--enable-logging=stderr", "--v=0") to see console messages.
    """
    with tempfile.TemporaryDirectory(prefix="bench-shot-") as tmp:
        shot = Path(tmp) / "shot.png"
        proc = run_chromium(page, f"--window-size={width},{height}", f"--screenshot={shot}", *flags)
        data = shot.read_bytes() if shot.is_file() else b""
    if not data.startswith(PNG_SIGNATURE):
        raise BenchError(f"Chromium wrote no PNG screenshot of {page}: {proc.stderr.strip()[-300:]}")
    atomic_write_bytes(Path(png), data)
    return proc
