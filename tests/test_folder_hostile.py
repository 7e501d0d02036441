"""Datasets: what the `folder` cases of `test_hostile.py` cannot see from the CLI.

The decode cache key follows content (not names, sizes and times), nothing outside the data
directory is opened, options fail before any work, and decoding keeps 16-bit and palette values.
"""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import folder as folder_module
from bench.data.base import DatasetLoader
from bench.data.celeba import CelebA
from bench.data.fashion_mnist import FashionMNIST
from bench.data.folder import Folder
from bench.data.images import _to_mode
from bench.data.synthetic import Synthetic
from bench.errors import BenchError

sys.path.insert(0, str(Path(__file__).parent))
from cases_folder import N, _tree  # noqa: E402  the tree every folder case starts from


@pytest.fixture
def data(tmp_path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "outside").mkdir()
    _tree(tmp_path)
    return tmp_path / "data"


@pytest.fixture
def keys(monkeypatch) -> list[str]:
    """The cache key of every folder load, in order."""
    seen = []
    real = folder_module.cached

    def spy(kind, key, build):
        seen.append(key)
        return real(kind, key, build)

    monkeypatch.setattr(folder_module, "cached", spy)
    return seen


def _keep_stat(path: Path, write):
    """Rewrite `path` with `write()`, then put its modification time back: only the content differs."""
    st = path.stat()
    write()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns


def test_editing_one_label_changes_the_key(data, keys):
    first = Folder().load(data)
    csv_path = data / "labels.csv"
    text = csv_path.read_text()
    edited = text.replace("a01.png,cat", "a01.png,dog")  # same length: only the content differs
    assert len(edited) == len(text) and edited != text
    _keep_stat(csv_path, lambda: csv_path.write_text(edited))
    second = Folder().load(data)
    assert keys[0] != keys[1]
    assert first.classes["label"] == second.classes["label"] == ["cat", "dog"]
    assert first.labels["label"][1].item() == 0 and second.labels["label"][1].item() == 1


def test_same_size_image_bytes_change_the_key(data, keys):
    victim = data / "a03.png"
    # Stored uncompressed (level 0), two images of one size make files of one length.
    Image.fromarray(np.full((16, 16, 3), 30, dtype=np.uint8)).save(victim, compress_level=0)
    first = Folder(image_size=16).load(data)
    before = victim.read_bytes()
    Image.fromarray(np.full((16, 16, 3), 99, dtype=np.uint8)).save(victim, compress_level=0)
    after = victim.read_bytes()
    assert len(after) == len(before) and after != before
    _keep_stat(victim, lambda: victim.write_bytes(after))
    second = Folder(image_size=16).load(data)
    assert keys[0] != keys[1]
    assert (first.images[3] == 30).all() and (second.images[3] == 99).all()


def test_options_that_change_decoding_are_in_the_key(data, keys):
    shapes = {(s, c): Folder(image_size=s, channels=c).load(data).image_shape for s in (8, 16) for c in (1, 3)}
    assert shapes == {(s, c): (c, s, s) for s in (8, 16) for c in (1, 3)}
    assert len(set(keys)) == 4


def test_files_not_listed_do_not_change_the_key(data, keys):
    Folder().load(data)
    (data / "notes.txt").write_text("not an image, not in labels.csv\n")
    Folder().load(data)
    assert keys[0] == keys[1]


def test_key_is_the_same_for_the_same_content_elsewhere(data, tmp_path, keys):
    Folder().load(data)
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in data.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    Folder().load(copy)
    assert keys[0] == keys[1]


# --- nothing outside the data directory is opened --------------------------------------------
OPENED: list[str] | None = None


def _audit(event, args):
    if OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one records only while OPENED is a list


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "linked dir", "labels.csv link"])
def test_nothing_outside_is_opened(data, tmp_path, how):
    global OPENED
    outside = tmp_path / "outside"
    rows = (data / "labels.csv").read_text()
    extra = {"dotdot": "../outside/x.png", "absolute": str(outside / "x.png"), "symlink": "link.png",
             "linked dir": "sub/x.png", "labels.csv link": None}[how]
    if how == "symlink":
        (data / "link.png").symlink_to(outside / "x.png")
    if how == "linked dir":
        (data / "sub").symlink_to(outside, target_is_directory=True)
    if how == "labels.csv link":
        (outside / "labels.csv").write_text(rows)
        (data / "labels.csv").unlink()
        (data / "labels.csv").symlink_to(outside / "labels.csv")
    else:
        (data / "labels.csv").write_text(rows + f"{extra},cat\n")
    OPENED = []
    try:
        with pytest.raises(BenchError, match="outside the data directory"):
            Folder().load(data)
        opened = OPENED
    finally:
        OPENED = None
    assert not [p for p in opened if Path(p).resolve().is_relative_to(outside.resolve())], opened
    if how != "labels.csv link":  # the hook does see opens: labels.csv itself was read
        assert any(Path(p).name == "labels.csv" for p in opened), opened


def test_a_link_inside_the_tree_is_followed(data):
    (data / "alias.png").symlink_to(data / "a04.png")
    text = (data / "labels.csv").read_text().replace("a04.png,", "alias.png,")
    (data / "labels.csv").write_text(text)
    assert (Folder(image_size=16).load(data).images[4] == 40).all()


