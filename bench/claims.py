"""Papers' claims beside the numbers measured here: `results/claims.csv`, checked by a tiny rule language.

Each row of the claims file names one measured cell (dataset, configuration label as in the
leaderboards, attacker label, attack task, metric) and a verdict rule over it. The measured
column is always read from the current leaderboard (`leaderboard_agg.csv`), never typed in,
and the verdict is computed: when the numbers change, the table changes with them.

Columns: paper, claim, paper_value (the paper's number, as it states it), setting (prose: the
closest setting here), results (`main`, the default, or `tuning`: the results dir's `tuning/`),
dataset, config (a label as the leaderboard prints it, e.g. `fmd(lam=0.03) [500 released]`),
attacker (a label, e.g. `transfer(archs=cnn)`; empty for the designated model's metrics),
attack_task, metric, compare_to (another config, read as `other`), show (more metrics of the cell
to print beside the value), rule, verdict_if_true, verdict_if_false.

A rule is `[left] OP right` with OP one of >= <= > <, each side numbers and names joined by
+ - * (unary minus allowed); a missing left side is the measured value:

    >= 0.95 * clean_acc        utility within 5 % of the clean accuracy of the same cell
    <= 2 * chance              at most twice chance
    ci95_high <= 0.5           the whole confidence interval at most 0.5
    < other - 0.05             5 points below the `compare_to` configuration

Names: `value`, `ci95_low`, `ci95_high`, `n` (the measured cell's metric), `other`,
`other_ci95_low`, `other_ci95_high` (the same metric of the `compare_to` configuration), or
any metric of the measured cell (its mean, e.g. `clean_acc`, `attack_acc.cnn_identity`). Where
an attacker ran a budget curve, its cell at its own budget also holds `label_cost` (q = 0.9, with
its CI) and `label_cost_bound` (1: a lower bound), so a claim can weigh a defense's label cost
against a baseline's (`ci95_low > other_ci95_high`).
Nothing else: rules are parsed here and evaluated over numbers, never handed to eval.
"""
from __future__ import annotations

import csv
import io
import math
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.params import labels_of, setting_label
from bench.registry import ATTACKERS
from bench.results.keys import CONFIG, GROUP, LABEL_COLUMNS, curve_params
from bench.results.label_cost import Q
from bench.results.tables import full_budget

REQUIRED = ("paper", "claim", "paper_value", "setting", "dataset", "config", "metric", "rule",
            "verdict_if_true", "verdict_if_false")
OPTIONAL = ("results", "attacker", "attack_task", "compare_to", "show", "target_task")
# Where a claim's cell is looked up: the results directory itself, or its `tuning/` subdirectory
# (runs scored on val, kept apart from the test results the leaderboards rank).
RESULTS = ("main", "tuning")
COMPARATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
CELL_NAMES = ("value", "ci95_low", "ci95_high", "n")
OTHER_NAMES = ("other", "other_ci95_low", "other_ci95_high")
MAX_RULE = 200
RULE_HELP = ("a rule is [left] OP right with OP one of >=, <=, >, <, each side numbers and names joined by "
             "+, - and * (e.g. '>= 0.95 * clean_acc', 'ci95_high <= 0.5', '< other - 0.05'); names: "
             + ", ".join(CELL_NAMES + OTHER_NAMES) + ", or a metric of the cell (e.g. clean_acc, chance)")

_TOKEN = re.compile(r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)"
                    r"|(?P<op>>=|<=|>|<|\+|-|\*))")


# --- the rule language ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    text: str
    left: tuple      # an expression tree: ("num", x) | ("name", s) | ("neg", e) | (op, a, b) with op in + - *
    comparator: str
    right: tuple

    @property
    def names(self) -> list[str]:
        found: list[str] = []
        for tree in (self.left, self.right):
            _collect_names(tree, found)
        return list(dict.fromkeys(found))

    def holds(self, values: dict[str, float]) -> bool:
        """Whether the rule is true for `values` (every name of the rule must be in it).

        A side that is not a finite number (an overflow to infinity, infinity minus infinity) makes the
        comparison meaningless: BenchError naming the rule, never a "false"."""
        left, right = _evaluate(self.left, values), _evaluate(self.right, values)
        if not (math.isfinite(left) and math.isfinite(right)):
            raise BenchError(f"claims rule {self.text!r} evaluates to {left} {self.comparator} {right} on the measured "
                             "values, not a comparison of finite numbers; rewrite the rule")
        return COMPARATORS[self.comparator](left, right)


