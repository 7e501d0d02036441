"""Fashion-MNIST loader on IDX files the test writes (Debian layout and torchvision's), and one slow real-data run."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data.fashion_mnist import CLASS_TO_GROUP, FashionMNIST, read_idx
from bench.errors import BenchError


def _write_idx(path: Path, array: np.ndarray, gz: bool = True):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _fake_fmnist(directory: Path, n_train=30, n_test=10, gz=True):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(directory / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)


def test_loads_idx_files_from_data_dir(tmp_path):
    _fake_fmnist(tmp_path / "fm")
    ds = FashionMNIST(download=False).load(tmp_path / "fm")
    assert ds.images.shape == (40, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert len(ds.train_idx) == 30 and len(ds.test_idx) == 10
    assert ds.labels["class"][:10].tolist() == list(range(10))
    assert ds.labels["group"][:10].tolist() == CLASS_TO_GROUP
    assert ds.num_classes("class") == 10 and ds.num_classes("group") == 3


def test_torchvision_layout_and_cache(tmp_path, monkeypatch, isolated_cache):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    _fake_fmnist(raw, gz=False)
    ds = FashionMNIST(download=False).load(tmp_path / "data")
    assert len(ds.images) == 40
    assert list((isolated_cache / "data").glob("fashion-mnist-*.pt"))
    # Second load comes from the cache: decoding is not called again.
    monkeypatch.setattr("bench.data.fashion_mnist.read_idx", lambda p: pytest.fail("decoded twice"))
    assert torch.equal(FashionMNIST(download=False).load(tmp_path / "data").images, ds.images)


def test_download_path_uses_torchvision_and_reads_its_files(tmp_path, monkeypatch):
    """The online path, exercised offline: torchvision's class is given files already in place."""
    import torchvision.datasets

    calls = []

    class FakeTV:
        def __init__(self, root, train, download):
            calls.append((root, download))
            _fake_fmnist(Path(root) / "FashionMNIST" / "raw")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeTV)
    monkeypatch.setattr("bench.data.fashion_mnist.DEBIAN_DIR", tmp_path / "no-debian")
    (tmp_path / "dl").mkdir()
    ds = FashionMNIST(download=True).load(tmp_path / "dl")
    assert calls == [(str(tmp_path / "dl"), True)] and len(ds.images) == 40


def test_missing_files_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.setattr("bench.data.fashion_mnist.DEBIAN_DIR", tmp_path / "no-debian")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="empty") as e:
        FashionMNIST(download=False).load(tmp_path / "empty")
    assert "no-debian" in str(e.value)


def test_truncated_idx_is_named(tmp_path):
    _write_idx(tmp_path / "x-idx3-ubyte", np.zeros((5, 28, 28)), gz=False)
    data = (tmp_path / "x-idx3-ubyte").read_bytes()
    (tmp_path / "x-idx3-ubyte").write_bytes(data[:-50])
    with pytest.raises(BenchError, match="truncated"):
        read_idx(tmp_path / "x-idx3-ubyte")


@pytest.mark.slow
def test_real_fashion_mnist_smoke_run(cli, tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    out = cli("run", "--preset", "smoke", "--attacker", "adaptive", "--results-dir", tmp_path / "r", "--no-plots")
    assert out.returncode == 0, out.stderr
    assert "1 ok" in out.stdout
