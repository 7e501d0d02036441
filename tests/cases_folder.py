"""Datasets: hostile `folder` trees and dataset options out of range (see `hostile.py`).

Every tree starts from `_tree`: 20 small PNGs in {data} with two classes, so a case differs
from a good dataset only in the one thing it breaks. {outside} holds a valid image too,
so a case that reaches outside would find something to read.
"""
from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from hostile import FOLDER, SMOKE, Case

N = 20


def _png(path: Path, value: int = 0, size: int = 16):
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def _tree(tmp: Path, rows: list[str] | None = None, header: str = "file,label", n: int = N) -> list[str]:
    """Images a00.png .. in {data} (grey levels 10 apart, modulo 256), one in {outside}; labels.csv from `rows`."""
    names = [f"a{i:02d}.png" for i in range(n)]
    for i, name in enumerate(names):
        _png(tmp / "data" / name, 10 * i % 256)
    _png(tmp / "outside" / "x.png", 200)
    if rows is None:
        rows = [f"{name},{'cat' if i % 2 else 'dog'}" for i, name in enumerate(names)]
    (tmp / "data" / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return names


def _good_rows(extra: list[str]) -> list[str]:
    """The good dataset's rows, then `extra` (row N + 2 is the first extra)."""
    return [f"a{i:02d}.png,{'cat' if i % 2 else 'dog'}" for i in range(N)] + extra


def _with_rows(*extra: str, header: str = "file,label"):
    def setup(tmp, monkeypatch):
        _tree(tmp, _good_rows([e.format(tmp=tmp) for e in extra]), header)
    return setup


def _then(setup, *steps):
    def both(tmp, monkeypatch):
        setup(tmp, monkeypatch)
        for step in steps:
            step(tmp)
    return both


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height in its header (all PIL reads before decoding) and holds no pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _bomb(width: int, height: int):
    return _then(_with_rows(), lambda tmp: (tmp / "data" / "a05.png").write_bytes(_png_header(width, height)))


# --- "ok" cases: correct handling, checked on the decoded values ---------------------------------
def _load(tmp: Path, **options):
    from bench.data.folder import Folder
    return Folder(**options).load(tmp / "data")


def _bom(tmp, monkeypatch):
    _tree(tmp)
    csv_path = tmp / "data" / "labels.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())


def _check_bom(tmp, out):
    ds = _load(tmp)
    assert ds.tasks == ["label"] and ds.classes["label"] == ["cat", "dog"]
    assert ds.images.shape == (N, 3, 32, 32)


def _sixteen_bit(tmp, monkeypatch):
    _tree(tmp)
    # a00.png: 16-bit grey, left half 65535 (white), right half 32896 (= 128 x 257, mid grey)
    grey = np.full((16, 16), 32896, dtype=np.uint16)
    grey[:, :8] = 65535
    Image.fromarray(grey).save(tmp / "data" / "a00.png")
    assert Image.open(tmp / "data" / "a00.png").mode.startswith("I")


def _check_sixteen_bit(tmp, out):
    for channels in (1, 3):
        img = _load(tmp, image_size=16, channels=channels).images[0]
        assert img.shape == (channels, 16, 16)
        # clipped, both halves would be 255
        assert (img[:, :, :7] == 255).all() and (img[:, :, 9:] == 128).all(), img[0]


PALETTE = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)]


def _palette(tmp, monkeypatch):
    _tree(tmp)
    img = Image.new("P", (16, 16), 0)
    img.putpalette([v for rgb in PALETTE for v in rgb] + [0] * (768 - 3 * len(PALETTE)))
    for x in range(16):
        for y in range(16):
            img.putpixel((x, y), 1 + (x >= 8) + (y >= 8))  # red | green over green | blue
    img.save(tmp / "data" / "a00.png")
    assert Image.open(tmp / "data" / "a00.png").mode == "P"


def _check_palette(tmp, out):
    rgb = _load(tmp, image_size=16).images[0]
    assert rgb[:, 2, 2].tolist() == [255, 0, 0] and rgb[:, 2, 13].tolist() == [0, 255, 0]
    assert rgb[:, 13, 13].tolist() == [0, 0, 255]
    grey = _load(tmp, image_size=16, channels=1).images[0, 0]
    # ITU-R 601 luma of pure red / green / blue, as PIL computes it from RGB
    assert (grey[2, 2].item(), grey[2, 13].item(), grey[13, 13].item()) == (76, 150, 29)


