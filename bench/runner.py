"""RunSpecs -> jobs -> joblib. Identity calibration runs are scheduled automatically,
finished runs are skipped, and a plugin that raises yields a `failed` record while
the rest of the sweep goes on.

Stages, each a `joblib.Parallel` over independent jobs:
  1. prepare: designated model, fitted defense and released splits for each
     distinct (dataset, seed, defense config), so attack jobs only load them;
  2. identity runs (the calibration every leakage number needs);
  3. every other run, with leakage computed against its identity twin.

`Env.timeout` limits every job (a preparation or a run) with SIGALRM, which
interrupts only a process's main thread: that is where jobs run in-process and
in loky or multiprocessing workers. Anywhere else (Dask worker threads, a
platform without SIGALRM) `execute` refuses to start rather than ignore the limit.
The handler runs between Python bytecodes, so one long call into C (a single huge
tensor op) delays the timeout until it returns.

Determinism: the same spec on the same device gives the same numbers whatever the
backend (in-process, loky, Dask), as long as each process uses the same number of
torch threads and runs one job at a time (Dask workers with one thread each: jobs
sharing a process share torch's global RNG). A job takes its share of the cores
among the jobs of every harness command running on the machine, and the share moves
as other commands start and end (bench.cores): OMP_NUM_THREADS (Dask's nanny sets it
to 1) or BENCH_THREAD_POLICY=static (cores / jobs) pins the count. Timings (`fit_s`,
`attack_fit_s`, `release_ms_per_image`) never repeat. On CUDA, cuDNN's choice of kernels
(autotuned when cudnn.benchmark is on) and atomic adds in backward passes are not
deterministic either (the harness does not set torch.use_deterministic_algorithms): GPU
runs agree only to within noise.
"""
from __future__ import annotations

import json
import re
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from joblib import delayed

from bench import code_digest, cores, precision
from bench import metrics as M
from bench import progress as stage_lines
from bench.artifacts import Artifacts
from bench.errors import BenchError, NotApplicable, one_line
from bench.jobs import TimedOut, check_timeout_supported, run_parallel, time_limit
from bench.params import config_label
from bench.pipeline import (RELEASED_SPLITS, Stage, data_digest, data_name, dataset_digest, forget_loaded_data,
                            released_splits, run_attack, save_samples)
from bench.registry import ATTACKERS, DEFENSES, hparams_of
from bench.results.records import check_one_data_version, check_planned, load_runs, read_run, run_path, write_run
from bench.runspec import RunSpec
from bench.software import cpu, git_commit, versions
from bench.storage import StorageError, atomic_write_bytes, digest_json
from bench.training import resolve_device

FINISHED = ("ok", "not_applicable")


@dataclass(frozen=True)
class Env:
    """Where and how jobs run; not part of any run's identity."""

    results_dir: Path
    data_dir: str | None = None
    device: str = "auto"
    jobs: int = 1
    timeout: float | None = None   # seconds each job may take; None: no limit
    precision: str = "auto"        # bench.precision: auto | fp32 | bf16
    # A results dir whose finished identity runs are taken instead of recomputed (matched by run_id, i.e.
    # by spec, and by data digest); None: compute every identity run here.
    reference: Path | None = None
    # Records made by other code of their plugins count as done (`code_digest.changed`); default: they rerun.
    keep_stale_code: bool = False


@dataclass
class Summary:
    ok: int = 0
    skipped: int = 0
    taken: int = 0         # identity runs copied from the reference results dir
    not_applicable: int = 0
    failed: list = field(default_factory=list)   # (label, one-line reason)

    def add(self, status: str, label: str, reason: str | None) -> None:
        if status == "ok":
            self.ok += 1
        elif status == "skipped":
            self.skipped += 1
        elif status == "taken":
            self.taken += 1
        elif status == "not_applicable":
            self.not_applicable += 1
        else:
            self.failed.append((label, reason))

    def text(self) -> str:
        taken = f"{self.taken} identity run(s) taken from the reference results, " if self.taken else ""
        lines = [f"{self.ok} ok, {self.skipped} already done, {taken}{self.not_applicable} not applicable, "
                 f"{len(self.failed)} failed"]
        lines += [f"  FAILED {label}: {reason}" for label, reason in self.failed]
        return "\n".join(lines)


