"""`--backend dask`: the same sweep on a 2-worker Dask LocalCluster gives the same numbers as
in-process, every job goes to the cluster, and shared artifacts are built once.

What is deterministic: on CPU, the same spec with the same number of torch threads per
process (OMP_NUM_THREADS=1 here; Dask's nanny sets 1 for its workers anyway) and one
job at a time per process gives bit-identical metrics whichever backend runs it,
because every model, defense and attacker is seeded from the spec. What is not:
timings (`fit_s`, `attack_fit_s`, `release_ms_per_image`); a different thread count
(reductions add in another order); Dask workers with several threads (concurrent jobs
share torch's global RNG); and on CUDA, cuDNN's kernel choice (autotuned when
cudnn.benchmark is on) and atomic adds, so GPU runs agree only to within noise.
"""
import os

import pandas as pd
from distributed import Client, LocalCluster

from bench.artifacts import Artifacts

GRID = ["run", "--dataset", "synthetic", "--preset", "smoke", "--seeds", "0", "--defense", "identity,vfc",
        "--attacker", "adaptive,inversion", "--no-plots"]
TIMINGS = {"fit_s", "attack_fit_s", "release_ms_per_image"}
# The same thread count everywhere: torch's reductions depend on it.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _values(results_dir) -> pd.Series:
    long = pd.read_csv(results_dir / "leaderboard.csv")
    return long[~long.metric.isin(TIMINGS)].set_index(["run_id", "metric"])["value"].sort_index()


def test_dask_local_cluster_matches_in_process(cli, tmp_path):
    cache_dask, cache_local = tmp_path / "cache-dask", tmp_path / "cache-local"
    on_dask = cli(*GRID, "--backend", "dask", "--results-dir", tmp_path / "dask",
                  env_extra={**ONE_THREAD, "BENCH_CACHE": str(cache_dask)})
    assert on_dask.returncode == 0, on_dask.stdout + on_dask.stderr
    local = cli(*GRID, "--jobs", "1", "--results-dir", tmp_path / "local",
                env_extra={**ONE_THREAD, "BENCH_CACHE": str(cache_local)})
    assert local.returncode == 0, local.stdout + local.stderr

    a, b = _values(tmp_path / "dask"), _values(tmp_path / "local")
    assert a.index.get_level_values("run_id").nunique() == 4
    assert {"utility_acc", "attack_acc", "leakage", "psnr", "ssim"} <= set(a.index.get_level_values("metric"))
    pd.testing.assert_series_equal(a, b, check_exact=True)

    # One designated model, one fitted defense per configuration, three released splits each:
    # the two workers shared what the first of them built (workers agree on every artifact key).
    counts = {kind: len(list((cache_dask / "artifacts" / kind).glob("*.pt")))
              for kind in ("model", "defense", "release")}
    assert counts == {"model": 1, "defense": 2, "release": 6}


def _build_once(i: int, root: str, log: str) -> tuple[int, float]:
    """What every job of a sweep does: ask for a shared artifact; only the first asker builds it.

    Returns (this worker's pid, the pid of the process that built the artifact)."""
    import time

    def build():
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)  # long enough for every other task to arrive while the first one builds
        return {"value": float(os.getpid())}

    return os.getpid(), float(Artifacts(root).get("defense", {"shared": True}, build)["value"])


def _datasets_loaded() -> int:
    from bench.pipeline import load_dataset
    return load_dataset.cache_info().currsize


def test_scheduler_address_gets_every_job_and_artifacts_are_built_once(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the cluster's workers and the CLI
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        log = tmp_path / "builds.log"
        asked = client.gather(client.map(_build_once, range(4), root=str(tmp_path / "shared"), log=str(log),
                                         pure=False))
        builders = log.read_text().split()
        assert len({pid for pid, _ in asked}) == 2  # both workers asked, while the first one was building
        assert len(builders) == 1 and {built_by for _, built_by in asked} == {float(builders[0])}

        # One run: each stage has a single job, which must still go to the cluster, not run in the CLI.
        out = cli("run", "--dataset", "synthetic", "--preset", "smoke", "--attacker", "adaptive", "--no-plots",
                  "--backend", "dask", "--scheduler", cluster.scheduler_address, "--results-dir", tmp_path / "r")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "1 ok" in out.stdout
        assert sum(client.run(_datasets_loaded).values()) >= 1


def test_each_dask_worker_takes_its_own_gpu(monkeypatch):
    """Simulated 4-GPU machine: the worker named 5 gets cuda:1, `gpu-2` cuda:2; elsewhere the default GPU."""
    import distributed
    import torch

    from bench.runner import worker_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert worker_device("cuda") == torch.device("cuda")   # not inside a Dask worker
    assert worker_device("cpu") == torch.device("cpu")
    for name, expected in ((5, "cuda:1"), ("gpu-2", "cuda:2"), ("tcp://10.0.0.1:4000x", "cuda")):
        monkeypatch.setattr(distributed, "get_worker", lambda name=name: type("W", (), {"name": name})())
        assert worker_device("auto") == torch.device(expected), name
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # dask-cuda: one visible GPU per worker
    assert worker_device("cuda") == torch.device("cuda")
