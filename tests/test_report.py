"""`python -m bench report`: the static site, the claims table and its rule language.

The browser test renders the committed results and loads the page in headless Chromium; it is
skipped where Chromium is not installed (CI installs it: .ci/run).
"""
import json
import re
import shlex
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd
import pytest

from bench.claims import judge, labelled, load_claims, parse_rule
from bench.errors import BenchError
from bench.report.browser import screenshot
from bench.report.build import build_report
from bench.report.provenance import reproduce_command
from bench.runspec import RunSpec
from conftest import REPO

REFERENCE = REPO / "results" / "reference"
CLAIMS = REPO / "results" / "claims.csv"
HEADER = ("paper,claim,paper_value,setting,results,dataset,config,attacker,attack_task,metric,compare_to,show,rule,"
          "verdict_if_true,verdict_if_false\n")


# --- the rule language --------------------------------------------------------------------------
@pytest.mark.parametrize("rule, values, holds", [
    (">= 0.95 * clean_acc", {"value": 0.90, "clean_acc": 0.94}, True),
    (">= 0.95 * clean_acc", {"value": 0.80, "clean_acc": 0.94}, False),
    ("<= 0.02", {"value": 0.021}, False),
    ("<= chance + 0.01", {"value": 0.105, "chance": 0.1}, True),
    ("< other - 0.05", {"value": 0.60, "other": 0.76}, True),
    ("ci95_high <= 0.5", {"value": 0.3, "ci95_high": 0.6}, False),
    ("> -1 * attack_acc.cnn_identity + 2 * 0.5", {"value": 0.1, "attack_acc.cnn_identity": 0.5}, False),
    ("value - other > -0.01", {"value": 0.5, "other": 0.505}, True),
])
def test_rules_compare_the_measured_value(rule, values, holds):
    assert parse_rule(rule).holds(values) is holds


def test_a_rule_names_what_it_reads():
    assert parse_rule(">= 0.95 * clean_acc").names == ["value", "clean_acc"]
    assert parse_rule("ci95_high <= chance + 2 * chance").names == ["ci95_high", "chance"]


@pytest.mark.parametrize("rule, needle", [
    ("__import__('os').system('touch /tmp/pwned') >= 0", "unexpected '('"),
    ("value >= 1; import os", "unexpected ';'"),
    ("value == 1", "unexpected '='"),
    ("0 <= value <= 1", "2 comparisons"),
    (">= 0.9 or 1", "unexpected 'or'"),
    (">= clean_acc /  2", "unexpected '/'"),
    ("value", "0 comparisons"),
    (">= ", "ends where a number or name is expected"),
    ("", "is empty"),
    (">= " + "1 + " * 60 + "1", "at most 200"),
])
def test_malicious_or_unknown_rules_are_refused_with_what_a_rule_may_be(rule, needle):
    with pytest.raises(BenchError) as e:
        parse_rule(rule)
    assert needle in str(e.value)
    if rule.strip() and len(rule) <= 200:
        assert "a rule is [left] OP right" in str(e.value)


def test_a_bad_rule_in_the_claims_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "claims.csv"
    path.write_text(HEADER + "P,c,1 %,s,,d,vfc,,,utility_acc,,,>= 0.9,yes,no\n"
                             "P,c,1 %,s,,d,vfc,,,utility_acc,,,exec('x') > 1,yes,no\n")
    with pytest.raises(BenchError, match=r"claims\.csv line 3: rule .*unexpected '\('"):
        load_claims(path)
    path.write_text(HEADER.replace(",show", ",shown") + "P,c,1 %,s,,d,vfc,,,utility_acc,,,>= 0.9,yes,no\n")
    with pytest.raises(BenchError, match="unknown column.*'shown'"):
        load_claims(path)
    path.write_text(HEADER + "P,c,1 %,s,elsewhere,d,vfc,,,utility_acc,,,>= 0.9,yes,no\n")
    with pytest.raises(BenchError, match="results 'elsewhere'; valid: main, tuning"):
        load_claims(path)