@dataclass(frozen=True)
class RunFinished:
    """What `execute` tells its `progress` callback each time one of the sweep's runs ends."""

    status: str
    label: str
    reason: str | None
    wall_s: float          # the run's wall time in its worker
    done: int              # runs of this sweep ended so far, this one included
    total: int             # runs this sweep executes (those recorded before it started are not among them)
    eta_s: float | None    # estimated seconds until the last run ends; None while no run has run


@dataclass
class SweepClock:
    """Counts a sweep's runs as they end and estimates how long the rest will take."""

    total: int
    jobs: int
    done: int = 0
    walls: list = field(default_factory=list)   # wall times of the runs that ran

    def ended(self, status: str, label: str, reason: str | None, wall_s: float) -> RunFinished:
        self.done += 1
        if status != "skipped":  # found finished by another sweep: its instant end says nothing of the rest
            self.walls.append(wall_s)
        return RunFinished(status, label, reason, wall_s, self.done, self.total, self.eta_s())

    def eta_s(self) -> float | None:
        left = self.total - self.done
        if left == 0:
            return 0.0
        if not self.walls:
            return None
        # `jobs` runs at a time, never more than are left: the last one alone takes a whole run's time.
        return sum(self.walls) / len(self.walls) * left / min(self.jobs, left)


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


def execute(specs: list[RunSpec], env: Env, progress: Callable[[RunFinished], None] | None = None) -> Summary:
    """Run `specs` (and the identity runs they need); `progress` is called as each run ends."""
    if env.timeout is not None:
        check_timeout_supported(env.jobs)
    # Jobs may run on other machines (a Dask cluster sharing the filesystem), where a relative path is theirs.
    env = replace(env, results_dir=Path(env.results_dir).resolve())
    # Every existing record is read before any work: a corrupt one stops the sweep now, not hours
    # later when the leaderboard is regenerated.
    runs = load_runs(env.results_dir)
    identity, others = plan(specs)
    # A planned run that would count as a second record of one configuration and seed stops here too.
    check_planned(runs, identity + others, env.results_dir)
    # The data as it is now: a record or artifact computed on other content is never reused.
    forget_loaded_data()
    digests = {s.run_id: data_digest(s, env.data_dir) for s in identity + others}
    # The code as it is now: a record or artifact made by other code of its plugins is not reused.
    code_digest.forget()
    legacy = code_digest.legacy_digests(env.results_dir)
    names = {s.run_id: data_name(s, env.data_dir) for s in identity + others}
    named = {i: {"data_name": n} if n is not None else {} for i, n in names.items()}
    recorded = {r["run_id"]: r for r in runs}
    summary = Summary()
    todo, stale, taken = [], [], []
    old_code: dict[tuple[str, str], int] = {}   # (kind, name) -> finished records made by other code of it
    for s in identity + others:
        record = recorded.get(s.run_id)
        done = _finished(record, digests[s.run_id])
        code = code_digest.changed(record, code_digest.run_digests(s), legacy) if done else []
        for plugin in code:
            old_code[plugin] = old_code.get(plugin, 0) + 1
        if done and (not code or env.keep_stale_code):
            summary.add("skipped", s.label(), None)
        elif s.defense == "identity" and (found := reference_record(s, env, digests[s.run_id])) is not None:
            taken.append({**found, **named[s.run_id]})   # the same content, labelled by the directory read now
        else:
            todo.append(s)
            if record is not None and record["status"] in FINISHED:
                check_same_directory(record, names[s.run_id], env)
            if record is not None and record["status"] in FINISHED and not done:
                stale.append((s, record.get("data_digest")))
    # The dataset as it is now, beside the records that stay: one version per results dir and dataset.
    versions = {s.run_id: dataset_digest(s, env.data_dir) for s in todo}
    final = {r["run_id"]: r for r in runs}
    final.update({r["run_id"]: r for r in taken})
    final.update({s.run_id: {"run_id": s.run_id, "spec": s.to_dict(), "status": "ok",
                             "dataset_digest": versions[s.run_id], **named[s.run_id]} for s in todo})
    labels = {r["run_id"]: str(run_path(env.results_dir, r["run_id"])) for r in runs}
    labels.update({r["run_id"]: f"{r['taken_from']['results_dir']}/runs/{r['run_id']}.json" for r in taken})
    labels.update({s.run_id: f"the planned run {s.label()}" for s in todo})
    check_one_data_version(list(final.values()), [labels[i] for i in final],
                           remedy="run the recorded ones again with these (they are redone on the data as it is "
                                  "now), or use another --results-dir")
    for (kind, name), n in sorted(old_code.items()):
        what = ("kept as done (--keep-stale-code)" if env.keep_stale_code
                else "they run again (--keep-stale-code keeps them)")
        print(f"note: {kind} {name}: code changed since {n} record(s) in {env.results_dir} were made; {what}",
              file=sys.stderr, flush=True)
    for record in taken:   # only now: a refused command leaves the results dir as it was
        take_reference(record, env)
        summary.add("taken", RunSpec.from_dict(record["spec"]).label(), None)
    if stale:
        spec, old = stale[0]
        print(f"note: {len(stale)} finished run(s) in {env.results_dir} were computed on other data than "
              f"{spec.dataset} holds now (e.g. {spec.label()}: recorded data digest "
              f"{(old or 'none')[:12]}, now {digests[spec.run_id][:12]}); they run again", file=sys.stderr, flush=True)
    if not todo:
        return summary
    stages, splits = {}, {}
    for s in todo:
        key = digest_json(s.defense_key())
        stages.setdefault(key, s)
        splits.setdefault(key, set()).update(released_splits(s.attacker))
    prepared = [delayed(_prepare)(s, env, tuple(x for x in RELEASED_SPLITS if x in splits[k]), digests[s.run_id])
                for k, s in stages.items()]
    errors = dict(zip(stages, list(run_parallel(env.jobs, prepared))))
    clock = SweepClock(total=len(todo), jobs=env.jobs)
    for group in ([s for s in todo if s.defense == "identity"], [s for s in todo if s.defense != "identity"]):
        jobs = [delayed(_run_timed)(s, env, errors[digest_json(s.defense_key())], digests[s.run_id])
                for s in group]
        for status, label, reason, wall_s in run_parallel(env.jobs, jobs, ordered=False):
            summary.add(status, label, reason)
            run = clock.ended(status, label, reason, wall_s)
            if progress:
                progress(run)
    return summary


