"""RunSpecs -> jobs -> joblib. Identity calibration runs are scheduled automatically,
finished runs are skipped, and a plugin that raises yields a `failed` record while
the rest of the sweep goes on.

Stages, each a `joblib.Parallel` over independent jobs:
  1. prepare: designated model, fitted defense and released splits for each
     distinct (dataset, seed, defense config), so attack jobs only load them;
  2. identity runs (the calibration every leakage number needs);
  3. every other run, with leakage computed against its identity twin.
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from joblib import Parallel, delayed

from bench import metrics as M
from bench.artifacts import Artifacts
from bench.errors import NotApplicable
from bench.pipeline import Stage, run_attack, save_samples
from bench.registry import ATTACKERS, DEFENSES, hparams_of
from bench.results import read_run, write_run
from bench.runspec import RunSpec
from bench.storage import digest_json
from bench.training import resolve_device

FINISHED = ("ok", "not_applicable")


@dataclass(frozen=True)
class Env:
    """Where and how jobs run; not part of any run's identity."""

    results_dir: Path
    data_dir: str | None = None
    device: str = "auto"
    jobs: int = 1


@dataclass
class Summary:
    ok: int = 0
    skipped: int = 0
    not_applicable: int = 0
    failed: list = field(default_factory=list)   # (label, one-line reason)

    def add(self, status: str, label: str, reason: str | None) -> None:
        if status == "ok":
            self.ok += 1
        elif status == "skipped":
            self.skipped += 1
        elif status == "not_applicable":
            self.not_applicable += 1
        else:
            self.failed.append((label, reason))

    def text(self) -> str:
        lines = [f"{self.ok} ok, {self.skipped} already done, {self.not_applicable} not applicable, "
                 f"{len(self.failed)} failed"]
        lines += [f"  FAILED {label}: {reason}" for label, reason in self.failed]
        return "\n".join(lines)


def identity_twin(spec: RunSpec) -> RunSpec:
    return spec.on_identity(hparams_of(DEFENSES.get("identity")))


def plan(specs: list[RunSpec]) -> tuple[list[RunSpec], list[RunSpec]]:
    """(identity runs, other runs), adding the identity twin of every defended run."""
    identity, others = {}, {}
    for s in specs:
        if s.defense == "identity":
            identity[s.run_id] = s
        else:
            others[s.run_id] = s
            twin = identity_twin(s)
            identity.setdefault(twin.run_id, twin)
    return list(identity.values()), list(others.values())


def execute(specs: list[RunSpec], env: Env, progress=None) -> Summary:
    identity, others = plan(specs)
    summary = Summary()
    todo = []
    for s in identity + others:
        if (r := read_run(env.results_dir, s.run_id)) is not None and r["status"] in FINISHED:
            summary.add("skipped", s.label(), None)
        else:
            todo.append(s)
    if not todo:
        return summary
    stages = {}
    for s in todo:
        stages.setdefault(digest_json(s.defense_key()), s)
    errors = dict(zip(stages, list(_parallel(env, [delayed(_prepare)(s, env) for s in stages.values()]))))
    for group in ([s for s in todo if s.defense == "identity"], [s for s in todo if s.defense != "identity"]):
        jobs = [delayed(_run_one)(s, env, errors[digest_json(s.defense_key())]) for s in group]
        for status, label, reason in _parallel(env, jobs, ordered=False):
            summary.add(status, label, reason)
            if progress:
                progress(status, label, reason)
    return summary


def _parallel(env: Env, tasks: list, ordered: bool = True):
    """Results of `tasks` (joblib delayed calls), yielded as they finish.

    One job runs in this process (progress bars stay visible); more go through
    joblib's configured backend (loky here, Dask inside `parallel_config("dask")`).
    """
    n_jobs = min(env.jobs, len(tasks))
    if n_jobs <= 1:
        return (fn(*args, **kwargs) for fn, args, kwargs in tasks)
    return Parallel(n_jobs=n_jobs, return_as="generator" if ordered else "generator_unordered")(tasks)


