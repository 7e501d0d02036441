"""One JSON per run in `results/runs/`, and the leaderboards regenerated from them.

`leaderboard.csv` is the long format (one row per run and metric); the
aggregated view (mean, std, n, 95 % CI over seeds) and the worst case per
defense are derived from it, never edited by hand.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench import metrics as M
from bench.errors import BenchError
from bench.storage import atomic_write_bytes, atomic_write_json

LONG_COLUMNS = ["run_id", "defense", "defense_params", "attacker", "attacker_params", "knowledge", "dataset",
                "target_task", "attack_task", "target_arch", "preset", "eval_split", "max_release", "seed",
                "weak_attacker", "metric", "value"]
# `max_release` (0 = no cap) keeps a capped identity twin apart from the uncapped identity runs:
# they are scored on different test images.
GROUP = ["defense", "defense_params", "attacker", "attacker_params", "knowledge", "dataset", "target_task",
         "attack_task", "target_arch", "preset", "eval_split", "max_release"]
CONFIG = ["defense", "defense_params", "dataset", "target_task", "target_arch", "preset", "eval_split", "max_release"]


def config_label(name: str, params_json: str, registry=None) -> str:
    """`vfc(beta=0.1)`: the plugin (default: a defense) with the hyperparameters that differ from its defaults."""
    from bench.registry import DEFENSES

    registry = registry or DEFENSES
    params = json.loads(params_json) if params_json else {}
    try:
        defaults = registry.hparams(name)
    except BenchError:  # a plugin no longer installed: show everything
        defaults = {}
    # Tuples are stored as JSON lists: compare in JSON form.
    changed = {k: v for k, v in params.items()
               if k not in defaults or json.dumps(defaults[k]) != json.dumps(v)}
    return name + ("(" + ", ".join(f"{k}={_short(v)}" for k, v in sorted(changed.items())) + ")" if changed else "")


def recorded_params(name: str, params: dict, registry=None) -> dict:
    """A run record's hyperparameters, with any added since it was written set to the value it ran with."""
    from bench.registry import DEFENSES

    try:
        legacy = (registry or DEFENSES).get(name).legacy_defaults
    except BenchError:  # a plugin no longer installed
        legacy = {}
    return {**legacy, **params}


def setting_label(eval_split: str, max_release) -> str:
    """What else sets a configuration apart in a table or plot: tuning runs scored on val, capped releases."""
    return (" [val]" if eval_split != "test" else "") + (f" [{int(max_release)} released]" if max_release else "")


