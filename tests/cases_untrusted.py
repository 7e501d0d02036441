"""Untrusted files: CIFAR python batches that are not what they claim (see `hostile.py`).

CIFAR-10/100's python format is a pickle, so a batch in a data directory can name any callable
and have it called on `pickle.load`. Each case writes a complete, valid tiny dataset in the
layout torchvision uses ({data}/cifar-10-batches-py/, {data}/cifar-100-python/), as Python 2
wrote it, then replaces one file. The payloads are live: under plain `pickle.load` each one
creates {tmp}/outside/PWNED (tests/test_untrusted.py proves that in a separate interpreter);
the harness must refuse it with one line naming the file and the global, and the marker must
not exist afterwards (the table also checks that nothing outside the results dir changed).

This module writes pickles (it imports pickle for that); nothing here loads one.
"""
from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np

from hostile import Case

CIFAR10_DIR, CIFAR100_DIR = "cifar-10-batches-py", "cifar-100-python"
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
N = 20  # images per batch: every class of CIFAR-10 twice
RUN = ("run", "--preset", "smoke", "--attacker", "adaptive", "--no-plots", "--results-dir", "{res}",
       "--data-dir", "{data}")
CIFAR10_RUN = (*RUN, "--dataset", "cifar10")
CIFAR100_RUN = (*RUN, "--dataset", "cifar100")


# --- writing pickles as Python 2's cPickle did ------------------------------------------------
class Global:
    """A global exactly as a pickle names it (one GLOBAL opcode), e.g. Global("os", "system")."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle insists that a reduce function be callable
        raise RuntimeError("only ever pickled")


class Call:
    """Pickles as `module.name(*args)`, called while unpickling (GLOBAL, args, REDUCE)."""

    def __init__(self, module: str, name: str, *args):
        self.func, self.args = Global(module, name), args

    def __reduce__(self):
        return self.func, self.args


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: `str` and `bytes` as BINSTRING (Python 2's str; no
    `_codecs.encode` as Python 3 writes bytes at protocol 2), numpy's `_reconstruct` under its
    Python 2 name `numpy.core.multiarray`, and a `Global` as the GLOBAL opcode it stands for."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_global_as_named(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    def save_global(self, obj, name=None):
        if obj is np.ndarray.__reduce__(np.zeros(0))[0]:  # numpy's _reconstruct, wherever it lives now
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str
    dispatch[Global] = save_global_as_named


def py2_dumps(obj) -> bytes:
    f = io.BytesIO()
    Py2Pickler(f, protocol=2).dump(obj)
    return f.getvalue()


# --- a good tiny dataset, then one file replaced ------------------------------------------------
def cifar10_batch(n: int = N, seed: int = 0) -> dict:
    """A batch as the real files hold it: str keys (bytes once read), uint8 N x 3072, int labels."""
    rng = np.random.default_rng(seed)
    return {"batch_label": "training batch 1 of 5", "labels": [i % 10 for i in range(n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img_{i}.png" for i in range(n)]}


def write_cifar10(data: Path, **replace: bytes) -> Path:
    """A complete tiny CIFAR-10 in torchvision's layout under `data`, file NAME replaced by replace[NAME]."""
    d = data / CIFAR10_DIR
    d.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(CIFAR10_FILES):
        (d / name).write_bytes(replace.get(name, py2_dumps(cifar10_batch(seed=i))))
    (d / "batches.meta").write_bytes(py2_dumps({"label_names": ["airplane", "automobile", "bird", "cat", "deer",
                                                                "dog", "frog", "horse", "ship", "truck"]}))
    return d


def cifar100_batch(n: int = N, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"batch_label": "training batch 1 of 1", "fine_labels": [(7 * i) % 100 for i in range(n)],
            "coarse_labels": [i % 20 for i in range(n)], "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img_{i}.png" for i in range(n)]}


