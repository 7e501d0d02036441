"""Calibration of attackers on private tasks, decided across runs.

A run decides `weak_attacker` itself where the yardstick is in the run: on the designated task, the
designated model's clean accuracy. A private task has no designated model, so its yardstick is the
best attacker the results dir holds for it: the same attacker, at its own budget, on identity with no
release cap, on the same seed. An identity run on a private task below 0.9 x that (a release cap
that starves it, a small budget) is as weak as one below 0.9 x clean accuracy on the designated task,
and every defended run calibrated by it inherits the flag, as its record inherits the designated-task
flag from its twin. Where the results dir lacks the uncapped run, nothing is flagged: there is no
yardstick to fall short of.
"""
from __future__ import annotations

import pandas as pd

from bench import metrics as M
from bench.results.keys import curve_params, full_budget

# A defended run and its identity twin share these (and the attacker's settings, budget included).
TWIN = ["attacker", "attacker_params", "knowledge", "dataset", "target_task", "attack_task", "target_arch",
        "preset", "eval_split", "max_release", "seed"]
# One yardstick per attacker (settings but its budget), private task and seed.
YARDSTICK = ["attacker", "curve_params", "knowledge", "dataset", "target_task", "attack_task", "target_arch",
             "preset", "eval_split", "seed"]


def flag_weak_private_attackers(long: pd.DataFrame) -> pd.DataFrame:
    """`long` with `weak_attacker` set on every row of a run on a private task whose identity twin reaches
    under 0.9 x the uncapped identity attacker at its own budget (module docstring)."""
    acc = long[(long.metric == "attack_acc") & (long.defense == "identity")
               & (long.attack_task != long.target_task)]
    if acc.empty:
        return long
    acc = acc.assign(curve_params=curve_params(acc.attacker_params),
                     full=full_budget(acc.attacker, acc.attacker_params))
    yardstick = (acc[(acc.max_release == 0) & acc.full].groupby(YARDSTICK, dropna=False)["value"].max()
                 .rename("yardstick"))
    twins = acc.join(yardstick, on=YARDSTICK).dropna(subset=["yardstick"])
    weak = twins[[M.is_weak(v, y) for v, y in zip(twins.value, twins.yardstick)]]
    if weak.empty:
        return long
    weak_keys = set(weak[TWIN].itertuples(index=False, name=None))
    hit = [k in weak_keys for k in long[TWIN].itertuples(index=False, name=None)]
    out = long.copy()
    out.loc[hit, "weak_attacker"] = True
    return out