def reference_record(spec: RunSpec, env: Env, digest: str) -> dict | None:
    """`spec`'s finished record in the reference results dir, computed on this data, marked `taken_from`;
    None when there is none.

    An identity run is the attacker on raw images: its numbers depend on the spec (data, seed,
    budget, attacker settings, preset) and the data, never on the defense it calibrates, so one
    computed for the reference results is as good as a new one. Precision is a property of a run,
    not part of its identity (docs/design.md), so a record taken at one precision calibrates runs
    at another.
    """
    reference = env.reference
    if reference is None or Path(reference).resolve() == env.results_dir:
        return None
    record = read_run(Path(reference), spec.run_id)
    if not _finished(record, digest):
        return None
    legacy, now = code_digest.legacy_digests(Path(reference)), code_digest.run_digests(spec)
    if code_digest.changed(record, now, legacy):
        return None
    taken = {**record, "taken_from": {"results_dir": str(Path(reference).resolve()), "run_id": spec.run_id}}
    # What the reference says made it (its file vouches for the code it names): in this results dir,
    # which has no such file, the copy is judged by these.
    own = record.get("code_digests") or {}
    vouched = {kind: legacy.get(kind, {}).get(spec.to_dict()[kind]) for kind in code_digest.KINDS}
    taken["code_digests"] = {**own, **{kind: now[kind] if vouched[kind] is not None and vouched[kind] == now[kind]
                                       else own.get(kind, vouched[kind]) for kind in code_digest.KINDS}}
    return taken


def check_same_directory(record: dict, name: str | None, env: Env) -> None:
    """Refuse to redo a recorded run on data from another directory: a run_id does not name the directory,
    so the new record would replace the other folder's in place of standing beside it."""
    if record.get("data_name") is not None and name is not None and record["data_name"] != name:
        spec = RunSpec.from_dict(record["spec"])
        raise BenchError(f"{run_path(env.results_dir, record['run_id'])} holds {spec.label()} computed on "
                         f"directory '{record['data_name']}'; this command would redo it on '{name}' ({env.data_dir}) and "
                         "replace it: one results dir keeps one directory's run of each spec; use another "
                         "--results-dir (or move that record out of runs/ to redo it)")


