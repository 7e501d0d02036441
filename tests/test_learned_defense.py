"""A defense that trains a network, written from docs/plugins.md: the guide's example runs as an outside
plugin, and one that creates its network in `_fit` is told what to do, naming itself."""
import json
import re

import pytest
import torch
from torch import nn

from bench.errors import ContractError
from bench.protocol import DataSpec, Defense, FitData
from bench.training import TrainConfig
from conftest import REPO
from test_plugin_distribution import _distribution


def example(page: str, module: str) -> str:
    """The Python block of `page` (relative to the repository) that starts `# <module>.py`."""
    text = (REPO / page).read_text()
    found = re.search(rf"```python\n(# {module}\.py\n.*?)```", text, re.S)
    assert found, f"{page} has no `# {module}.py` example"
    return found.group(1)


def test_the_guides_learned_defense_fits_restores_and_runs(cli, tmp_path):
    site, results = tmp_path / "site", tmp_path / "results"
    env = _distribution(site, "mybottleneck", "[bench.defenses]\nbottleneck = mybottleneck:Bottleneck\n")
    (site / "mybottleneck.py").write_text(example("docs/plugins.md", "mybottleneck"))
    # Two attackers: the second run restores the fit the first one's preparation cached.
    run = cli("run", "--defense", "bottleneck", "--attacker", "adaptive,inversion", "--dataset", "synthetic",
              "--preset", "smoke", "--no-reference", "--no-plots", "--results-dir", results, env_extra=env)
    assert run.returncode == 0, run.stdout + run.stderr
    records = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    assert {r["spec"]["defense"] for r in records if r["status"] == "ok"} == {"bottleneck", "identity"}
    assert all(r["status"] == "ok" for r in records), [r.get("reason") for r in records]

    bad = cli("run", "--defense", "bottleneck", "--attacker", "adaptive", "--dataset", "synthetic", "--preset",
              "smoke", "--set", "bottleneck.factor=0", "--results-dir", results, env_extra=env)
    assert bad.returncode == 2 and "--set bottleneck.factor=0: must be >= 1" in bad.stderr, bad.stderr


class NetInFit(Defense):
    """What the guide's comment once suggested: the network created where it is learnt."""

    name = "netinfit"
    description = "creates its network in _fit"
    releases = "image"

    def _fit(self, data, *, seed):
        self.net_ = nn.Conv2d(data.spec.image_shape[0], data.spec.image_shape[0], 1).to(self.device_)

    def _release(self, xb):
        return self.net_(xb).clamp(0, 1)


class NetInBuild(NetInFit):
    name = "netinbuild"

    def _build(self, spec):
        self.net_ = nn.Conv2d(spec.image_shape[0], spec.image_shape[0], 1).to(self.device_)

    def _fit(self, data, *, seed):
        with torch.no_grad():
            self.net_.weight.mul_(0.5)


def _fit_data() -> tuple[FitData, nn.Module]:
    spec = DataSpec((1, 8, 8), 2, "class")
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 2, (16,))
    target = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    return FitData(x, y, x, y, spec, torch.device("cpu"), TrainConfig(epochs=1)), target


def test_a_network_created_in_fit_is_refused_at_the_fit_naming_the_defense_and_the_remedy():
    data, target = _fit_data()
    with pytest.raises(ContractError) as e:
        NetInFit().fit(data, target, seed=0)
    message = str(e.value)
    assert "defense 'netinfit'" in message and "NetInFit" in message and "net_" in message
    assert "create every module" in message and "_build" in message and "OrderedDict" not in message


def test_restoring_weights_that_build_has_no_module_for_names_the_defense():
    data, target = _fit_data()
    fitted = NetInBuild().fit(data, target, seed=0)
    state = fitted.state_dict()
    restored = NetInBuild().restore(state, target, data.spec, data.device)
    assert torch.equal(restored.net_.weight, fitted.net_.weight)
    with pytest.raises(ContractError, match=r"defense 'netinfit'.*module net_ is not created by _build"):
        NetInFit().restore(state, target, data.spec, data.device)


def test_the_readmes_learned_defense_runs_against_every_attacker_as_an_outside_package(cli, tmp_path):
    site, results = tmp_path / "site", tmp_path / "results"
    env = _distribution(site, "mylearned", "[bench.defenses]\nlearned = mylearned:Learned\n")
    (site / "mylearned.py").write_text(example("README.md", "mylearned"))
    run = cli("run", "--defense", "learned", "--attacker", "all", "--dataset", "synthetic", "--preset", "smoke",
              "--no-reference", "--no-plots", "--results-dir", results, env_extra=env)
    assert run.returncode == 0, run.stdout + run.stderr
    records = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    learned = {r["spec"]["attacker"]: r["status"] for r in records if r["spec"]["defense"] == "learned"}
    assert set(learned) == {"transfer", "finetune", "adaptive", "attribute", "inversion"}, learned
    assert set(learned.values()) == {"ok"}, [r.get("reason") for r in records]
    bad = cli("run", "--defense", "learned", "--dataset", "synthetic", "--preset", "smoke", "--set",
              "learned.lr=0", "--results-dir", results, env_extra=env)
    assert bad.returncode == 2 and "learned.lr=0.0: must be > 0" in bad.stderr, bad.stderr