# --- claims against results ------------------------------------------------------------------------
def _agg(config_rows: list[tuple]) -> pd.DataFrame:
    """A labelled aggregate: rows of (defense, attacker, attack_task, metric, mean, n)."""
    rows = [{"defense": d, "defense_params": "{}", "attacker": a, "attacker_params": "{}", "knowledge": "gray-box",
             "dataset": "d", "target_task": "t", "attack_task": task, "target_arch": "cnn", "preset": "smoke",
             "eval_split": "test", "max_release": 0, "metric": m, "weak_attacker": False, "derivable": False,
             "mean": v, "std": 0.0, "n": n, "ci95_low": v - 0.01, "ci95_high": v + 0.01}
            for d, a, task, m, v, n in config_rows]
    return labelled(pd.DataFrame(rows))


def _claims(tmp_path, *lines: str):
    path = tmp_path / "claims.csv"
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return load_claims(path)


def test_verdicts_follow_the_rule_and_missing_cells_are_not_measured(tmp_path):
    agg = _agg([("mydef", "adaptive", "t", "utility_acc", 0.90, 3), ("mydef", "adaptive", "t", "clean_acc", 0.92, 3),
                ("mydef", "adaptive", "t", "leakage", 0.8, 3)])
    claims = _claims(tmp_path,
                     "P,stays accurate,72 %,s,,d,mydef,,,utility_acc,,,>= 0.95 * clean_acc,yes,no",
                     "P,hides,,s,,d,mydef,adaptive,t,leakage,,,<= 0.5,holds,fails",
                     "P,never run,,s,,d,otherdef,,,utility_acc,,,>= 0.9,yes,no",
                     "P,no such metric,,s,,d,mydef,,,utility_acc,,,>= 0.9 * __import__,yes,no",
                     "P,on val,,s,tuning,d,mydef,,,utility_acc,,,>= 0.9,yes,no",
                     "P,vs other,,s,,d,mydef,,,utility_acc,otherdef,,> other,yes,no")
    v = judge(claims, {"main": agg, "tuning": None})
    assert [x.outcome for x in v] == ["true", "false", "not measured", "not measured", "not measured", "not measured"]
    assert v[0].verdict == "yes" and v[0].measured == "0.900 [0.890, 0.910], n=3; clean_acc 0.920"
    assert v[1].verdict == "fails"
    assert v[2].verdict == "not measured" and "no otherdef on d" in v[2].measured
    assert "no __import__ in this cell" in v[3].measured  # a name only ever indexes the cell's numbers
    assert "no tuning results" in v[4].measured
    assert "compare_to: no otherdef on d" in v[5].measured


@pytest.mark.parametrize("rule, needle", [("> value * 1e300 * 1e300", "inf"),
                                         (">= value * 1e300 * 1e300 - value * 1e300 * 1e300", "nan")])
def test_a_rule_that_is_not_a_finite_comparison_is_refused_not_judged(tmp_path, rule, needle):
    agg = _agg([("mydef", "adaptive", "t", "utility_acc", 0.90, 3)])
    claims = _claims(tmp_path, f"P,overflows,,s,,d,mydef,,,utility_acc,,,{rule},yes,no")
    with pytest.raises(BenchError, match=rf"claim on line 2 .*{re.escape(rule)}.* {needle}"):
        judge(claims, {"main": agg, "tuning": None})
    with pytest.raises(BenchError, match="1e400 is not finite"):
        parse_rule(">= 1e400")


def test_an_unterminated_quote_in_the_claims_file_is_named(tmp_path):
    path = tmp_path / "claims.csv"
    path.write_text(HEADER + 'P,"a ""quoted"" claim",1 %,s,,d,vfc,,,utility_acc,,,>= 0.9,yes,no\n'
                             'P,"never closed,1 %,s,,d,vfc,,,utility_acc,,,>= 0.9,yes,no\n')
    with pytest.raises(BenchError, match=r"claims\.csv line 3: .*unterminated quote"):
        load_claims(path)


def test_every_committed_claim_is_measured_in_the_reference_results():
    """A claim whose configuration label drifted (a label format change) would silently show `not measured`."""
    from bench.report.build import _tables
    from bench.results.label_cost import label_costs
    from bench.results.records import load_runs
    from bench.results.tables import long_table

    costs = label_costs(long_table(load_runs(REFERENCE)))   # as the report reads them
    tables = {"main": labelled(_tables(REFERENCE, None)[0], costs),
              "tuning": labelled(_tables(REFERENCE / "tuning", None)[0])}
    verdicts = judge(load_claims(CLAIMS), tables)
    assert len(verdicts) >= 40
    unmeasured = [(v.claim.line, v.measured) for v in verdicts if v.outcome == "not measured"]
    assert not unmeasured


