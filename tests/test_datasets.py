"""CIFAR-10, CIFAR-100, CelebA and folder loaders on small data the tests generate;
the real tarballs in ../shared/data only in tests marked slow."""
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.celeba import CelebA
from bench.data.cifar10 import CIFAR10, CLASSES
from bench.data.cifar100 import CIFAR100
from bench.data.folder import Folder
from bench.errors import BenchError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RNG = np.random.default_rng(0)


def _jpeg(h=32, w=32, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _tar(path: Path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


# --- CIFAR-10 ----------------------------------------------------------------------------------
def _cifar10_pickles(root: Path, n=10):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}
        # Protocol 4 pickles arrays with numpy's _reconstruct, all the loader's unpickler admits
        # (tests/cases_untrusted.py writes them as Python 2 did, like the real files).
        (d / name).write_bytes(pickle.dumps(batch, protocol=4))


def test_cifar10_torchvision_format_and_cache(tmp_path, monkeypatch):
    _cifar10_pickles(tmp_path)
    ds = CIFAR10(download=False).load(tmp_path)
    assert ds.images.shape == (60, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert len(ds.train_idx) == 50 and len(ds.test_idx) == 10
    assert ds.labels["vehicle"][:10].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]
    monkeypatch.setattr("bench.data.cifar10.read_pickle_batches", lambda *a: pytest.fail("decoded twice"))
    assert torch.equal(CIFAR10(download=False).load(tmp_path).images, ds.images)


def test_cifar10_tarballs(tmp_path):
    for split in ("train", "test"):
        _tar(tmp_path / f"cifar10-{split}.tar.gz", {f"{split}/{c}/{i}.jpg": _jpeg() for c in CLASSES[:3] for i in range(2)})
    ds = CIFAR10(download=False).load(tmp_path)
    assert ds.images.shape == (12, 3, 32, 32) and sorted(set(ds.labels["class"].tolist())) == [0, 1, 2]


def test_cifar10_wrong_layout_and_corrupt_image(tmp_path, isolated_cache):
    _tar(tmp_path / "cifar10-train.tar.gz", {"images/a.jpg": _jpeg()})
    _tar(tmp_path / "cifar10-test.tar.gz", {"test/cat/0.jpg": _jpeg()})
    with pytest.raises(BenchError, match=r"train/<class>/<image>"):
        CIFAR10(download=False).load(tmp_path)
    _tar(tmp_path / "cifar10-train.tar.gz", {"train/cat/0.jpg": _jpeg()[:200]})
    with pytest.raises(BenchError, match=r"train/cat/0\.jpg"):
        CIFAR10(download=False).load(tmp_path)
    assert not list(isolated_cache.rglob("*.pt"))  # nothing half-cached
    _tar(tmp_path / "cifar10-train.tar.gz", {"train/cat/0.jpg": _jpeg()})
    assert len(CIFAR10(download=False).load(tmp_path).images) == 2


def test_cifar10_download_path_reads_what_torchvision_wrote(tmp_path, monkeypatch):
    """The online path, exercised offline: torchvision's class is replaced by one that writes local files."""
    import torchvision.datasets

    calls = []

    class FakeTV:
        def __init__(self, root, train, download):
            calls.append(download)
            _cifar10_pickles(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeTV)
    (tmp_path / "dl").mkdir()
    assert len(CIFAR10(download=True).load(tmp_path / "dl").images) == 60 and calls == [True]


def test_offline_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(BenchError, match="cifar-100-python.*unreachable"):
        CIFAR100(download=True).load(tmp_path)


def test_cifar10_missing_says_where_it_looked(tmp_path):
    with pytest.raises(BenchError, match="cifar-10-batches-py") as e:
        CIFAR10(download=False).load(tmp_path)
    assert "cifar10-train.tar.gz" in str(e.value)


# --- CIFAR-100 ---------------------------------------------------------------------------------
def test_cifar100_torchvision_format(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for name, n in (("train", 20), ("test", 5)):
        batch = {b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"fine_labels": [i % 100 for i in range(n)], b"coarse_labels": [i % 20 for i in range(n)]}
        (d / name).write_bytes(pickle.dumps(batch, protocol=4))
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}
    (d / "meta").write_bytes(pickle.dumps(meta, protocol=4))
    ds = CIFAR100(download=False).load(tmp_path)
    assert ds.images.shape == (25, 3, 32, 32) and len(ds.train_idx) == 20
    assert ds.num_classes("fine") == 100 and ds.num_classes("coarse") == 20
    assert ds.default_task == "fine" and ds.private_task == "coarse"


def test_cifar100_missing(tmp_path):
    with pytest.raises(BenchError, match="cifar-100-python"):
        CIFAR100(download=False).load(tmp_path)


# --- CelebA ------------------------------------------------------------------------------------
def _celeba(root: Path, n=6, as_tar=True, drop_image=None):
    names = ["5_o_Clock_Shadow", "Male", "Smiling"]
    files = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    attr = f"{n}\n" + " ".join(names) + "\n" + "".join(
        f"{f} {' '.join(str(1 if (i + j) % 2 else -1) for j in range(3))}\n" for i, f in enumerate(files))
    part = "".join(f"{f} {i % 3}\n" for i, f in enumerate(files))
    ident = "".join(f"{f} {100 + i % 2}\n" for i, f in enumerate(files))
    members = {"celeba/list_attr_celeba.txt": attr.encode(), "celeba/list_eval_partition.txt": part.encode(),
               "celeba/identity_CelebA.txt": ident.encode()}
    members.update({f"celeba/img_align_celeba/{f}": _jpeg(109, 89) for f in files if f != drop_image})
    if as_tar:
        _tar(root / "celeba.tar.gz", members)
    else:
        for name, data in members.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)