def take_reference(record: dict, env: Env) -> None:
    """Write a `reference_record` into this results dir, with its inversion samples."""
    samples = Path(record["taken_from"]["results_dir"]) / "samples" / f"{record['run_id']}.npz"
    if samples.is_file():
        atomic_write_bytes(env.results_dir / "samples" / samples.name, samples.read_bytes())
    write_run(env.results_dir, record)


def _worker_setup(env: Env) -> tuple[torch.device, Artifacts]:
    # Share the cores between the jobs of every harness command on this machine instead of letting
    # each take all of them (bench.cores; the training loop rebalances as commands start and end):
    # threads that outnumber the cores wait on each other and run many times slower. An explicit
    # OMP_NUM_THREADS is the user's choice and wins.
    cores.setup(env.jobs)
    precision.request(env.precision)
    return worker_device(env.device), Artifacts()


def worker_device(requested: str) -> torch.device:
    """This worker's device: on a machine with several GPUs, each Dask worker takes its own.

    A Dask worker whose name ends in an integer (LocalCluster names them 0, 1, ...;
    `dask worker --name gpu-3`) gets GPU `n % device_count`. A worker that sees one
    GPU (CUDA_VISIBLE_DEVICES, as dask-cuda sets it per worker), loky workers and the
    main process keep what `resolve_device` gives (the default GPU).
    """
    device = resolve_device(requested)
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        return device
    slot = _dask_worker_slot()
    return device if slot is None else torch.device("cuda", slot % torch.cuda.device_count())


def _dask_worker_slot() -> int | None:
    try:
        from distributed import get_worker
        name = str(get_worker().name)
    except (ImportError, ValueError):  # Dask not installed, or this is not a Dask worker
        return None
    digits = re.search(r"(\d+)$", name)
    return int(digits.group(1)) if digits else None


def _prepare(spec: RunSpec, env: Env, splits: tuple[str, ...] = RELEASED_SPLITS,
             digest: str | None = None) -> tuple[str, str] | None:
    """Build the designated model, fitted defense and the released `splits` that runs share.

    Returns None, or (reason, traceback) when a step failed: every run that
    needed it is then recorded as failed with that reason, not retried per run.
    """
    with cores.busy():
        return _prepare_here(spec, env, splits, digest)


def _prepare_here(spec: RunSpec, env: Env, splits: tuple[str, ...], digest: str | None) -> tuple[str, str] | None:
    # A worker lives across sweeps (loky reuses its processes): code edited since its last job is read anew.
    code_digest.forget()
    device, artifacts = _worker_setup(env)
    try:
        with time_limit(env.timeout), stage_lines.job(_preparation_label(spec)):
            stage = Stage.open(spec, env.data_dir, device, artifacts, digest)
            defense, _ = stage.defense()
            for split in splits:
                stage.released(defense, split)
    except TimedOut as e:
        return str(e), traceback.format_exc()
    except StorageError:  # a full disk is the machine's fault, not the defense's: stop the sweep
        raise
    except Exception as e:
        return one_line(e), traceback.format_exc()
    return None


def _preparation_label(spec: RunSpec) -> str:
    """What a preparation serves: every run of this defense configuration, dataset and seed."""
    defense = config_label(spec.defense, json.dumps(spec.defense_params, sort_keys=True))
    cap = f" (release cap {spec.max_release})" if spec.max_release is not None else ""
    return f"{defense} on {spec.dataset}[{spec.target_task}] seed {spec.seed}{cap}"


def _finished(record: dict | None, digest: str) -> bool:
    """A record of this run exists, was computed on this data, and needs no rerun (a failed one is retried).

    A record with no data digest (written before digests existed) counts as computed on other data.
    """
    return record is not None and record["status"] in FINISHED and record.get("data_digest") == digest


def _run_timed(spec: RunSpec, env: Env, prep_error: tuple[str, str] | None,
               digest: str) -> tuple[str, str, str | None, float]:
    """`_run_one` with its stages reported under the run's label, and its wall time (for the sweep's ETA)."""
    start = time.perf_counter()
    with cores.busy(), stage_lines.job(spec.label()):
        status, label, reason = _run_one(spec, env, prep_error, digest)
    return status, label, reason, time.perf_counter() - start


