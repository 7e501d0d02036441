"""The report's page: headline, plots and per-attacker tables per dataset, claims and provenance,
rendered from a results dir's leaderboards (its CSVs when present, else computed in memory).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from markupsafe import Markup, escape

from bench.claims import format_interval, format_number, judge, labelled, load_claims
from bench.errors import BenchError
from bench.params import labels_of, setting_label
from bench.plots.files import slug
from bench.report.provenance import count_text, finite, provenance_rows
from bench.report.site import GENERATOR, check_out_dir, run_file, write_site
from bench.results.headline import COLUMNS as HEADLINE_COLUMNS, FLOOR
from bench.results.keys import GROUP, dataset_label
from bench.results.label_cost import Q, QS, cost_text, label_costs
from bench.results.leaderboards import from_spreadsheet_safe, leaderboards
from bench.results.records import load_runs
from bench.results.tables import long_table
from bench.views import missing_baselines

DEFAULT_CLAIMS = Path("results/claims.csv")
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
# Per-attacker tables: which metrics, in this order, under these headings (columns with no value are left out).
SHOWN_METRICS = {"utility_acc": "utility", "agreement": "agreement", "attack_acc": "attack acc.",
                 "attack_acc_mean": "attack acc. (mean of models)", "chance": "chance", "leakage": "leakage",
                 "psnr": "PSNR (dB)", "ssim": "SSIM"}
# Plot kinds (the first part of a plot's file name) in the order a dataset section shows them.
PLOT_KINDS = ("tradeoff", "attackers", "sweep", "budget", "grid")


def build_report(results_dir: Path, out_dir: Path | None = None, claims_path: Path | None = None) -> Path:
    """Write the site of `results_dir` into `out_dir` (default `<results_dir>/report`); the index.html path.

    `claims_path`: the claims file (None: DEFAULT_CLAIMS when it exists, else no claims section; the
    default file's table is shown only when these results measure at least one of its claims).
    Everything that can be refused is checked before the first file is written.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "report"
    if not (results_dir / "runs").is_dir():
        raise BenchError(f"no runs in {results_dir}/runs; run `python -m bench run` first (or give --results-dir, "
                         "e.g. results/reference)")
    check_out_dir(results_dir, out_dir)
    runs = load_runs(results_dir)
    agg, top = _tables(results_dir, runs)
    costs = label_costs(long_table(runs))
    claims = None
    if claims_path is not None or DEFAULT_CLAIMS.is_file():
        claims = load_claims(claims_path if claims_path is not None else DEFAULT_CLAIMS)
    verdicts = None
    if claims is not None:
        tuning = results_dir / "tuning"
        tuning_agg = (_tables(tuning, None)[0]
                      if (tuning / "leaderboard_agg.csv").is_file() or (tuning / "runs").is_dir() else None)
        verdicts = judge(claims, {"main": labelled(agg, costs),
                                  "tuning": labelled(tuning_agg) if tuning_agg is not None else None})
    claims_note = ""
    if claims_path is None and verdicts is not None and all(v.outcome == "not measured" for v in verdicts):
        # A user's own results: a table of the seed papers' claims, every row "not measured", says nothing.
        claims_note = (f"The seed papers' claims ({DEFAULT_CLAIMS}) concern configurations these results do not "
                       "hold; none is judged here (the reference results' report judges them; --claims CSV "
                       "judges claims of your own).")
        verdicts = None
    plots = _plot_files(results_dir)
    page = _render(results_dir, runs, labelled(agg), top, plots, verdicts, claims_note, costs)
    return write_site(out_dir, page, plots, {r["run_id"]: run_file(results_dir, r["run_id"]) for r in runs})


def _tables(results_dir: Path, runs: list[dict] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(leaderboard_agg, leaderboard_headline) of `results_dir`: its CSVs, else computed from its runs."""

    agg_csv, top_csv = results_dir / "leaderboard_agg.csv", results_dir / "leaderboard_headline.csv"
    if agg_csv.is_file() and top_csv.is_file():
        agg = _read_csv(agg_csv, text=[c for c in GROUP if c != "max_release"] + ["metric"],
                        numbers=["max_release", "mean", "std", "n", "ci95_low", "ci95_high"],
                        flags=["weak_attacker", "derivable"])
        text = ["dataset", "config", "worst_attacker", "listed_apart", "baseline", "baseline_compared_over"]
        # Columns a headline written by an older version lacks, and what they mean there: the default
        # floor, its own baselines, no label cost, one task pair per dataset, no defense name apart from its label.
        later = {"utility_floor": FLOOR, "baseline_source": "", "tasks": "", "defense": "", "label_cost": math.nan,
                 "label_cost_bound": "False", "label_cost_attacker": "", "baseline_label_cost": math.nan,
                 "baseline_label_cost_bound": "False", "label_cost_ci95_low": math.nan,
                 "label_cost_ci95_high": math.nan, "baseline_label_cost_ci95_low": math.nan,
                 "baseline_label_cost_ci95_high": math.nan}
        top = _read_csv(top_csv, text=text, numbers=[c for c in HEADLINE_COLUMNS if c not in text and c not in later])
        for c, default in later.items():
            top[c] = top[c] if c in top else default
        for c in ("baseline_source", "tasks", "defense", "label_cost_attacker"):
            top[c] = from_spreadsheet_safe(top[c].astype(str))
        for c in ("utility_floor", "label_cost", "baseline_label_cost", "label_cost_ci95_low", "label_cost_ci95_high",
                  "baseline_label_cost_ci95_low", "baseline_label_cost_ci95_high"):
            top[c] = pd.to_numeric(top[c], errors="coerce")
        for c in ("label_cost_bound", "baseline_label_cost_bound"):
            top[c] = top[c].astype(str) == "True"
        return agg, top
    tables = leaderboards(results_dir, load_runs(results_dir) if runs is None else runs)
    return tables["agg"], tables["headline"]


def _read_csv(path: Path, text: list[str], numbers: list[str], flags: tuple | list = ()) -> pd.DataFrame:
    """A leaderboard CSV with its columns typed, or one BenchError naming the file, the row and the cell."""
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


def _render(results_dir: Path, runs: list[dict], agg: pd.DataFrame, top: pd.DataFrame, plots: list[Path],
            verdicts, claims_note: str = "", costs: pd.DataFrame | None = None) -> str:
    import jinja2

    datasets = sorted(set(agg.dataset) | set(top.dataset) | {dataset_label(r) for r in runs})
    by_dataset = _plots_by_dataset(plots, datasets)
    sections = [{"name": ds, "anchor": _anchor(ds), "headline": _headline_rows(top[top.dataset == ds]),
                 "notes": missing_baselines(top[top.dataset == ds]),
                 "label_costs": _label_cost_tables(costs[costs.dataset == ds] if costs is not None else None),
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
        general_plots=by_dataset.get(None, []), verdicts=verdicts, claims_note=claims_note,
        provenance=provenance_rows(runs),
        floor=_floor(top))


def _label_cost_tables(costs: pd.DataFrame | None) -> list[dict]:
    """Per q (Q first, the others after it): one row per configuration, attacker and task with a budget curve."""
    if costs is None or costs.empty:
        return []
    costs = costs[costs.eval_split == "test"]
    labels = labels_of(costs)
    tables = []
    for q in sorted(QS, key=lambda q: q != Q):
        rows = []
        for r in costs[costs.q == q].sort_values(["target_task", "attacker", "attack_task", "label_cost"]).itertuples():
            flags = [name for flag, name in ((r.weak_attacker, "weak attacker"), (r.derivable, "derivable task"))
                     if flag]
            value = cost_text(r.label_cost, r.bound)
            if value and r.n > 1 and finite(r.ci95_low):
                value += f" [{format_number(r.ci95_low)}, {format_number(r.ci95_high)}]"
            rows.append({"config": labels[r.defense, r.defense_params] + setting_label(r.eval_split, r.max_release),
                         "tasks": r.target_task, "attacker": f"{r.attacker}[{r.attack_task}]",
                         "cost": value or "unresolved (the identity attacker reaches the goal at its smallest budget)",
                         "n": count_text(r.n), "flags": ", ".join(flags)})
        tables.append({"q": f"{q:g}", "main": q == Q, "rows": rows})
    return tables


def _floor(top: pd.DataFrame) -> str:
    """The utility floor the shown headline was ranked at (one per headline; the default without one)."""
    floors = sorted(set(pd.to_numeric(top.get("utility_floor", pd.Series(dtype=float)), errors="coerce").dropna()))
    return " / ".join(f"{f:g}" for f in floors) or f"{FLOOR:g}"


def _anchor(name: str) -> str:
    """An HTML id for a dataset section: safe characters only, whatever the record says it is called."""
    return "ds-" + slug(name)


def _headline_rows(top: pd.DataFrame) -> list[dict]:
    rows = []
    for r in top.to_dict("records"):
        # Text cells are empty, not NaN, where the headline has nothing to say (no baseline, ranked).
        r.update({k: _text(r[k]) for k in ("config", "worst_attacker", "listed_apart", "baseline",
                                           "baseline_compared_over")})
        flags = []
        if not (finite(r["n_seeds"]) and r["n_seeds"] >= 2):
            flags.append("one seed: no CI")
        if not finite(r["worst_leakage"]):
            flags.append("no calibrated attacker")
        rows.append({"rank": "" if pd.isna(r["rank"]) else str(int(r["rank"])), "config": r["config"],
                     "utility": format_number(r["utility_acc"]) if finite(r["utility_acc"]) else "",
                     "ratio": format_number(r["utility_ratio"]) + " × clean" if finite(r["utility_ratio"]) else "",
                     "worst": format_interval(r["worst_leakage"], r["worst_ci95_low"], r["worst_ci95_high"],
                                              r["n_seeds"]) if finite(r["worst_leakage"]) else "",
                     "attacker": r["worst_attacker"], "n_seeds": count_text(r["n_seeds"]),
                     "label_cost": (f"{cost_text(r['label_cost'], r['label_cost_bound'])} "
                                    f"({_text(r['label_cost_attacker'])})" if finite(r["label_cost"]) else ""),
                     "tasks": _text(r["tasks"]),
                     "apart": r["listed_apart"], "flags": ", ".join(flags),
                     "baseline": _baseline_cell(r)})
    return rows


def _baseline_cell(r: dict) -> str:
    """The matched baseline and its worst case; over a subset of attackers, which, and this row's worst there."""
    if not r["baseline"] or not finite(r["baseline_worst_leakage"]):
        return r["baseline"]
    source = _text(r.get("baseline_source"))
    cell = f"{r['baseline']} ({'from the ' + source + ', ' if source else ''}" \
           f"{format_number(r['baseline_worst_leakage'])}"
    if r["baseline_compared_over"]:
        cell += (f" over {r['baseline_compared_over']}, where this configuration's worst is "
                 f"{format_number(r['worst_leakage_vs_baseline'])}")
    return cell + ")"


def _text(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA else str(v)


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
                         "n": count_text(c["n"].max()), "flags": ", ".join(flags)})
        tables.append({"attacker": attacker, "task": task, "headings": [SHOWN_METRICS[m] for m in metrics],
                       "rows": rows})
    return tables


def _plots_by_dataset(plots: list[Path], datasets: list[str]) -> dict[str | None, list[dict]]:
    """Each plot under the dataset its file name names (`<kind>-<dataset>[-...].png`), else under None."""
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
                "(error bars: 95 % CI of the worst attacker; dotted: the headline's utility floor).")
    if kind == "attackers":
        return (f"Leakage (accuracy for no defense) per attacker and defense configuration{where}, with 95 % CIs; "
                "grey: a weak attacker or an undefined value, never a worst case.")
    if kind == "grid":
        return f"Original, released and inverted test images per defense configuration{where}."
    if kind == "sweep" and "-" in detail:
        defense, param = detail.rsplit("-", 1)
        return (f"{defense} at several values of {param}{where}: utility and each attack against the value, "
                "with the no-defense and chance levels.")
    if kind == "budget":
        return f"Leakage against the attacker's budget of labelled released images{where}."
    return f"{kind}{where}."