def test_a_label_cost_claim_names_the_baseline_the_headline_matches():
    """A claim against "its utility-matched baseline" must name the one the headline puts beside the
    configuration; one against "the baseline closest in utility" stands where no baseline qualifies."""
    headline = pd.read_csv(REFERENCE / "leaderboard_headline.csv")
    claims = [c for c in load_claims(CLAIMS) if c.metric == "label_cost"]
    assert claims
    for c in claims:
        rows = headline[(headline.dataset == c.dataset) & (headline.config == c.config)
                        & headline.tasks.str.startswith(f"{c.target_task} -> ")]
        assert len(rows) == 1, (c.line, c.config)
        matched = rows.baseline.iloc[0]
        assert f"`{c.compare_to}`" in c.setting, c.line
        if "its utility-matched baseline" in c.setting:
            assert matched == c.compare_to, (c.line, matched)
        else:
            assert "closest in utility" in c.setting and pd.isna(matched), (c.line, matched)


# --- the site ------------------------------------------------------------------------------------------
def _record(defense: str, attacker: str, seed: int, metrics: dict, reason: str | None = None) -> dict:
    spec = RunSpec(defense=defense, attacker=attacker, dataset="synthetic", target_task="class", attack_task="class",
                   target_arch="cnn", seed=seed, preset="smoke")
    record = {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok" if reason is None else "failed",
              "metrics": metrics if reason is None else {}, "flags": {"weak_attacker": False},
              "knowledge": "gray-box", "git_commit": "<b>not a commit</b>", "versions": {"torch": "<i>2</i>"},
              "wall_s": 1.5}
    if reason is not None:
        record["reason"] = reason
    return record


def _results_with_hostile_names(tmp_path) -> Path:
    res = tmp_path / "results"
    (res / "runs").mkdir(parents=True)
    hostile = "<script>alert(1)</script>"
    runs = [_record(d, "adaptive", s, {"utility_acc": 0.9, "clean_acc": 0.9,
                                       "leakage": 1.0 if d == "identity" else 0.5})
            for d in ("identity", hostile) for s in (0, 1)]
    runs.append(_record(hostile, "inversion", 0, {}, reason="<img src=x onerror=alert(1)>"))
    for r in runs:
        (res / "runs" / f"{r['run_id']}.json").write_text(json.dumps(r))
    return res


def test_names_from_records_are_escaped(tmp_path):
    res = _results_with_hostile_names(tmp_path)
    index = build_report(res, tmp_path / "site", CLAIMS)
    html = index.read_text()
    assert "<script" not in html and "<img src=x" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert len(list((tmp_path / "site" / "runs").glob("*.json"))) == 5
    assert not (res / "report").exists() and sorted(p.name for p in res.iterdir()) == ["runs"]  # only read


def test_the_out_dir_must_be_a_directory_outside_the_results(tmp_path):
    res = _results_with_hostile_names(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BenchError, match="--out .*file is a file, not a directory"):
        build_report(res, tmp_path / "file", CLAIMS)
    for inside in (res, res / "runs", res / "plots" / "site"):
        with pytest.raises(BenchError, match="would write into the results directory"):
            build_report(res, inside, CLAIMS)


def test_a_rebuild_removes_copies_of_runs_that_are_gone(tmp_path):
    res = _results_with_hostile_names(tmp_path)
    site = tmp_path / "site"
    build_report(res, site, CLAIMS)
    gone = sorted((res / "runs").glob("*.json"))[-1]
    gone.unlink()
    build_report(res, site, CLAIMS)
    assert not (site / "runs" / gone.name).exists() and len(list((site / "runs").glob("*.json"))) == 4


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_report_never_writes_into_or_deletes_from_another_results_dir(tmp_path, main_inprocess):
    """`--out` pointed at a second results dir by a slip, twice: every file of that dir stays as it was."""
    res = _results_with_hostile_names(tmp_path)
    other = tmp_path / "other"
    (other / "runs").mkdir(parents=True)
    # One record shares a run_id with the reported results, one does not.
    shared = sorted((res / "runs").glob("*.json"))[0]
    (other / "runs" / shared.name).write_text(shared.read_text().replace("0.9", "0.8"))
    (other / "runs" / "0123456789abcdef.json").write_text("{}")
    (other / "leaderboard.csv").write_text("run_id,metric,value\n")
    before = _snapshot(other)
    for _ in range(2):
        out = main_inprocess("report", "--results-dir", res, "--out", other, "--claims", CLAIMS)
        assert out.returncode == 2 and "not empty" in out.stderr and str(other) in out.stderr, out.stderr
        assert _snapshot(other) == before