def recorded_defaults(spec: RunSpec) -> dict:
    """The defense's and attacker's defaults as they are now: a table labels the configuration against
    these (`bench.params.label_book`), so a default changed later never relabels this run."""
    return {kind: json.loads(json.dumps(registry.hparams(name), default=str))
            for kind, registry, name in (("defense", DEFENSES, spec.defense), ("attacker", ATTACKERS, spec.attacker))}


def _run_one(spec: RunSpec, env: Env, prep_error: tuple[str, str] | None = None,
             digest: str | None = None) -> tuple[str, str, str | None]:
    """Run `spec` on the data whose content digest is `digest` (None: whatever the data is now)."""
    if digest is None:
        digest = data_digest(spec, env.data_dir)
    code_digest.forget()   # as in `_prepare_here`
    code = code_digest.run_digests(spec)
    # Another sweep sharing this results dir may have finished the run since this one was planned.
    earlier = read_run(env.results_dir, spec.run_id)
    if _finished(earlier, digest) and not code_digest.changed(earlier, code,
                                                              code_digest.legacy_digests(env.results_dir)):
        return "skipped", spec.label(), None
    device, artifacts = _worker_setup(env)
    record = {"run_id": spec.run_id, "spec": spec.to_dict(), "data_digest": digest, "code_digests": code,
              "defaults": recorded_defaults(spec), "dataset_digest": None, "device": str(device),
              "precision": precision.active(device),
              "versions": versions(), "git_commit": git_commit(), "cpu": cpu(), "preset": spec.preset}
    start = time.perf_counter()
    reason = None
    try:
        if prep_error is not None:
            raise PreparationFailed(*prep_error)
        record["dataset_digest"] = dataset_digest(spec, env.data_dir)
        if (name := data_name(spec, env.data_dir)) is not None:
            record["data_name"] = name
        ident = None
        if spec.defense != "identity":
            # Checked before the attack: without its calibration twin a defended run has no leakage.
            ident = read_run(env.results_dir, identity_twin(spec).run_id)
            if ident is None or ident["status"] != "ok":
                raise RuntimeError("its identity calibration run did not finish ok")
            if ident.get("data_digest") != digest:
                raise RuntimeError("its identity calibration run was computed on other data")
        with time_limit(env.timeout):
            metrics, extras = run_attack(spec, data_dir=env.data_dir, device=device, artifacts=artifacts,
                                         expected_digest=digest)
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
        # A ratio with a zero denominator (an attacker at chance even with no defense) has no value:
        # it is flagged by name, never filled in.
        if "derivability" in metrics:
            flags["derivable"] = metrics["derivability"] >= M.DERIVABLE_AT
        undefined = sorted(k for k, v in metrics.items() if v is None)
        if undefined:
            flags["undefined"] = undefined
        metrics = M.finite(metrics)  # before anything is written: a NaN makes the run failed, with no samples
        samples = extras.pop("samples", None)
        if samples is not None:
            save_samples(env.results_dir / "samples" / f"{spec.run_id}.npz", samples)
        record.update(status="ok", metrics=metrics, flags=flags, knowledge=attacker_cls.knowledge, **extras)
    except NotApplicable as e:
        reason = str(e)
        record.update(status="not_applicable", reason=reason, metrics={})
    except PreparationFailed as e:
        reason = f"defense preparation failed: {e.reason}"
        record.update(status="failed", reason=reason, traceback=e.traceback, metrics={})
    except TimedOut as e:
        reason = str(e)
        record.update(status="failed", reason=reason, traceback=traceback.format_exc(), metrics={})
    except StorageError:
        raise
    except Exception as e:
        reason = one_line(e)
        record.update(status="failed", reason=reason, traceback=traceback.format_exc(), metrics={})
    record.update(wall_s=time.perf_counter() - start, timestamp=datetime.now(timezone.utc).isoformat())
    write_run(env.results_dir, record)
    return record["status"], spec.label(), reason


class PreparationFailed(Exception):
    def __init__(self, reason: str, tb: str):
        super().__init__(reason)
        self.reason, self.traceback = reason, tb