def _palette_transparent(tmp, monkeypatch):
    _palette(tmp, monkeypatch)
    img = Image.open(tmp / "data" / "a00.png")
    img.load()
    img.save(tmp / "data" / "a00.png", transparency=0)


def _check_no_warning(tmp, out):
    from bench.data.images import decode_image
    assert Image.open(tmp / "data" / "a00.png").info.get("transparency") is not None
    _check_palette(tmp, out)
    # The run above decoded once into the cache; decode again to see what PIL would say.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decode_image((tmp / "data" / "a00.png").read_bytes(), "a00.png")
    assert not caught, [str(w.message) for w in caught]


def _inside_dotdot(tmp, monkeypatch):
    _tree(tmp)
    (tmp / "data" / "sub").mkdir()
    text = (tmp / "data" / "labels.csv").read_text().replace("a01.png,", "sub/../a01.png,")
    (tmp / "data" / "labels.csv").write_text(text)


def _check_loads(tmp, out):
    assert len(_load(tmp).images) == N


# --- setups of bad trees ---------------------------------------------------------------------
def _link(name: str, target: str, directory: bool = False):
    def make(tmp):
        (tmp / "data" / name).symlink_to(tmp / target, target_is_directory=directory)
    return make


def _fifo(tmp):
    os.mkfifo(tmp / "data" / "pipe.png")


def _replace_csv(data: bytes):
    return lambda tmp: (tmp / "data" / "labels.csv").write_bytes(data)


def _csv_link_out(tmp):
    (tmp / "outside" / "labels.csv").write_bytes((tmp / "data" / "labels.csv").read_bytes())
    (tmp / "data" / "labels.csv").unlink()
    (tmp / "data" / "labels.csv").symlink_to(tmp / "outside" / "labels.csv")


def _option(base: tuple, setting: str, *needles: str) -> Case:
    return Case(base + ("--set", setting), needles)


ROW = f"labels.csv row {N + 2}"  # the first row after the good ones