def test_a_rebuild_keeps_files_the_report_did_not_write(tmp_path):
    res = _results_with_hostile_names(tmp_path)
    site = tmp_path / "site"
    build_report(res, site, CLAIMS)
    mine = site / "runs" / "notes.json"
    mine.write_text("my own notes")
    edited = sorted((site / "runs").glob("*.json"))[0]
    edited.write_text("edited by hand")
    (res / "runs" / edited.name).unlink()   # its run is gone: a rebuild would remove its copy...
    build_report(res, site, CLAIMS)
    assert mine.read_text() == "my own notes" and edited.read_text() == "edited by hand"  # ...but not an edit
    overwritten = sorted((res / "runs").glob("*.json"))[0]
    (site / "runs" / overwritten.name).write_text("edited too")
    with pytest.raises(BenchError, match="was not written by a report"):
        build_report(res, site, CLAIMS)
    assert (site / "runs" / overwritten.name).read_text() == "edited too"


def test_the_report_command(tmp_path, main_inprocess):
    res = _results_with_hostile_names(tmp_path)
    out = main_inprocess("report", "--results-dir", res, "--out", tmp_path / "site", "--claims", CLAIMS)
    assert out.returncode == 0 and out.stdout.strip() == f"report: {tmp_path / 'site' / 'index.html'}"
    out = main_inprocess("report", "--results-dir", tmp_path / "nothing")
    assert out.returncode == 2 and "no runs in" in out.stderr and not (tmp_path / "nothing").exists()
    out = main_inprocess("report", "--results-dir", res, "--out", tmp_path / "site", "--claims", tmp_path / "no.csv")
    assert out.returncode == 2 and "claims file" in out.stderr and "no.csv" in out.stderr


def test_the_command_in_the_provenance_table_plans_the_same_run():
    from bench.cli import build_parser
    from bench.planning import plan_specs

    args = build_parser().parse_args(["run", "--dataset", "synthetic", "--preset", "smoke", "--seeds", "3",
                                      "--defense", "fmd", "--set", "fmd.eps=0.1", "--attacker", "attribute,transfer",
                                      "--set", "transfer.archs=cnn", "--set", "synthetic.n=400", "--max-release", "50"])
    for spec in plan_specs(args):
        command = reproduce_command(spec.to_dict())
        again = plan_specs(build_parser().parse_args(shlex.split(command)[3:]))
        assert [s.run_id for s in again] == [spec.run_id], command


# --- in a real browser -------------------------------------------------------------------------------
class _Page(HTMLParser):
    """What a check needs of the rendered DOM: ids, every src/href, the text of each headline table row."""

    def __init__(self):
        super().__init__()
        self.ids, self.targets, self.headline_rows = set(), [], []
        self._section, self._row = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "section":
            self._section = attrs.get("id")
        for key in ("src", "href"):
            if attrs.get(key) is not None:
                self.targets.append(attrs[key])
        if tag == "tr" and self._section == "headline":
            self._row = []

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.headline_rows.append(" ".join("".join(self._row).split()))
            self._row = None

    def handle_data(self, data):
        if self._row is not None:
            self._row.append(data + " ")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="headless Chromium is not installed (apt-get install chromium; CI installs it)")
