"""A defense declared by another installed distribution appears in `list` and runs,
with no change to the harness (DESIGN section 5)."""
import json
import os
import textwrap

# The benchmark's stand-in for a user's defense: a box blur (class BoxBlur, registry name boxblur).
from bench.benchmarks.new_defense import PLUGIN


def _distribution(root, name, entry_points):
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}


def test_third_party_defense_is_listed_and_runs(cli, tmp_path):
    site = tmp_path / "site"
    env = _distribution(site, "mydefense", "[bench.defenses]\nboxblur = mydefense:BoxBlur\n")
    (site / "mydefense.py").write_text(PLUGIN)
    listed = cli("list", env_extra=env)
    assert listed.returncode == 0, listed.stderr
    assert "boxblur releases image: average-pool blur" in listed.stdout and "kernel=3" in listed.stdout

    res = tmp_path / "results"
    run = cli("run", "--defense", "boxblur", "--attacker", "adaptive", "--dataset", "synthetic", "--preset", "smoke",
              "--set", "boxblur.kernel=5", "--results-dir", res, "--no-plots", env_extra=env)
    assert run.returncode == 0, run.stderr
    records = {json.loads(p.read_text())["spec"]["defense"]: json.loads(p.read_text())
               for p in (res / "runs").glob("*.json")}
    assert set(records) == {"boxblur", "identity"}
    assert records["boxblur"]["status"] == "ok" and records["boxblur"]["spec"]["defense_params"] == {"kernel": 5}


def test_duplicate_name_names_both_sources(cli, tmp_path):
    site = tmp_path / "site"
    env = _distribution(site, "impostor", "[bench.defenses]\nidentity = impostor:Fake\n")
    out = cli("list", env_extra=env)
    assert out.returncode == 2
    assert "identity" in out.stderr and "impostor:Fake" in out.stderr and "defenses.identity:Identity" in out.stderr
