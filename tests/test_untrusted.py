"""Untrusted files: CIFAR's python batches are pickles, and none is ever given to `pickle.load`.

The payloads of `cases_untrusted.py` are live (proved here in a separate interpreter with the
loaders' old `pickle.load(f, encoding="bytes")`); through the loaders and the CLI each one is
refused with an error naming the file and the global, and its marker file never appears. Real,
Python-2-written batches (and the protocol-4 ones tests/test_datasets.py writes) still load.
"""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data import safe_pickle
from bench.data.cifar10 import CIFAR10, CLASSES
from bench.data.cifar100 import CIFAR100
from bench.data.safe_pickle import load_plain
from bench.errors import BenchError
from cases_untrusted import (CIFAR10_DIR, CIFAR10_RUN, CIFAR100_DIR, N, Call, cifar10_batch, cifar100_batch,
                             hidden_in_batch, marker, modern_payload, payload, py2_dumps, write_cifar10,
                             write_cifar100)
from conftest import REPO

KINDS = ["os.system", "builtins.eval", "__builtin__.exec", "subprocess.check_call",
         "numpy.testing._private.utils.runstring"]


@pytest.fixture
def tmp(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path


def _crafted(kind: str, tmp: Path) -> bytes:
    return modern_payload(tmp) if kind == "pathlib.Path.touch" else py2_dumps(payload(kind, tmp))


# --- the payloads are real ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", [*KINDS, "pathlib.Path.touch", "hidden"])
def test_each_payload_runs_under_plain_pickle_load(kind, tmp):
    """What the loaders did before: in a separate interpreter, so that it is the only place anything runs."""
    path = tmp / "data" / "data_batch_1"
    path.write_bytes(hidden_in_batch("os.system", tmp) if kind == "hidden" else _crafted(kind, tmp))
    old_loader = "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'), encoding='bytes')"
    subprocess.run([sys.executable, "-c", old_loader, str(path)], cwd=tmp, capture_output=True, timeout=60)
    assert marker(tmp).exists(), f"the {kind} payload is not live, so refusing it proves nothing"


# --- refused by the loaders ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", [*KINDS, "pathlib.Path.touch"])
def test_cifar10_refuses_every_payload_and_runs_nothing(kind, tmp):
    write_cifar10(tmp / "data", data_batch_2=_crafted(kind, tmp))
    with pytest.raises(BenchError) as e:
        CIFAR10(download=False).load(tmp / "data")
    assert str(e.value).startswith(f"refusing to unpickle {kind} from {tmp / 'data' / CIFAR10_DIR / 'data_batch_2'}:")
    assert not marker(tmp).exists()


def test_a_payload_inside_a_good_looking_batch_is_refused(tmp):
    write_cifar10(tmp / "data", test_batch=hidden_in_batch("subprocess.check_call", tmp))
    with pytest.raises(BenchError, match=r"subprocess\.check_call from .*test_batch"):
        CIFAR10(download=False).load(tmp / "data")
    assert not marker(tmp).exists()


@pytest.mark.parametrize("file", ["train", "test", "meta"])
def test_cifar100_refuses_a_payload_in_any_of_its_files(file, tmp):
    write_cifar100(tmp / "data", **{file: py2_dumps(payload("os.system", tmp))})
    with pytest.raises(BenchError, match=rf"refusing to unpickle os\.system from .*{CIFAR100_DIR}/{file}:"):
        CIFAR100(download=False).load(tmp / "data")
    assert not marker(tmp).exists()


def test_nothing_refused_is_cached(tmp, isolated_cache):
    write_cifar10(tmp / "data", data_batch_5=py2_dumps(payload("builtins.eval", tmp)))
    with pytest.raises(BenchError):
        CIFAR10(download=False).load(tmp / "data")
    assert not list(isolated_cache.rglob("*.pt"))


# --- refused through the CLI: one line, exit 2 ------------------------------------------------
def test_the_cli_refuses_a_crafted_batch(tmp, main_inprocess):
    write_cifar10(tmp / "data", data_batch_3=py2_dumps(payload("os.system", tmp)))
    args = [a.format(res=tmp / "results", data=tmp / "data") for a in CIFAR10_RUN]
    out = main_inprocess(*args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to unpickle os.system from "), lines
    assert f"{CIFAR10_DIR}/data_batch_3" in lines[0]
    assert not marker(tmp).exists()
    assert not (tmp / "results").exists() or not list((tmp / "results").rglob("*.json"))


def test_the_cli_runs_on_good_python2_batches(tmp, main_inprocess):
    write_cifar10(tmp / "data")
    out = main_inprocess(*[a.format(res=tmp / "results", data=tmp / "data") for a in CIFAR10_RUN])
    assert out.returncode == 0, out.stderr


# --- good files still load ----------------------------------------------------------------------
def test_python2_cifar10_batches_load_pixel_for_pixel(tmp):
    d = write_cifar10(tmp / "data")
    ds = CIFAR10(download=False).load(tmp / "data")
    assert ds.images.shape == (6 * N, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert len(ds.train_idx) == 5 * N and len(ds.test_idx) == N
    first = cifar10_batch(seed=0)
    assert torch.equal(ds.images[:N], torch.from_numpy(first["data"].reshape(N, 3, 32, 32)))
    assert ds.labels["class"][:N].tolist() == first["labels"]
    assert ds.classes["class"] == CLASSES
    assert (d / "data_batch_1").read_bytes()[:2] == b"\x80\x02"  # protocol 2, as Python 2 wrote them


def test_python2_cifar100_loads(tmp):
    write_cifar100(tmp / "data")
    ds = CIFAR100(download=False).load(tmp / "data")
    assert ds.images.shape == (2 * N, 3, 32, 32) and len(ds.train_idx) == N
    assert ds.labels["fine"][:N].tolist() == cifar100_batch()["fine_labels"]
    assert ds.labels["coarse"][:N].tolist() == cifar100_batch()["coarse_labels"]
    assert ds.classes["fine"][7] == "fine7" and ds.classes["coarse"][19] == "coarse19"


def test_the_batches_test_datasets_writes_still_load(tmp_path):
    from test_datasets import _cifar10_pickles

    _cifar10_pickles(tmp_path)
    assert CIFAR10(download=False).load(tmp_path).images.shape == (60, 3, 32, 32)


# --- load_plain itself --------------------------------------------------------------------------
def test_load_plain_admits_exactly_numpy_array_reconstruction():
    assert set(safe_pickle.ALLOWED) == {("numpy.core.multiarray", "_reconstruct"),
                                        ("numpy._core.multiarray", "_reconstruct"),
                                        ("numpy", "ndarray"), ("numpy", "dtype")}
    plain = {"s": "text", "b": b"\xff", "i": 2**70, "f": 0.5, "t": (True, None), "l": [1, [2]],
             "a": np.arange(6, dtype=np.int16).reshape(2, 3), "o": np.asarray(["x", "y"])}
    got = load_plain(py2_dumps(plain), "mem", encoding="latin1")
    assert set(got) == set(plain) and got["i"] == 2**70 and got["t"] == (True, None) and got["l"] == [1, [2]]
    assert got["b"] == "\xff"  # a Python 2 str, decoded as latin1
    assert np.array_equal(got["a"], plain["a"]) and got["a"].dtype == np.int16


@pytest.mark.parametrize("module, name", [
    ("_codecs", "encode"),                    # how Python 3 writes bytes at protocol 2
    ("numpy._core.numeric", "_frombuffer"),   # how numpy writes arrays at protocol 5
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "load"),
    ("copyreg", "_reconstructor"),
    ("builtins", "getattr"),
    ("posix", "system"),
])
def test_load_plain_refuses_every_other_global(module, name):
    with pytest.raises(BenchError, match=rf"refusing to unpickle {module}\.{name} from somewhere:"):
        load_plain(py2_dumps(Call(module, name)), "somewhere")


def test_load_plain_errors_are_one_line_and_name_the_file(tmp_path):
    bad = tmp_path / "batch"
    for content in (b"", b"\x80\x02}q\x01(U\x04data", b"not a pickle at all", b"\x80\x02(\x8c\x03os\n\x93."):
        bad.write_bytes(content)
        with pytest.raises(BenchError) as e:
            load_plain(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value), e.value
    with pytest.raises(BenchError, match="cannot read .*missing"):
        load_plain(tmp_path / "missing")


# --- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize("loader", [CIFAR10, CIFAR100])
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_options_out_of_range_fail_before_any_work(loader, value, tmp, monkeypatch):
    write_cifar10(tmp / "data")
    write_cifar100(tmp / "data")
    monkeypatch.setattr(safe_pickle, "_PlainUnpickler", lambda *a: pytest.fail("read a file first"))
    with pytest.raises(BenchError, match=rf"{loader.name}\.download=.*true or false"):
        loader(download=value).load(tmp / "data")


def test_a_bad_option_on_the_command_line(tmp, main_inprocess):
    out = main_inprocess(*[a.format(res=tmp / "results", data=tmp / "data") for a in CIFAR10_RUN],
                         "--set", "cifar10.download=maybe")
    assert out.returncode == 2 and "cifar10.download" in out.stderr and "maybe" in out.stderr, out.stderr


# --- the only reader ----------------------------------------------------------------------------
def test_the_test_files_that_import_pickle_only_write_pickles():
    from test_faults import SOURCE_FORMAT_PICKLES

    for name in sorted(SOURCE_FORMAT_PICKLES):
        if not name.startswith("tests/"):
            continue
        tree = ast.parse((REPO / name).read_text())
        reads = [node.lineno for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pickle"
                 and node.attr in ("load", "loads", "Unpickler", "_Unpickler", "_load", "_loads")]
        assert not reads, f"{name} reads pickles at lines {reads}: only bench/data/safe_pickle.py may"
    assert not any(name.startswith("bench/") and name != "bench/data/safe_pickle.py" for name in SOURCE_FORMAT_PICKLES)