def test_a_link_to_a_listed_file_is_a_duplicate(data):
    (data / "alias.png").symlink_to(data / "a04.png")
    (data / "labels.csv").write_text((data / "labels.csv").read_text() + "alias.png,cat\n")
    with pytest.raises(BenchError, match=f"rows 6 and {N + 2} both list a04.png with different labels"):
        Folder().load(data)


def test_blank_lines_count_in_row_numbers(data):
    (data / "labels.csv").write_text("file,label\n\na00.png,cat\n\nmissing.png,dog\n")
    with pytest.raises(BenchError, match="row 5 names missing.png, which does not exist"):
        Folder().load(data)


def test_quoted_fields_and_crlf(data):
    (data / "labels.csv").write_text('file,label\r\n"a00.png","cat, grey"\r\na01.png,dog\r\n')
    assert Folder().load(data).classes["label"] == ["cat, grey", "dog"]


# --- options are checked before any work -----------------------------------------------------
def _no_work(monkeypatch):
    monkeypatch.setattr(folder_module, "read_labels", lambda *a: pytest.fail("read labels.csv"))
    monkeypatch.setattr(Path, "read_bytes", lambda *a: pytest.fail("read a file"))


@pytest.mark.parametrize("options,needle", [
    ({"image_size": 7}, "--set folder.image_size=7: must be between 8 and 1024"),
    ({"image_size": 1025}, "--set folder.image_size=1025: must be between 8 and 1024"),
    ({"image_size": 32.0}, "--set folder.image_size=32.0: must be an integer, got float"),
    ({"channels": 4}, "--set folder.channels=4: must be 1 or 3"),
    ({"channels": True}, "--set folder.channels=True: must be 1 or 3"),
    ({"test_fraction": 1.0}, "--set folder.test_fraction=1.0: must be strictly between 0 and 1"),
    ({"test_fraction": -0.1}, "--set folder.test_fraction=-0.1: must be strictly between 0 and 1"),
    ({"split_seed": -1}, "--set folder.split_seed=-1: must be >= 0"),
])
def test_folder_options_fail_before_any_work(data, monkeypatch, options, needle):
    _no_work(monkeypatch)
    with pytest.raises(BenchError) as e:
        Folder(**options).load(data)
    assert str(e.value) == needle


@pytest.mark.parametrize("loader,needle", [
    (Synthetic(n=39), "--set synthetic.n=39: must be at least 10 x classes = 40"),
    (Synthetic(size=7), "--set synthetic.size=7: must be between 8 and 256"),
    (Synthetic(channels=2), "--set synthetic.channels=2: must be 1 or 3"),
    (Synthetic(classes=1), "--set synthetic.classes=1: must be between 2 and 1000"),
    (Synthetic(seed=-1), "--set synthetic.seed=-1: must be >= 0"),
    (CelebA(image_size=2048), "--set celeba.image_size=2048: must be between 8 and 1024"),
    (FashionMNIST(download="no"), "--set fashion-mnist.download=no: must be true or false"),
], ids=lambda x: x if isinstance(x, str) else type(x).__name__)
def test_other_loaders_check_options_first(tmp_path, monkeypatch, loader, needle):
    _no_work(monkeypatch)
    with pytest.raises(BenchError) as e:
        loader.load(tmp_path / "does-not-exist")  # a missing directory would be the next error
    assert str(e.value) == needle


def test_defaults_pass_their_own_checks():
    for loader in (Folder(), Synthetic(), CelebA(), FashionMNIST()):
        loader.check_options()
    assert Synthetic(n=40, size=8, channels=3, classes=4).load(None).image_shape == (3, 8, 8)


def test_the_hook_is_generic():
    """A third-party loader's `check_options` runs before its own `load`, with no call of its own."""
    ran = []

    class Plugin(DatasetLoader):
        name = "plugin"

        def __init__(self, k: int = 1):
            self.k = k

        def check_options(self):
            self.check_int("k", 1, 5)

        def load(self, data_dir):
            ran.append(data_dir)
            return "loaded"

    with pytest.raises(BenchError, match=r"^--set plugin.k=9: must be between 1 and 5$"):
        Plugin(k=9).load(None)
    assert ran == [] and Plugin(k=2).load(None) == "loaded" and ran == [None]
    assert Plugin.load.__name__ == "load"


# --- decoding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,dtype", [("I;16", "<u2"), ("I;16B", ">u2"), ("I", "<i4")])
def test_sixteen_bit_grey_is_scaled(mode, dtype):
    values = np.array([[0, 257, 32896, 65535]], dtype=dtype)
    img = Image.frombytes(mode, (4, 1), values.tobytes())
    assert img.mode == mode
    assert np.asarray(_to_mode(img, "L")).tolist() == [[0, 1, 128, 255]]
    assert np.asarray(_to_mode(img, "RGB"))[0, 3].tolist() == [255, 255, 255]


def test_eight_bit_modes_are_unchanged():
    grey = Image.fromarray(np.array([[0, 7, 128, 255]], dtype=np.uint8))
    assert np.asarray(_to_mode(grey, "L")).tolist() == [[0, 7, 128, 255]]
    rgb = Image.fromarray(np.array([[[1, 2, 3]]], dtype=np.uint8))
    assert np.asarray(_to_mode(rgb, "RGB")).tolist() == [[[1, 2, 3]]]


def test_decoded_images_are_uint8(data):
    ds = Folder().load(data)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (N, 3, 32, 32)
