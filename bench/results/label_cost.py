"""Label cost: how many more labelled releases an attacker needs than it would need on raw images.

For a defense configuration, an attacker that learns from releases (its `budget` is the number of
labelled released images it may use) and a task, on one seed:

- the identity twin's curve (its score against the images it learnt from) sets the goal:
  q x its score at the largest budget run;
- each curve reaches the goal at the number of images where it first crosses it, interpolated
  linearly in score on a log scale of images between the two budgets around the crossing;
- the label cost is the defended attacker's number over the identity attacker's.

A defended curve that never reaches the goal within its largest budget gives a lower bound (the
largest budget it ran, over the identity's number): `bound` is True and the value reads `>= x`.
An identity curve already at the goal at its smallest budget leaves the cost unresolved (NaN): the
sweep needs a smaller budget; `finetune` never resolves, as its clean model reaches the goal with no
labels at all. Identity's own label cost is 1 by construction. The score is the
attack accuracy, for inversion (which learns from released images paired with originals) SSIM.
Costs are averaged over the seeds both curves ran, with a t-interval (docs/design.md, section 5).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench import metrics as M
from bench.results.keys import BOOL_FLAGS, CONFIG, curve_params

Q = 0.9
QS = (0.8, 0.9, 0.95)   # the report shows 0.9 and keeps the other two one click away
SCORE = {"inversion": "ssim"}   # every other attacker: attack_acc
CURVE = CONFIG + ["attacker", "curve_params", "attack_task"]
COLUMNS = CURVE + ["defense_label", "q", "label_cost", "ci95_low", "ci95_high", "n", "bound", *BOOL_FLAGS]


def reach(images: np.ndarray, scores: np.ndarray, goal: float) -> tuple[float, str]:
    """Images at which the curve (sorted by images) first reaches `goal`, and how that number is known:
    "" interpolated, "above" not reached (the largest budget, a lower bound), "below" reached already at
    the smallest budget (an upper bound)."""
    if scores[0] >= goal:
        return float(images[0]), "below"
    for (x0, y0), (x1, y1) in zip(zip(images, scores), zip(images[1:], scores[1:])):
        if y0 < goal <= y1:
            t = (goal - y0) / (y1 - y0)
            return float(math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))), ""
    return float(images[-1]), "above"


def seed_cost(defended: tuple[np.ndarray, np.ndarray], identity: tuple[np.ndarray, np.ndarray],
              q: float) -> tuple[float, bool]:
    """(label cost, is a lower bound) of one seed's curves, each (images, scores) sorted by images."""
    goal = q * identity[1][-1]
    n_identity, how_identity = reach(*identity, goal)
    if how_identity == "below":
        return math.nan, False
    n_defended, how_defended = reach(*defended, goal)
    return n_defended / n_identity, how_defended == "above"


def curves(long: pd.DataFrame) -> pd.DataFrame:
    """One row per curve and seed with at least two budgets: CURVE, seed, `images` and `scores` (sorted
    arrays), and the flags of its largest budget."""
    if long.empty:
        return pd.DataFrame(columns=CURVE + ["seed", "defense_label", "images", "scores", *BOOL_FLAGS])
    rows = long.assign(curve_params=curve_params(long.attacker_params))
    score_metric = rows.attacker.map(lambda a: SCORE.get(a, "attack_acc"))
    wide_key = CURVE + ["attacker_params", "seed"]
    images = rows[rows.metric == "attack_images"].set_index(wide_key)["value"].rename("images")
    scores = rows[rows.metric == score_metric]
    points = scores.join(images, on=wide_key).dropna(subset=["images"])
    out = []
    for key, g in points.groupby(CURVE + ["seed"], sort=True, dropna=False):
        g = g.sort_values("images")
        if g.images.nunique() < 2:
            continue
        last = g.iloc[-1]
        label = {"defense_label": last["defense_label"]} if "defense_label" in g else {}
        out.append({**dict(zip(CURVE + ["seed"], key)), **label, "images": g.images.to_numpy(dtype=float),
                    "scores": g.value.to_numpy(dtype=float), **{f: bool(last[f]) for f in BOOL_FLAGS}})
    return pd.DataFrame(out, columns=CURVE + ["seed", "defense_label", "images", "scores", *BOOL_FLAGS])


def label_costs(long: pd.DataFrame, qs=QS) -> pd.DataFrame:
    """Per configuration, attacker (settings but its budget), task and q: mean label cost over seeds, its
    95 % CI, n seeds, whether it is a lower bound, and the flags of the full-budget cell."""
    table = curves(long)
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    twin = [c for c in CURVE + ["seed"] if c not in ("defense", "defense_params")]
    identity = {tuple(r[c] for c in twin): (r["images"], r["scores"])
                for r in table[table.defense == "identity"].to_dict("records")}
    out = []
    for key, g in table.groupby(CURVE, sort=True, dropna=False):
        for q in qs:
            costs, bounds = [], []
            for r in g.to_dict("records"):
                base = identity.get(tuple(r[c] for c in twin))
                if base is None:
                    continue
                cost, bound = (1.0, False) if r["defense"] == "identity" else seed_cost(
                    (r["images"], r["scores"]), base, q)
                costs.append(cost)
                bounds.append(bound)
            if not costs:
                continue
            v = np.asarray(costs)
            lo, hi = M.ci95(v) if np.isfinite(v).all() else (math.nan, math.nan)
            out.append({**dict(zip(CURVE, key)), "defense_label": g.defense_label.iloc[0], "q": q,
                        "label_cost": float(v.mean()), "ci95_low": lo,
                        "ci95_high": hi, "n": len(v), "bound": any(bounds),
                        **{f: bool(g[f].any()) for f in BOOL_FLAGS}})
    return pd.DataFrame(out, columns=COLUMNS)


def cheapest(costs: pd.DataFrame, q: float = Q) -> dict[tuple, dict]:
    """Per configuration (CONFIG): its smallest label cost at `q` over counted cells (calibrated attackers of
    non-derivable tasks): the attacker's cheapest route, with that attacker and whether it is a bound."""
    counted = costs[(costs.q == q) & ~costs.weak_attacker & ~costs.derivable].dropna(subset=["label_cost"])
    out = {}
    for key, g in counted.groupby(CONFIG, sort=False, dropna=False):
        best = g.loc[g.label_cost.idxmin()]
        out[key] = {"label_cost": float(best.label_cost), "label_cost_bound": bool(best.bound),
                    "label_cost_ci95_low": float(best.ci95_low), "label_cost_ci95_high": float(best.ci95_high),
                    "label_cost_attacker": f"{best.attacker}[{best.attack_task}]"}
    return out


def cost_text(value: float, bound: bool) -> str:
    """`4.0` or `>= 12.5`: how a label cost reads in a table."""
    if not value == value:
        return ""
    return (">= " if bound else "") + (f"{value:.1f}" if value < 100 else f"{value:.0f}")