CASES = {
    # 1. paths that resolve outside --data-dir: refused before anything there is read
    "labels.csv path climbing out with ..": Case(
        FOLDER, (ROW, "../outside/x.png", "outside the data directory"), setup=_with_rows("../outside/x.png,cat")),
    "labels.csv absolute path outside": Case(
        FOLDER, (ROW, "outside the data directory"), setup=_with_rows("{tmp}/outside/x.png,cat")),
    "labels.csv names a symlink out of the tree": Case(
        FOLDER, (ROW, "link.png", "outside the data directory"),
        setup=_then(_with_rows("link.png,cat"), _link("link.png", "outside/x.png"))),
    "labels.csv path through a linked directory out": Case(
        FOLDER, (ROW, "sub/x.png", "outside the data directory"),
        setup=_then(_with_rows("sub/x.png,cat"), _link("sub", "outside", directory=True))),
    "labels.csv is itself a link out of the tree": Case(
        FOLDER, ("labels.csv", "outside the data directory"), setup=_then(_with_rows(), _csv_link_out)),
    "labels.csv names a fifo": Case(
        FOLDER, (ROW, "pipe.png", "not a regular file"), setup=_then(_with_rows("pipe.png,cat"), _fifo)),
    "labels.csv names a directory": Case(
        FOLDER, (ROW, "sub", "not a regular file"),
        setup=_then(_with_rows("sub,cat"), lambda tmp: (tmp / "data" / "sub").mkdir())),
    "labels.csv names a symlink loop": Case(
        FOLDER, (ROW, "loop.png", "cannot be opened"),
        setup=_then(_with_rows("loop.png,cat"), _link("loop.png", "data/loop.png"))),
    "labels.csv path with a NUL byte": Case(
        FOLDER, (ROW, "cannot be opened"), setup=_with_rows("a\0.png,cat")),
    # 3. the CSV itself
    "labels.csv duplicate header": Case(
        FOLDER, ("labels.csv row 1", "`label`", "appears twice", "columns 2 and 3"),
        setup=_with_rows(header="file,label,label")),
    "labels.csv header column without a name": Case(
        FOLDER, ("labels.csv row 1", "column 2 has no name"), setup=_with_rows(header="file,,label")),
    "labels.csv row with extra fields": Case(
        FOLDER, (ROW, "3 fields", "2 columns"), setup=_with_rows("a05.png,cat,oops")),
    "labels.csv same file twice, different labels": Case(
        FOLDER, ("labels.csv rows 3 and 22", "a01.png", "different labels", "'cat' vs 'dog'"),
        setup=_with_rows("a01.png,dog")),
    "labels.csv same file twice, same labels": Case(
        FOLDER, ("labels.csv rows 3 and 22", "a01.png", "list each image once"), setup=_with_rows("./a01.png,cat")),
    "labels.csv not UTF-8": Case(
        FOLDER, ("labels.csv", "not UTF-8", "0xe9"),
        setup=_then(_with_rows(), _replace_csv("file,label\na00.png,caf\xe9\na01.png,dog\n".encode("latin-1")))),
    "labels.csv task with one class": Case(
        FOLDER, ("labels.csv", "`label`", "only one class", "'cat'"),
        setup=_then(_with_rows(), _replace_csv(b"file,label\na00.png,cat\na01.png,cat\n"))),
    "labels.csv second task with one class": Case(
        FOLDER, ("labels.csv", "`site`", "only one class"),
        setup=_then(_with_rows(), _replace_csv(b"file,label,site\na00.png,cat,x\na01.png,dog,x\n"))),
    # 3. images
    "image over the pixel limit (PIL's warning)": Case(FOLDER, ("a05.png", "megapixels"), setup=_bomb(10_000, 10_000)),
    "image over twice PIL's limit (PIL's error)": Case(FOLDER, ("a05.png", "megapixels"), setup=_bomb(20_000, 20_000)),
    "image over our limit, under PIL's": Case(FOLDER, ("a05.png", "9000 x 9000", "megapixels"),
                                              setup=_bomb(9000, 9000)),
    "labels.csv with a byte-order mark": Case(FOLDER, setup=_bom, outcome="ok", check=_check_bom),
    "16-bit grey PNG scaled, not clipped": Case(
        FOLDER, setup=_sixteen_bit, outcome="ok", check=_check_sixteen_bit),
    "palette PNG through its colours": Case(FOLDER, setup=_palette, outcome="ok", check=_check_palette),
    "palette PNG with transparency, no warning": Case(
        FOLDER, setup=_palette_transparent, outcome="ok", check=_check_no_warning),
    "labels.csv .. that stays inside": Case(FOLDER, setup=_inside_dotdot, outcome="ok", check=_check_loads),
    # 4. options out of range, refused before any file is read (an empty tree would fail later)
    "folder.channels=2": _option(FOLDER, "folder.channels=2", "--set folder.channels=2: must be 1 or 3"),
    "folder.image_size=4": _option(FOLDER, "folder.image_size=4", "--set folder.image_size=4: must be between 8 and 1024"),
    "folder.image_size=4096": _option(FOLDER, "folder.image_size=4096",
                                      "--set folder.image_size=4096: must be between 8 and 1024"),
    "folder.test_fraction=0": _option(FOLDER, "folder.test_fraction=0",
                                      "--set folder.test_fraction=0.0: must be strictly between 0 and 1"),
    "folder.test_fraction=1.5": _option(FOLDER, "folder.test_fraction=1.5", "folder.test_fraction=1.5", "between 0 and 1"),
    "folder.test_fraction=nan": _option(FOLDER, "folder.test_fraction=nan", "folder.test_fraction=nan", "between 0 and 1"),
    "folder.split_seed=-1": _option(FOLDER, "folder.split_seed=-1", "--set folder.split_seed=-1: must be >= 0"),
    "synthetic.n=5": _option(SMOKE, "synthetic.n=5", "--set synthetic.n=5: must be at least 10 x classes = 40"),
    "synthetic.size=4": _option(SMOKE, "synthetic.size=4", "--set synthetic.size=4: must be between 8 and 256"),
    "synthetic.channels=0": _option(SMOKE, "synthetic.channels=0", "--set synthetic.channels=0: must be 1 or 3"),
    "synthetic.classes=1": _option(SMOKE, "synthetic.classes=1", "--set synthetic.classes=1: must be between 2 and 1000"),
    "synthetic.seed=-3": _option(SMOKE, "synthetic.seed=-3", "--set synthetic.seed=-3: must be >= 0"),
    "synthetic too large to generate": Case(SMOKE + ("--set", "synthetic.n=1000000", "--set", "synthetic.size=256"),
                                            ("synthetic.n=1000000", "lower n or size")),
    "celeba.image_size=0": Case(("run", "--dataset", "celeba", "--preset", "smoke", "--attacker", "adaptive",
                                 "--results-dir", "{res}", "--data-dir", "{data}", "--set", "celeba.image_size=0"),
                                ("--set celeba.image_size=0: must be between 8 and 1024",)),
}