def cifar100_meta() -> dict:
    return {"fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)]}


def write_cifar100(data: Path, **replace: bytes) -> Path:
    d = data / CIFAR100_DIR
    d.mkdir(parents=True, exist_ok=True)
    files = {"train": py2_dumps(cifar100_batch()), "test": py2_dumps(cifar100_batch(seed=1)),
             "meta": py2_dumps(cifar100_meta())}
    for name, content in files.items():
        (d / name).write_bytes(replace.get(name, content))
    return d


# --- payloads: each creates {tmp}/outside/PWNED when given to pickle.load -------------------------
def marker(tmp: Path) -> Path:
    return tmp / "outside" / "PWNED"


def _touch_code(path: Path) -> str:
    return f"open({str(path)!r}, 'w').close()"


def payload(kind: str, tmp: Path):
    """The object whose unpickling runs `kind` against the marker file."""
    m = marker(tmp)
    return {
        "os.system": Call("os", "system", f"touch '{m}'"),
        "builtins.eval": Call("builtins", "eval", _touch_code(m)),
        "__builtin__.exec": Call("__builtin__", "exec", _touch_code(m)),  # Python 2's spelling (fix_imports)
        "subprocess.check_call": Call("subprocess", "check_call", ["touch", str(m)]),
        # numpy itself has gadgets: admitting "anything from numpy" would run this.
        "numpy.testing._private.utils.runstring": Call("numpy.testing._private.utils", "runstring",
                                                       _touch_code(m), {}),
    }[kind]


class TouchOnLoad:
    """The `__reduce__` payload as Python 3 pickles it (protocol 4 names `pathlib.Path.touch` itself)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def modern_payload(tmp: Path) -> bytes:
    return pickle.dumps(TouchOnLoad(marker(tmp)), protocol=4)


def hidden_in_batch(kind: str, tmp: Path) -> bytes:
    """A batch that looks right, with the payload as its `labels`."""
    batch = cifar10_batch()
    batch["labels"] = payload(kind, tmp)
    return py2_dumps(batch)


def _not_run(tmp: Path, out) -> None:
    assert not marker(tmp).exists(), "the payload ran"


def _cifar10_with(name: str, content):
    """Setup: CIFAR-10 with file `name` replaced by content(tmp) (bytes)."""
    def setup(tmp, monkeypatch):
        write_cifar10(tmp / "data", **{name: content(tmp)})
    return setup


def _cifar100_with(name: str, content):
    def setup(tmp, monkeypatch):
        write_cifar100(tmp / "data", **{name: content(tmp)})
    return setup


def _payload_case(kind: str, file: str = "data_batch_3", hidden: bool = False) -> Case:
    content = (lambda tmp: hidden_in_batch(kind, tmp)) if hidden else (lambda tmp: py2_dumps(payload(kind, tmp)))
    return Case(CIFAR10_RUN, (f"refusing to unpickle {kind} from", f"{CIFAR10_DIR}/{file}"),
                setup=_cifar10_with(file, content), check=_not_run)


def _float_data(tmp: Path) -> bytes:
    batch = cifar10_batch()
    batch["data"] = batch["data"].astype(np.float32)
    return py2_dumps(batch)


def _hwc_data(tmp: Path) -> bytes:
    batch = cifar10_batch()
    batch["data"] = batch["data"].reshape(N, 32, 32, 3)
    return py2_dumps(batch)


def _label_out_of_range(tmp: Path) -> bytes:
    batch = cifar10_batch()
    batch["labels"][4] = 10
    return py2_dumps(batch)


def _truncated(tmp: Path) -> bytes:
    whole = py2_dumps(cifar10_batch())
    return whole[: len(whole) // 2]


CASES: dict[str, Case] = {
    "cifar10 batch runs os.system": _payload_case("os.system"),
    "cifar10 batch runs builtins.eval": _payload_case("builtins.eval", "test_batch"),
    "cifar10 batch runs __builtin__.exec, Python 2 spelling": _payload_case("__builtin__.exec", "data_batch_1"),
    "cifar10 batch hides subprocess.check_call in its labels": _payload_case("subprocess.check_call", hidden=True),
    "cifar10 batch runs pathlib.Path.touch, pickled by Python 3": Case(
        CIFAR10_RUN, ("refusing to unpickle pathlib.Path.touch from", f"{CIFAR10_DIR}/data_batch_5"),
        setup=_cifar10_with("data_batch_5", modern_payload), check=_not_run),
    "cifar10 batch runs a numpy gadget": _payload_case("numpy.testing._private.utils.runstring", hidden=True),
    "cifar10 batch is a list, not a dict": Case(
        CIFAR10_RUN, ("data_batch_2", "not a CIFAR batch", "list"),
        setup=_cifar10_with("data_batch_2", lambda tmp: py2_dumps([cifar10_batch()["data"], list(range(N))]))),
    "cifar10 batch without labels": Case(
        CIFAR10_RUN, ("data_batch_2", "b'labels'"),
        setup=_cifar10_with("data_batch_2", lambda tmp: py2_dumps({"data": cifar10_batch()["data"]}))),
    "cifar10 batch of float32 data": Case(
        CIFAR10_RUN, ("data_batch_4", "uint8", "float32"), setup=_cifar10_with("data_batch_4", _float_data)),
    "cifar10 batch of N x 32 x 32 x 3 data": Case(
        CIFAR10_RUN, ("data_batch_4", "N x 3072", "(20, 32, 32, 3)"), setup=_cifar10_with("data_batch_4", _hwc_data)),
    "cifar10 label out of range": Case(
        CIFAR10_RUN, ("test_batch", "0..9", "10"), setup=_cifar10_with("test_batch", _label_out_of_range)),
    "cifar10 batch truncated": Case(
        CIFAR10_RUN, ("data_batch_1", "truncated"), setup=_cifar10_with("data_batch_1", _truncated)),
    "cifar10 batch empty": Case(
        CIFAR10_RUN, ("data_batch_1", "truncated"), setup=_cifar10_with("data_batch_1", lambda tmp: b"")),
    "cifar100 meta runs os.system": Case(
        CIFAR100_RUN, ("refusing to unpickle os.system from", f"{CIFAR100_DIR}/meta"),
        setup=_cifar100_with("meta", lambda tmp: py2_dumps({"fine_label_names": payload("os.system", tmp),
                                                             "coarse_label_names": cifar100_meta()["coarse_label_names"]})),
        check=_not_run),
    "cifar100 train runs builtins.exec": Case(
        CIFAR100_RUN, ("refusing to unpickle builtins.exec from", f"{CIFAR100_DIR}/train"),
        setup=_cifar100_with("train", lambda tmp: py2_dumps(Call("builtins", "exec", _touch_code(marker(tmp))))),
        check=_not_run),
    "cifar100 meta with 99 fine names": Case(
        CIFAR100_RUN, (f"{CIFAR100_DIR}/meta", "100 names", "99"),
        setup=_cifar100_with("meta", lambda tmp: py2_dumps({**cifar100_meta(),
                                                             "fine_label_names": [f"f{i}" for i in range(99)]}))),
}