@pytest.mark.parametrize("as_tar", [True, False], ids=["tarball", "directory"])
def test_celeba(tmp_path, as_tar):
    _celeba(tmp_path, as_tar=as_tar)
    ds = CelebA(image_size=32).load(tmp_path)
    assert ds.images.shape == (6, 3, 32, 32)
    assert ds.labels["Male"].tolist() == [1, 0, 1, 0, 1, 0] and ds.labels["Smiling"].tolist() == [0, 1, 0, 1, 0, 1]
    assert ds.train_idx.tolist() == [0, 3] and ds.val_idx.tolist() == [1, 4] and ds.test_idx.tolist() == [2, 5]
    assert ds.num_classes("identity") == 2 and ds.default_task == "Smiling" and ds.private_task == "Male"
    with pytest.raises(BenchError, match="Smiling"):
        ds.check_task("Smilling")


def test_celeba_row_naming_a_missing_image(tmp_path):
    _celeba(tmp_path, drop_image="000003.jpg")
    with pytest.raises(BenchError, match="000003.jpg"):
        CelebA(image_size=32).load(tmp_path)


# --- folder ------------------------------------------------------------------------------------
def _folder(root: Path, rows: list[str], images=("a.png", "b.png", "c.jpg", "d.jpg")):
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(images):
        Image.fromarray(RNG.integers(0, 256, (20 + 4 * i, 24, 3), dtype=np.uint8)).save(root / name)  # mixed sizes
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def test_folder_labels_and_mixed_sizes(tmp_path):
    _folder(tmp_path / "f", ["file,kind,score", "a.png,cat,3", "b.png,dog,10", "c.jpg,cat,3", "d.jpg,dog,2"])
    ds = Folder(image_size=16, test_fraction=0.25).load(tmp_path / "f")
    assert ds.images.shape == (4, 3, 16, 16)
    assert ds.classes["kind"] == ["cat", "dog"] and ds.labels["kind"].tolist() == [0, 1, 0, 1]
    assert ds.classes["score"] == ["2", "3", "10"] and ds.labels["score"].tolist() == [1, 2, 1, 0]  # numeric order
    # Three training images are too few for a default task (bench.data.folder.RULE): --target-task picks one.
    assert ds.default_task is None and ds.private_task is None
    assert ds.meta["unsuitable"]["kind"] == "2 classes, 1.5 training images per class, fewer than 5"
    assert len(ds.test_idx) == 1 and len(ds.train_idx) == 3


def test_folder_split_column(tmp_path):
    _folder(tmp_path / "f", ["file,kind,split", "a.png,x,train", "b.png,y,train", "c.jpg,x,val", "d.jpg,y,test"])
    ds = Folder().load(tmp_path / "f")
    assert ds.train_idx.tolist() == [0, 1] and ds.val_idx.tolist() == [2] and ds.test_idx.tolist() == [3]


@pytest.mark.parametrize("rows,needle", [
    (["name,kind", "a.png,x"], "no `file` column; its columns are: name, kind"),
    (["file,kind", "a.png,x", "zzz.png,y"], "row 3 names zzz.png"),
    (["file,kind"], "has no rows"),
    (["file", "a.png"], "no task column"),
    (["file,kind,split", "a.png,x,later"], "split 'later'"),
], ids=["no file column", "missing image", "empty csv", "no task", "bad split"])
def test_folder_errors(tmp_path, rows, needle):
    _folder(tmp_path / "f", rows)
    with pytest.raises(BenchError) as e:
        Folder().load(tmp_path / "f")
    assert needle in str(e.value)


def test_folder_corrupt_image_named_and_nothing_cached(tmp_path, isolated_cache):
    _folder(tmp_path / "f", ["file,kind", "a.png,x", "b.png,y"])
    (tmp_path / "f" / "b.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(BenchError, match="b.png"):
        Folder().load(tmp_path / "f")
    assert not list(isolated_cache.rglob("*.pt"))


def test_folder_missing_dir_and_csv(tmp_path):
    with pytest.raises(BenchError, match="not a directory"):
        Folder().load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="labels.csv"):
        Folder().load(tmp_path / "empty")


# --- the real files (slow) --------------------------------------------------------------------
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the repository")


@pytest.mark.slow
@needs_shared
def test_real_cifar10_tarballs():
    ds = CIFAR10(download=False).load(SHARED)
    assert len(ds.train_idx) == 50000 and len(ds.test_idx) == 10000 and ds.image_shape == (3, 32, 32)
    assert torch.bincount(ds.labels["class"]).tolist() == [6000] * 10


@pytest.mark.slow
@needs_shared
def test_real_celeba_10k():
    ds = CelebA().load(SHARED)
    assert (len(ds.train_idx), len(ds.val_idx), len(ds.test_idx)) == (8000, 1000, 1000)
    assert len([t for t in ds.tasks if t != "identity"]) == 40 and ds.image_shape == (3, 64, 64)