def test_the_committed_results_render_in_a_browser(tmp_path):
    from bench.report.browser import run_chromium

    site = tmp_path / "site"
    index = build_report(REFERENCE, site, CLAIMS)
    # Console messages: Chromium logs every one to stderr as `...:CONSOLE(line)] "message"` (at INFO level,
    # whatever the console method, in the versions tried). The page has no script, so any console message at
    # all is a fault: a Content-Security-Policy refusal (something not in the site, e.g. a network asset) or
    # a script error ("Uncaught ..."). Scanning for the marker does not depend on the message's wording.
    shot = tmp_path / "page.png"
    browser = screenshot(index, shot, 1400, 1700, flags=("--enable-logging=stderr", "--v=0"))
    console = [line for line in browser.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert _png_size(shot) == (1400, 1700)

    # The DOM as Chromium built it: the page parsed, and everything it references is in the site.
    dom = run_chromium(index, "--dump-dom").stdout
    page = _Page()
    page.feed(dom)
    headline = " | ".join(page.headline_rows)
    for dataset in ("fashion-mnist", "cifar10", "celeba"):
        assert any(row.startswith(dataset + " ") for row in page.headline_rows), headline
    assert page.targets
    for target in page.targets:
        parts = urlsplit(target)
        assert not parts.scheme and not parts.netloc, f"{target}: not a file of the site"
        if target.startswith("#"):
            assert target[1:] in page.ids, f"{target}: no such anchor"
        else:
            assert (site / unquote(parts.path)).is_file(), f"{target}: not in {site}"
    # Every plot and run record copied is shown or linked (compared with the site: a sweep may be adding runs).
    linked = {unquote(t) for t in page.targets if t.startswith(("plots/", "runs/"))}
    assert linked == {f"{d}/{p.name}" for d in ("plots", "runs") for p in (site / d).iterdir()}
    assert len(list((site / "runs").iterdir())) >= 300


def test_the_report_states_the_utility_floor_of_the_headline_it_shows(tmp_path, main_inprocess):
    res = _results_with_hostile_names(tmp_path)
    out = main_inprocess("leaderboard", "--results-dir", res, "--utility-floor", "0.9")
    assert out.returncode == 0, out.stderr
    html = build_report(res, tmp_path / "site", CLAIMS).read_text()
    assert "utility is at least 0.9 × their designated" in html and "at least 0.95 ×" not in html


# --- a user's own results -------------------------------------------------------------------------
def _users_dir(tmp_path, defenses):
    """A results dir holding the reference records of `defenses` on Fashion-MNIST (no release cap)."""
    from bench.results.leaderboards import write_leaderboards

    (tmp_path / "mine" / "runs").mkdir(parents=True)
    for path in (REFERENCE / "runs").glob("*.json"):
        spec = json.loads(path.read_text())["spec"]
        if spec["dataset"] == "fashion-mnist" and spec["defense"] in defenses and not spec.get("max_release"):
            (tmp_path / "mine" / "runs" / path.name).write_bytes(path.read_bytes())
    write_leaderboards(tmp_path / "mine")
    return tmp_path / "mine"


def test_a_users_report_names_the_baseline_it_borrowed_and_leaves_out_claims_it_cannot_judge(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)   # where the default claims file is found
    page = build_report(_users_dir(tmp_path, ("identity", "noise")), tmp_path / "site").read_text()
    # Its own noise configurations are baselines: none is borrowed, and the claims (about VFC, ARL, FMD) are unjudged.
    assert "from the reference results" not in page
    assert 'id="claims"' not in page and "concern configurations these results do not hold" in page


def test_a_users_report_with_only_their_defense_shows_the_reference_baseline(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    page = build_report(_users_dir(tmp_path, ("identity", "arl")), tmp_path / "site").read_text()
    assert re.search(r"jpeg\(quality=50\) \(from the reference results, 0\.993", page), page[:2000]
    assert 'id="claims"' in page   # ARL on Fashion-MNIST is a claim these results measure


def test_the_provenance_row_names_the_code_of_each_plugin():
    from bench.report.provenance import provenance_rows

    spec = RunSpec(defense="identity", attacker="adaptive", dataset="synthetic", target_task="class",
                   attack_task="class", target_arch="cnn", seed=0, preset="smoke")
    record = {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok", "metrics": {},
              "code_digests": {"defense": "1a2b3c4d" + "0" * 56, "attacker": "5e6f7a8b" + "0" * 56,
                               "dataset": None}}
    (row,) = provenance_rows([record])
    assert row["code"] == "defense 1a2b3c4d, attacker 5e6f7a8b"
    (old,) = provenance_rows([{k: v for k, v in record.items() if k != "code_digests"}])
    assert old["code"] == ""
