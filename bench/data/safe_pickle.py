"""Reading the one pickle format the harness accepts from a data directory: plain data.

CIFAR-10/100's python batches (`cifar-10-batches-py/data_batch_1`, `cifar-100-python/train`,
`meta`, ...) are pickles, written by Python 2. A pickle may name any importable callable and
have it called while loading (`os.system`, `builtins.exec`, `subprocess.Popen`, ...), so a
file from a data directory or a download folder is never given to `pickle.load`. `load_plain`
unpickles with `find_class` admitting exactly numpy's array reconstruction (`_reconstruct`,
`ndarray`, `dtype`); everything else a batch holds (dict, list, tuple, str, bytes, int, float,
bool, None) needs no global at all. Any other global is refused before it is imported or
called, with an error naming the file and the global.

This is the only module of the harness that imports `pickle` (tests/test_faults.py checks).
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

try:
    from numpy._core import multiarray as _multiarray  # numpy >= 2
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

from bench.errors import BenchError

# (module, name) as a pickle spells it -> the object. numpy pickles name `_reconstruct` by the
# module that defined it: `numpy.core.multiarray` before numpy 2 (so in every Python 2 CIFAR
# file), `numpy._core.multiarray` since. Nothing is imported by name: the table is the objects.
ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, file, where: str, what: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self.where = where
        self.what = what

    def find_class(self, module: str, name: str):
        found = ALLOWED.get((module, name))
        if found is None:
            named = f"{module}.{name}"
            if not named.isprintable() or len(named) > 200:  # the error stays one readable line
                named = ascii(named[:200])
            raise BenchError(f"refusing to unpickle {named} from {self.where}: "
                             f"{self.what} holds only arrays, lists and strings")
        return found

    def persistent_load(self, pid):
        raise BenchError(f"refusing to unpickle a persistent reference from {self.where}: "
                         f"{self.what} holds only arrays, lists and strings")


def load_plain(source: Path | str | bytes, where: str | None = None, *, what: str = "a CIFAR batch",
               encoding: str = "bytes"):
    """The plain data pickled in `source` (a path, or the file's bytes), or a BenchError naming `where`.

    `encoding` is how Python 2 `str` objects come back: "bytes" (the CIFAR loaders' choice, as
    the distribution's own example code: keys such as b"data") or "latin1" (torchvision's).
    Either keeps numpy arrays pickled by Python 2 intact. A refused global, a truncated or
    malformed file, or one that cannot be read is one BenchError; nothing in the file runs.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        where = where or "<bytes>"
        opened = io.BytesIO(bytes(source))
    else:
        where = where or str(source)
        try:
            opened = open(source, "rb")
        except OSError as e:
            raise BenchError(f"cannot read {where}: {e.strerror or type(e).__name__}") from None
    with opened as f:
        try:
            obj = _PlainUnpickler(f, where, what, encoding).load()
        except BenchError:
            raise
        except RecursionError:
            raise BenchError(f"cannot read {where}: nested too deeply to be {what}") from None
        except MemoryError:
            raise BenchError(f"cannot read {where}: it asks for more memory than {what} needs") from None
        except EOFError:
            raise BenchError(f"cannot read {where}: the pickle ends early (truncated or empty)") from None
        except Exception as e:  # UnpicklingError, ValueError, TypeError, struct.error, ... from bad bytes
            why = " ".join(str(e).split())[:200]
            raise BenchError(f"cannot read {where}: not a valid pickle of {what} ({type(e).__name__}: {why})") from None
    return obj