def _short(v) -> str:
    return "+".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def run_path(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / "runs" / f"{run_id}.json"


def write_run(results_dir: Path, record: dict) -> None:
    atomic_write_json(run_path(results_dir, record["run_id"]), record)


def read_run(results_dir: Path, run_id: str) -> dict | None:
    path = run_path(results_dir, run_id)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BenchError(f"corrupt result file {path}: {e}") from None
    missing = [k for k in ("run_id", "status", "spec", "metrics") if not isinstance(record, dict) or k not in record]
    if missing:
        raise BenchError(f"corrupt result file {path}: not a run record (missing {', '.join(missing)}); "
                         "move it out of the runs/ directory or delete it")
    return record


def load_runs(results_dir: Path) -> list[dict]:
    runs_dir = Path(results_dir) / "runs"
    return [read_run(results_dir, p.stem) for p in sorted(runs_dir.glob("*.json"))] if runs_dir.is_dir() else []


def long_table(runs: list[dict]) -> pd.DataFrame:
    from bench.registry import ATTACKERS

    rows = []
    for r in runs:
        if r["status"] != "ok":
            continue
        s = r["spec"]
        base = {"run_id": r["run_id"], "defense": s["defense"],
                "defense_params": json.dumps(recorded_params(s["defense"], s["defense_params"]), sort_keys=True),
                "attacker": s["attacker"],
                "attacker_params": json.dumps(recorded_params(s["attacker"], s["attacker_params"], ATTACKERS),
                                              sort_keys=True),
                "eval_split": s.get("eval_split", "test"), "max_release": int(s.get("max_release") or 0),
                "knowledge": r.get("knowledge", ""), "dataset": s["dataset"], "target_task": s["target_task"],
                "attack_task": s["attack_task"], "target_arch": s["target_arch"], "preset": s["preset"],
                "seed": s["seed"], "weak_attacker": bool(r.get("flags", {}).get("weak_attacker", False))}
        rows += [{**base, "metric": k, "value": float(v)} for k, v in sorted(r["metrics"].items())]
    df = pd.DataFrame(rows, columns=LONG_COLUMNS)
    return df.sort_values(["dataset", "defense", "defense_params", "attacker", "seed", "metric"], kind="stable",
                          ignore_index=True)


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """mean, std, n and 95 % CI over seeds for every (configuration, attacker, metric)."""
    if long.empty:
        return pd.DataFrame(columns=GROUP + ["weak_attacker", "metric", "mean", "std", "n", "ci95_low", "ci95_high"])
    rows = []
    for key, g in long.groupby(GROUP + ["metric"], sort=True, dropna=False):
        v = g["value"].to_numpy()
        lo, hi = M.ci95(v)
        rows.append({**dict(zip(GROUP + ["metric"], key)), "weak_attacker": bool(g["weak_attacker"].any()),
                     "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v),
                     "ci95_low": lo, "ci95_high": hi})
    return pd.DataFrame(rows)


def worst_case(agg: pd.DataFrame) -> pd.DataFrame:
    """Per defense configuration: utility and the worst leakage over calibrated attackers.

    A defense is ranked by its worst case; attackers flagged weak do not count,
    and a configuration with only weak attackers gets no rank.
    """
    cols = CONFIG + ["utility_acc", "agreement", "worst_leakage", "worst_ci95_low", "worst_ci95_high",
                     "worst_attacker", "n_attackers", "n_seeds"]
    if agg.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, g in agg.groupby(CONFIG, sort=True):
        util = g[g.metric == "utility_acc"]["mean"]
        agree = g[g.metric == "agreement"]["mean"]
        leaks = g[(g.metric == "leakage") & ~g.weak_attacker]
        row = dict(zip(CONFIG, key), utility_acc=float(util.mean()) if len(util) else float("nan"),
                   agreement=float(agree.mean()) if len(agree) else float("nan"),
                   n_attackers=int(leaks.attacker.nunique()), n_seeds=int(g["n"].max()))
        if len(leaks):
            worst = leaks.loc[leaks["mean"].idxmax()]
            row.update(worst_leakage=worst["mean"], worst_ci95_low=worst["ci95_low"],
                       worst_ci95_high=worst["ci95_high"], worst_attacker=f"{worst.attacker}[{worst.attack_task}]")
        rows.append(row)
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["dataset", "worst_leakage"], na_position="last", ignore_index=True)


def write_leaderboards(results_dir: Path) -> dict[str, pd.DataFrame]:
    """Regenerate leaderboard.csv (long), leaderboard_agg.csv and leaderboard_worst.csv."""
    results_dir = Path(results_dir)
    long = long_table(load_runs(results_dir))
    agg = aggregate(long)
    worst = worst_case(agg)
    for name, df in (("leaderboard.csv", long), ("leaderboard_agg.csv", agg), ("leaderboard_worst.csv", worst)):
        atomic_write_bytes(results_dir / name, df.to_csv(index=False, float_format="%.6g").encode())
    return {"long": long, "agg": agg, "worst": worst}


def read_long(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise BenchError(f"no leaderboard at {path}")
    df = pd.read_csv(path, dtype={"defense_params": str, "attacker_params": str})
    if "max_release" not in df.columns:  # written before release caps existed: none was capped
        df["max_release"] = 0
    missing = set(LONG_COLUMNS) - set(df.columns)
    if missing:
        raise BenchError(f"{path} is not a long-format leaderboard: missing columns {sorted(missing)}")
    return df


def compare(a: pd.DataFrame, b: pd.DataFrame, metrics=("utility_acc", "attack_acc", "leakage", "psnr", "ssim")) -> pd.DataFrame:
    """Per configuration and metric: the two means, their difference, and whether the CIs are disjoint."""
    agg_a, agg_b = aggregate(a), aggregate(b)
    keys = GROUP + ["metric"]
    m = agg_a.merge(agg_b, on=keys, suffixes=("_a", "_b"))
    m = m[m.metric.isin(metrics)]
    m["diff"] = m["mean_b"] - m["mean_a"]
    disjoint = (m["ci95_low_b"] > m["ci95_high_a"]) | (m["ci95_high_b"] < m["ci95_low_a"])
    # Two single seeds have no interval at all: their difference cannot be called significant.
    m["significant"] = disjoint & ((m["n_a"] > 1) | (m["n_b"] > 1))
    return m[keys + ["mean_a", "n_a", "mean_b", "n_b", "diff", "significant"]].reset_index(drop=True)