def _worker_setup(env: Env) -> tuple[torch.device, Artifacts]:
    # Share the cores between workers instead of letting each grab all of them. An explicit
    # OMP_NUM_THREADS (e.g. two sweeps side by side on one machine) is the user's choice and wins:
    # threads that outnumber the cores wait on each other and run many times slower.
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, env.jobs)))
    return resolve_device(env.device), Artifacts()


def _prepare(spec: RunSpec, env: Env) -> tuple[str, str] | None:
    """Build the designated model, fitted defense and released splits that runs share.

    Returns None, or (reason, traceback) when a step failed: every run that
    needed it is then recorded as failed with that reason, not retried per run.
    """
    device, artifacts = _worker_setup(env)
    try:
        stage = Stage.open(spec, env.data_dir, device, artifacts)
        defense, _ = stage.defense()
        for split in ("attacker", "val", "test"):
            stage.released(defense, split)
    except Exception as e:
        return _reason(e), traceback.format_exc()
    return None


def _reason(e: BaseException) -> str:
    return (f"{type(e).__name__}: {e}".splitlines() or [type(e).__name__])[0]


def _run_one(spec: RunSpec, env: Env, prep_error: tuple[str, str] | None = None) -> tuple[str, str, str | None]:
    device, artifacts = _worker_setup(env)
    record = {"run_id": spec.run_id, "spec": spec.to_dict(), "device": str(device),
              "versions": versions(), "git_commit": git_commit(), "preset": spec.preset}
    start = time.perf_counter()
    reason = None
    try:
        if prep_error is not None:
            raise PreparationFailed(*prep_error)
        ident = None
        if spec.defense != "identity":
            # Checked before the attack: without its calibration twin a defended run has no leakage.
            ident = read_run(env.results_dir, identity_twin(spec).run_id)
            if ident is None or ident["status"] != "ok":
                raise RuntimeError("its identity calibration run did not finish ok")
        metrics, extras = run_attack(spec, data_dir=env.data_dir, device=device, artifacts=artifacts)
        attacker_cls = ATTACKERS.get(spec.attacker)
        flags = {}
        if ident is not None:
            metrics.update(M.relative_metrics(metrics, ident["metrics"]))
            flags["weak_attacker"] = ident.get("flags", {}).get("weak_attacker", False)
        else:
            # Leakage of no defense against itself: 1 by definition, shown so identity ranks beside the rest.
            metrics.update(M.relative_metrics(metrics, metrics))
            if spec.attack_task == spec.target_task and attacker_cls.predicts == "labels":
                flags["weak_attacker"] = M.is_weak(metrics["attack_acc"], metrics["clean_acc"])
        if "attack_acc" in metrics:
            metrics["suppression"] = M.suppression(metrics["utility_acc"], metrics["attack_acc"])
        samples = extras.pop("samples", None)
        if samples is not None:
            save_samples(env.results_dir / "samples" / f"{spec.run_id}.npz", samples)
        record.update(status="ok", metrics=M.finite(metrics), flags=flags, knowledge=attacker_cls.knowledge, **extras)
    except NotApplicable as e:
        reason = str(e)
        record.update(status="not_applicable", reason=reason, metrics={})
    except PreparationFailed as e:
        reason = f"defense preparation failed: {e.reason}"
        record.update(status="failed", reason=reason, traceback=e.traceback, metrics={})
    except Exception as e:
        reason = _reason(e)
        record.update(status="failed", reason=reason, traceback=traceback.format_exc(), metrics={})
    record.update(wall_s=time.perf_counter() - start, timestamp=datetime.now(timezone.utc).isoformat())
    write_run(env.results_dir, record)
    return record["status"], spec.label(), reason


class PreparationFailed(Exception):
    def __init__(self, reason: str, tb: str):
        super().__init__(reason)
        self.reason, self.traceback = reason, tb


def versions() -> dict:
    import joblib
    import timm

    import bench
    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "joblib": joblib.__version__, "bench": getattr(bench, "__version__", "0")}


def git_commit() -> str | None:
    """The harness's commit, with `-dirty` when its working tree has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=here)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=here)
    except (OSError, subprocess.TimeoutExpired):  # not a git checkout (an installed wheel): nothing to record
        return None
    commit = head.stdout.strip()
    return (commit + ("-dirty" if dirty.stdout.strip() else "")) if commit else None