def parse_rule(text: str) -> Rule:
    """The Rule `text` spells, or a BenchError naming what is wrong and what a rule may be."""
    if not isinstance(text, str) or not text.strip():
        raise BenchError(f"rule {text!r} is empty; {RULE_HELP}")
    if len(text) > MAX_RULE:
        raise BenchError(f"rule {text[:40]!r}... is {len(text)} characters long; at most {MAX_RULE}")
    tokens = _tokens(text)
    cuts = [i for i, (kind, v) in enumerate(tokens) if kind == "op" and v in COMPARATORS]
    if len(cuts) != 1:
        raise BenchError(f"rule {text!r} has {len(cuts)} comparisons; exactly one: {RULE_HELP}")
    cut = cuts[0]
    left = _Parser(tokens[:cut], text).expression() if cut else ("name", "value")
    right = _Parser(tokens[cut + 1:], text).expression()
    return Rule(text=text.strip(), left=left, comparator=tokens[cut][1], right=right)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            bad = text[pos:].lstrip()[:1]
            raise BenchError(f"rule {text!r}: unexpected {bad!r} at position {len(text) - len(text[pos:].lstrip())};"
                             f" {RULE_HELP}")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive descent over one side of a comparison: expr := term (('+'|'-') term)*,
    term := factor ('*' factor)*, factor := '-' factor | number | name."""

    def __init__(self, tokens: list[tuple[str, str]], text: str):
        self.tokens, self.text, self.i = tokens, text, 0

    def expression(self) -> tuple:
        tree = self._sum()
        if self.i != len(self.tokens):
            raise BenchError(f"rule {self.text!r}: unexpected {self.tokens[self.i][1]!r}; {RULE_HELP}")
        return tree

    def _peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def _sum(self) -> tuple:
        tree = self._product()
        while self._peek() in ("+", "-"):
            op = self.tokens[self.i][1]
            self.i += 1
            tree = (op, tree, self._product())
        return tree

    def _product(self) -> tuple:
        tree = self._factor()
        while self._peek() == "*":
            self.i += 1
            tree = ("*", tree, self._factor())
        return tree

    def _factor(self) -> tuple:
        if self.i >= len(self.tokens):
            raise BenchError(f"rule {self.text!r} ends where a number or name is expected; {RULE_HELP}")
        kind, value = self.tokens[self.i]
        self.i += 1
        if kind == "op" and value == "-":
            return ("neg", self._factor())
        if kind == "number":
            number = float(value)
            if not math.isfinite(number):
                raise BenchError(f"rule {self.text!r}: the number {value} is not finite")
            return ("num", number)
        if kind == "name":
            return ("name", value)
        raise BenchError(f"rule {self.text!r}: {value!r} where a number or name is expected; {RULE_HELP}")


def _collect_names(tree: tuple, out: list[str]) -> None:
    if tree[0] == "name":
        out.append(tree[1])
    elif tree[0] == "neg":
        _collect_names(tree[1], out)
    elif tree[0] in ("+", "-", "*"):
        _collect_names(tree[1], out)
        _collect_names(tree[2], out)


def _evaluate(tree: tuple, values: dict[str, float]) -> float:
    kind = tree[0]
    if kind == "num":
        return tree[1]
    if kind == "name":
        return values[tree[1]]
    if kind == "neg":
        return -_evaluate(tree[1], values)
    a, b = _evaluate(tree[1], values), _evaluate(tree[2], values)
    return a + b if kind == "+" else a - b if kind == "-" else a * b


# --- the claims file ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    line: int                 # line of the claims file, for messages
    paper: str
    claim: str
    paper_value: str
    setting: str
    dataset: str
    config: str
    metric: str
    rule: Rule
    verdict_if_true: str
    verdict_if_false: str
    results: str = "main"
    attacker: str = ""        # empty: the designated model (a metric every attacker's cell of the config holds)
    attack_task: str = ""
    compare_to: str = ""
    show: tuple[str, ...] = ()
    target_task: str = ""     # empty: any (needed where a dataset ran several designated tasks)


def load_claims(path: Path) -> list[Claim]:
    """The claims of the CSV file at `path`, every rule parsed; one BenchError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"claims file {path} does not exist or is not a file (the default is results/claims.csv)")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise BenchError(f"cannot read claims file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise BenchError(f"claims file {path} is not UTF-8 text (byte {e.start})") from None
    opened = _unterminated_quote(text)
    if opened is not None:
        raise BenchError(f"claims file {path} line {opened}: a quote opens a field that is never closed "
                         "(unterminated quote)")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise BenchError(f"claims file {path} lacks column(s) {', '.join(missing)}; it needs "
                         f"{', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)})")
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise BenchError(f"claims file {path} has unknown column(s) {', '.join(map(repr, unknown))}; valid: "
                         f"{', '.join(REQUIRED + OPTIONAL)}")
    claims = []
    try:
        for row in reader:
            where = f"claims file {path} line {reader.line_num}"
            if None in row or any(v is None for v in row.values()):
                raise BenchError(f"{where}: {len(columns)} columns expected, the row has a different number")
            row = {k: v.strip() for k, v in row.items()}
            if not any(row.values()):
                continue
            empty = [c for c in REQUIRED if not row[c] and c not in ("paper_value",)]
            if empty:
                raise BenchError(f"{where}: empty {', '.join(empty)}")
            results = row.get("results") or "main"
            if results not in RESULTS:
                raise BenchError(f"{where}: results {results!r}; valid: {', '.join(RESULTS)} (empty means main)")
            try:
                rule = parse_rule(row["rule"])
            except BenchError as e:
                raise BenchError(f"{where}: {e}") from None
            if any(n in OTHER_NAMES for n in rule.names) and not row.get("compare_to"):
                raise BenchError(f"{where}: rule {rule.text!r} uses 'other' but compare_to is empty")
            claims.append(Claim(line=reader.line_num, rule=rule, results=results,
                                show=tuple((row.get("show") or "").split()),
                                **{k: row[k] for k in REQUIRED if k != "rule"},
                                **{k: row.get(k) or "" for k in ("attacker", "attack_task", "compare_to",
                                                                 "target_task")}))
    except csv.Error as e:
        raise BenchError(f"claims file {path} is not readable CSV: {e}") from None
    return claims


def _unterminated_quote(text: str) -> int | None:
    """The line where a CSV quoted field opens and never closes, or None (a doubled "" inside a quoted
    field is an escaped quote, as in the csv module)."""
    quoted, opened, line, i = False, 0, 1, 0
    while i < len(text):
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch == '"':
            if quoted and text[i + 1:i + 2] == '"':
                i += 1                      # an escaped quote inside the field
            else:
                quoted = not quoted
                opened = line
        i += 1
    return opened if quoted else None


# --- measuring and judging --------------------------------------------------------------------------
@dataclass
class Verdict:
    claim: Claim
    measured: str                 # "0.740 [0.732, 0.749], n=3 · clean_acc 0.769", or why nothing was measured
    verdict: str                  # the claim's verdict text for the rule's outcome, or "not measured"
    outcome: str                  # "true", "false" or "not measured"
    values: dict = field(default_factory=dict)


def labelled(agg: pd.DataFrame, costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """`agg` with the labels a reader (and the claims file) knows configurations and attackers by.

    With `costs` (the label-cost table), the cell of each attacker at its own budget also holds
    `label_cost` at q = Q (its CI and seeds like any metric's) and `label_cost_bound` (1 when a
    seed's defended curve never reached q within its largest budget: the cost is a lower bound).
    """
    if costs is not None and len(costs) and len(agg):
        agg = pd.concat([agg, _label_cost_rows(agg, costs)], ignore_index=True)

    defenses, attackers = labels_of(agg), labels_of(agg, "attacker", ATTACKERS)
    configs = {k: defenses[k[0], k[1]] + setting_label(k[2], k[3]) for k in
               set(zip(agg.defense, agg.defense_params, agg.eval_split, agg.max_release))}
    return agg.assign(config=[configs[k] for k in zip(agg.defense, agg.defense_params, agg.eval_split,
                                                      agg.max_release)],
                      attacker_label=[attackers[k] for k in zip(agg.attacker, agg.attacker_params)])


def _label_cost_rows(agg: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """`label_cost` and `label_cost_bound` rows, each in the aggregate cell of its attacker at its own budget."""
    own = agg[full_budget(agg.attacker, agg.attacker_params)].drop_duplicates(GROUP)
    own = own.assign(curve_params=curve_params(own.attacker_params))
    keep = GROUP + [c for c in (*LABEL_COLUMNS, "weak_attacker", "derivable") if c in own.columns] + ["curve_params"]
    at_q = costs[costs.q == Q][CONFIG + ["attacker", "curve_params", "attack_task", "label_cost", "ci95_low",
                                          "ci95_high", "n", "bound"]]
    cells = at_q.merge(own[keep], on=CONFIG + ["attacker", "curve_params", "attack_task"])
    base = cells[[c for c in keep if c != "curve_params"]]
    cost = base.assign(metric="label_cost", mean=cells.label_cost, std=math.nan, n=cells.n,
                       ci95_low=cells.ci95_low, ci95_high=cells.ci95_high)
    bound = base.assign(metric="label_cost_bound", mean=cells.bound.astype(float), std=math.nan, n=cells.n,
                        ci95_low=math.nan, ci95_high=math.nan)
    return pd.concat([cost, bound], ignore_index=True)


def judge(claims: list[Claim], tables: dict[str, pd.DataFrame | None]) -> list[Verdict]:
    """One Verdict per claim. `tables`: `labelled` aggregates by results name (None: no such results).

    A claim whose cell the results lack (never run, or a label that no longer matches) is
    `not measured` with the reason, never an error: the table shows what is there.
    """
    return [_judge(c, tables.get(c.results)) for c in claims]


def _judge(c: Claim, agg: pd.DataFrame | None) -> Verdict:
    if agg is None:
        return _unmeasured(c, f"no {c.results} results")
    cell, why = _cell(agg, c.dataset, c.config, c.attacker, c.attack_task, c.metric, c.target_task)
    if cell is None:
        return _unmeasured(c, why)
    row = cell[c.metric]
    values = {"value": row["mean"], "ci95_low": row["ci95_low"], "ci95_high": row["ci95_high"], "n": float(row["n"])}
    values.update({m: r["mean"] for m, r in cell.items() if m not in values})
    measured = _interval(row)
    # An attacker's flags say nothing about the designated model's metrics, which every attacker's cell holds.
    flags = [f.replace("_", " ") for f in ("weak_attacker", "derivable") if c.attacker and bool(row.get(f, False))]
    if flags:
        measured += " (" + ", ".join(flags) + ")"
    if c.compare_to:
        other, why = _cell(agg, c.dataset, c.compare_to, c.attacker, c.attack_task, c.metric, c.target_task)
        if other is None:
            return _unmeasured(c, f"compare_to: {why}", measured)
        o = other[c.metric]
        values.update(other=o["mean"], other_ci95_low=o["ci95_low"], other_ci95_high=o["ci95_high"])
        measured += f"; {c.compare_to}: {_interval(o)}"
    shown = [n for n in list(c.rule.names) + list(c.show) if n not in CELL_NAMES + OTHER_NAMES]
    missing = [n for n in dict.fromkeys(c.rule.names) if n not in values or not math.isfinite(values[n])]
    measured += "".join(f"; {n} {format_number(values[n])}" for n in dict.fromkeys(shown) if n in values)
    if missing:
        return _unmeasured(c, f"no {', '.join(missing)} in this cell", measured)
    try:
        holds = c.rule.holds(values)
    except BenchError as e:
        raise BenchError(f"claim on line {c.line} ({c.paper}: {c.claim}): {e}") from None
    return Verdict(c, measured, c.verdict_if_true if holds else c.verdict_if_false, "true" if holds else "false",
                   values)


def _unmeasured(c: Claim, why: str, measured: str = "") -> Verdict:
    return Verdict(c, (measured + "; " if measured else "") + f"not measured: {why}", "not measured", "not measured")


def _cell(agg: pd.DataFrame, dataset: str, config: str, attacker: str, attack_task: str,
          metric: str, target_task: str = "") -> tuple[dict | None, str]:
    """{metric: aggregate row} of the one cell the claim names, or (None, why not)."""
    rows = agg[(agg.dataset == dataset) & (agg.config == config)]
    if target_task:
        rows = rows[rows.target_task == target_task]
    if rows.empty:
        return None, f"no {config} on {dataset}"
    if attacker:
        rows = rows[rows.attacker_label == attacker]
    if attack_task:
        rows = rows[rows.attack_task == attack_task]
    rows = rows[rows.metric == metric].copy() if not rows.empty else rows
    where = f"{config} x {attacker or 'any attacker'}{f'[{attack_task}]' if attack_task else ''} on {dataset}"
    if rows.empty:
        return None, f"no {metric} for {where}"
    if rows.groupby(CONFIG, dropna=False).ngroups > 1:
        return None, (f"ambiguous: {where} matches several configurations (other target task, architecture or "
                      "preset); give target_task")
    if attacker and len(rows) > 1:
        tasks = ", ".join(sorted(set(rows.attack_task)))
        return None, f"ambiguous: {where} has several attack tasks ({tasks}); give attack_task"
    # The designated model's metrics (utility, agreement, clean accuracy) are in every attacker's cell:
    # take the one with the most seeds, the first by attacker label on a tie, so the choice is stable.
    best = rows.sort_values(["n", "attacker_label", "attack_task"], ascending=[False, True, True]).iloc[0]
    same = agg[(agg[GROUP] == best[GROUP]).all(axis=1)]
    return {r["metric"]: r for r in same.to_dict("records")}, ""


def _interval(row) -> str:
    return f"{format_interval(row['mean'], row['ci95_low'], row['ci95_high'], row['n'])}, n={int(row['n'])}"


def format_interval(mean: float, low: float, high: float, n) -> str:
    """`0.740 [0.732, 0.749]`; the mean alone for one seed (its "interval" is a point, not a CI)."""
    if n > 1 and math.isfinite(low) and math.isfinite(high):
        return f"{format_number(mean)} [{format_number(low)}, {format_number(high)}]"
    return format_number(mean)


def format_number(v: float) -> str:
    """A value as the README writes it: 3 decimals for accuracies and ratios, 1 for dB, none past 100."""
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
