"""Data identity: a finished record computed on other data (or on unknown data,
from before digests were recorded) is not done; it runs again and the sweep says so in one line.
Data that changes after a sweep was planned fails the runs that would have used it."""
import json

from bench.cli import build_parser
from bench.planning import plan_specs
from hostile import SMOKE, Case


def _spec(tmp):
    args = [a.format(res=tmp / "results") for a in SMOKE]
    return plan_specs(build_parser().parse_args(args))[0]


def _finished_record(digest):
    def setup(tmp, monkeypatch):
        spec = _spec(tmp)
        record = {"run_id": spec.run_id, "status": "ok", "spec": spec.to_dict(), "knowledge": "gray-box",
                  "metrics": {"utility_acc": 0.123, "clean_acc": 0.5, "attack_acc": 0.5, "chance": 0.25},
                  "flags": {"weak_attacker": False}}
        if digest is not None:
            record["data_digest"] = digest
        (tmp / "results" / "runs" / f"{spec.run_id}.json").write_text(json.dumps(record))
    return setup


def _rerun(tmp, out):
    assert "1 ok, 0 already done" in out.stdout, out.stdout
    assert out.stderr.count("computed on other data") == 1, out.stderr
    spec = _spec(tmp)
    record = json.loads((tmp / "results" / "runs" / f"{spec.run_id}.json").read_text())
    assert record["status"] == "ok" and record["metrics"]["utility_acc"] != 0.123
    assert len(record["data_digest"]) == 64


def _changing_data(tmp, monkeypatch):
    # The sweep plans with the data as it was; where the runs open it, its content is other.
    import bench.pipeline

    monkeypatch.setattr(bench.pipeline, "data_digest", lambda spec, data_dir: "1" * 64)


CASES = {
    "record computed on other data": Case(SMOKE, setup=_finished_record("f" * 64), outcome="ok", check=_rerun),
    "record without a data digest": Case(SMOKE, setup=_finished_record(None), outcome="ok", check=_rerun),
    "data changed after planning": Case(SMOKE, ("changed after this sweep was planned", "run the command again"),
                                        setup=_changing_data, outcome="failed"),
}
