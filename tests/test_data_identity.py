"""Data identity: artifacts and finished runs depend on the content of the data they were
computed from, not only on its name; the committed reference records keep resuming as done."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from bench.data.base import ImageDataset
from bench.data.digest import content_digest
from conftest import REPO

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def _dataset(images, labels):
    return ImageDataset("t", images, {"class": labels}, {"class": ["a", "b"]}, torch.arange(6), torch.arange(6, 8))


def test_the_digest_covers_every_pixel_label_and_class_name():
    images = torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 4)
    idx = torch.arange(8)
    base = content_digest(_dataset(images, labels), idx)
    assert content_digest(_dataset(images.clone(), labels.clone()), idx) == base
    pixel = images.clone()
    pixel[3, 0, 2, 2] ^= 1
    label = labels.clone()
    label[5] = 1 - label[5]
    renamed = _dataset(images, labels)
    renamed.classes["class"] = ["a", "c"]
    others = [content_digest(_dataset(pixel, labels), idx), content_digest(_dataset(images, label), idx),
              content_digest(renamed, idx), content_digest(_dataset(images, labels), idx[:-1])]
    assert base not in others and len(set(others)) == len(others)
    # Only the rows a run uses count: an edit elsewhere leaves its digest alone.
    assert content_digest(_dataset(pixel, labels), torch.tensor([0, 1, 2])) == \
        content_digest(_dataset(images, labels), torch.tensor([0, 1, 2]))


def _folder(root: Path) -> None:
    root.mkdir()
    rows = ["file,label"]
    for i in range(60):
        label = "light" if i % 2 else "dark"
        Image.new("L", (8, 8), 40 + 160 * (i % 2) + i % 7).save(root / f"{i}.png")
        rows.append(f"{i}.png,{label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def _targets(cache: Path) -> set[str]:
    return {p.name for p in (cache / "artifacts" / "model").glob("*.json") if json.loads(p.read_text())["role"] == "target"}


def test_an_edited_label_retrains_the_designated_model_and_redoes_the_run(main_inprocess, tmp_path, isolated_cache):
    data, res = tmp_path / "data", tmp_path / "results"
    _folder(data)
    args = ["run", "--dataset", "folder", "--data-dir", data, "--preset", "smoke", "--attacker", "adaptive",
            "--no-plots", "--results-dir", res]
    first = main_inprocess(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    (path,) = (res / "runs").glob("*.json")
    before, targets = json.loads(path.read_text()), _targets(isolated_cache)
    assert len(targets) == 1

    again = main_inprocess(*args)
    assert "0 ok, 1 already done" in again.stdout  # same data: nothing to do

    lines = (data / "labels.csv").read_text().splitlines()
    lines[5] = lines[5].replace("dark", "light")  # one corrected label, same rows, same files
    (data / "labels.csv").write_text("\n".join(lines) + "\n")
    second = main_inprocess(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 ok, 0 already done" in second.stdout
    assert "computed on other data" in second.stderr
    after = json.loads(path.read_text())
    assert after["run_id"] == before["run_id"] and after["data_digest"] != before["data_digest"]
    assert len(_targets(isolated_cache)) == 2  # the designated model was trained again, on the new labels


@pytest.mark.skipif(not FMNIST.exists(), reason="needs Debian's dataset-fashion-mnist")
def test_committed_reference_results_resume_as_done(main_inprocess, tmp_path):
    res = tmp_path / "results"
    (res / "runs").mkdir(parents=True)
    for p in (REPO / "results" / "reference" / "runs").glob("*.json"):
        if json.loads(p.read_text())["spec"]["dataset"] == "fashion-mnist":
            shutil.copy(p, res / "runs")
    before = {p.name: p.read_bytes() for p in (res / "runs").glob("*.json")}
    # The README's command for VFC on Fashion-MNIST: every run and its identity twin are on record.
    out = main_inprocess("run", "--defense", "vfc", "--attacker", "all", "--seeds", "0-2", "--no-plots",
                         "--results-dir", res)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 ok, 30 already done" in out.stdout, out.stdout
    assert "other data" not in out.stderr
    assert {p.name: p.read_bytes() for p in (res / "runs").glob("*.json")} == before


def test_seeds_on_two_versions_of_a_dataset_never_share_a_cell(main_inprocess, tmp_path):
    """Seed 0, then an edited labels.csv, then seed 1 into the same results dir: refused before any work,
    naming both; rerunning seed 0 with it brings the whole cell onto the new data."""
    data, res = tmp_path / "data", tmp_path / "results"
    _folder(data)
    args = ["run", "--dataset", "folder", "--data-dir", data, "--preset", "smoke", "--attacker", "adaptive",
            "--no-plots", "--results-dir", res]
    assert main_inprocess(*args, "--seeds", "0").returncode == 0
    (seed0,) = (res / "runs").glob("*.json")
    before = seed0.read_bytes()
    lines = (data / "labels.csv").read_text().splitlines()
    lines[5] = lines[5].replace("dark", "light")
    (data / "labels.csv").write_text("\n".join(lines) + "\n")
    mixed = main_inprocess(*args, "--seeds", "1")
    assert mixed.returncode == 2, mixed.stdout + mixed.stderr
    assert "two versions of dataset folder" in mixed.stderr and str(seed0) in mixed.stderr
    assert "the planned run" in mixed.stderr and len(mixed.stderr.strip().splitlines()) == 1
    assert [p.name for p in (res / "runs").glob("*.json")] == [seed0.name] and seed0.read_bytes() == before
    both = main_inprocess(*args, "--seeds", "0-1")
    assert both.returncode == 0, both.stdout + both.stderr
    versions = {json.loads(p.read_text())["dataset_digest"] for p in (res / "runs").glob("*.json")}
    assert len(versions) == 1


def test_a_leaderboard_refuses_records_of_two_data_versions(main_inprocess, tmp_path):
    data, res = tmp_path / "data", tmp_path / "results"
    _folder(data)
    args = ["run", "--dataset", "folder", "--data-dir", data, "--preset", "smoke", "--attacker", "adaptive",
            "--no-plots", "--results-dir", res, "--seeds", "0-1"]
    assert main_inprocess(*args).returncode == 0
    a, b = sorted((res / "runs").glob("*.json"))
    record = json.loads(b.read_text())
    record["dataset_digest"] = "f" * 64   # as if copied in from a run on other data
    b.write_text(json.dumps(record))
    out = main_inprocess("leaderboard", "--results-dir", res)
    assert out.returncode == 2 and "two versions of dataset folder" in out.stderr and b.name in out.stderr


def test_names_a_spreadsheet_would_evaluate_are_written_as_text(main_inprocess, tmp_path):
    data, res = tmp_path / "data", tmp_path / "results"
    _folder(data)
    text = (data / "labels.csv").read_text().replace("file,label", "file,=cmd()").replace("dark", "-dark")
    (data / "labels.csv").write_text(text)
    out = main_inprocess("run", "--dataset", "folder", "--data-dir", data, "--preset", "smoke", "--attacker",
                         "adaptive", "--no-plots", "--results-dir", res)
    assert out.returncode == 0, out.stdout + out.stderr
    long = (res / "leaderboard.csv").read_text()
    assert ",'=cmd()," in long and ",=cmd()," not in long
    from bench.results.leaderboards import read_long
    assert set(read_long(res / "leaderboard.csv").target_task) == {"=cmd()"}   # read back as it was
