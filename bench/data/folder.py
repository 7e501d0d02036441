"""Bring your own data: a directory of images plus `labels.csv` (column `file`, one column per task).

String labels map to their sorted class names; integer labels to their sorted distinct
values. An optional `split` column (train/val/test) fixes the partition; otherwise a
seeded `test_fraction` of the rows is test. Images of mixed sizes are resized.

What is refused, each with one line naming labels.csv and the row: a path that resolves
outside the data directory (`..`, an absolute path, a symlink out of the tree: nothing
outside it is ever read), the same image listed twice (whether or not the labels agree:
a repeated image can land in both train and test and inflate every score), a task column
with one class, duplicate or empty header names, rows with more fields than the header,
and a labels.csv that is not UTF-8 (a leading byte-order mark is fine).

A default task is a column a small classifier can learn: at most `MAX_CLASSES` (20) classes
and at least `MIN_PER_CLASS` (5) training images (rows not in test) per class on average. The
designated task is the first such column, the private task the next one; a column passed over
(a UTKFace `age`, 104 distinct numbers) is named with the reason, and with no such column a
command refuses, naming each column's class count, until `--target-task` picks one (an
explicit choice is kept, with a one-line warning when the column fails the rule). A `run` says
in one line on stdout which tasks it uses, from the flags or by default, and at which image
size (`resolve_tasks`, printed by planning once the flags are known).
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.data.base import DatasetLoader, ImageDataset, TaskChoice, cached
from bench.data.images import decode_image, files_digest
from bench.errors import BenchError

SPLITS = ("train", "val", "test")
RESERVED = ("file", "split")
# Bumped when decoding changes what the same bytes give (v2: 16-bit grey scaled, not clipped).
DECODE_VERSION = "v2"
# What a default task must allow: a column with more classes (an age in years, an identity) or too few
# images per class trains a classifier that stays near chance, and nobody asked for it.
MAX_CLASSES = 20
MIN_PER_CLASS = 5
# The directory's name as a record keeps it (`data_name`) for table labels, plot titles and file names.
DATA_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
RULE = f"at most {MAX_CLASSES} classes and {MIN_PER_CLASS} training images per class"


def read_labels(path: Path) -> tuple[list[str], dict[str, list[str]], list[str] | None, list[int]]:
    """(files, {task: raw labels}, split column or None, row number of each file), errors naming the row.

    Rows are numbered as in a spreadsheet: the header is row 1 (blank lines count too).
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BenchError(f"cannot read {path}: {e}") from None
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's UTF-8 export starts with a byte-order mark
    except UnicodeDecodeError as e:
        raise BenchError(f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                         f"save it as UTF-8 CSV") from None
    try:
        records = []
        reader = csv.reader(io.StringIO(text, newline=""))
        start = 1
        for record in reader:
            if record:  # csv gives [] for a blank line
                records.append((start, record))
            start = reader.line_num + 1
    except csv.Error as e:
        raise BenchError(f"{path} row {reader.line_num}: malformed CSV ({e})") from None
    if not records:
        raise BenchError(f"{path} is empty (expected a header with `file` and at least one task column)")
    header_row, columns = records[0]
    for j, c in enumerate(columns):
        if c == "":
            raise BenchError(f"{path} row {header_row}: header column {j + 1} has no name")
        if c in columns[:j]:
            raise BenchError(f"{path} row {header_row}: column `{c}` appears twice in the header "
                             f"(columns {columns.index(c) + 1} and {j + 1}); names must be unique")
    rows = records[1:]
    if not rows:
        raise BenchError(f"{path} has no rows (expected a header with `file` and at least one task column)")
    if "file" not in columns:
        raise BenchError(f"{path} has no `file` column; its columns are: {', '.join(columns)}")
    tasks = [c for c in columns if c not in RESERVED]
    if not tasks:
        raise BenchError(f"{path} has no task column besides `file`")
    table = []
    for i, record in rows:
        if len(record) > len(columns):
            raise BenchError(f"{path} row {i}: {len(record)} fields, but the header names {len(columns)} columns")
        row = dict(zip(columns, record))
        for c in ["file"] + tasks:
            if row.get(c, "") == "":
                raise BenchError(f"{path} row {i}: empty `{c}`")
        if "split" in columns and row.get("split") not in SPLITS:
            raise BenchError(f"{path} row {i}: split {row.get('split', '')!r}; valid choices: {', '.join(SPLITS)}")
        table.append(row)
    for t in tasks:
        values = {r[t] for r in table}
        same = _one_number_two_spellings(values)
        if same:
            raise BenchError(f"{path}: task column `{t}` has {same[0]!r} and {same[1]!r}, one number written two "
                             "ways (integer labels are classes by value); write each class one way")
        if len(values) < 2:
            raise BenchError(f"{path}: task column `{t}` has only one class ({next(iter(values))!r}); "
                             f"a one-class task cannot be scored")
    return ([r["file"] for r in table], {t: [r[t] for r in table] for t in tasks},
            [r["split"] for r in table] if "split" in columns else None, [i for i, _ in rows])


def resolve_inside(root: Path, name: str, where: str) -> Path:
    """`root / name` with every link followed, or a BenchError if that is not a regular file inside `root`.

    `root` must already be resolved. Whatever `name` says (`..`, an absolute path, a symlink
    anywhere on the way), the file read is the resolved path checked here.
    """
    try:
        path = (root / name).resolve()
        inside = path.is_relative_to(root)
        is_file = inside and path.is_file()
        exists = inside and path.exists()
    except (OSError, ValueError, RuntimeError) as e:  # NUL byte, name too long, a symlink loop
        raise BenchError(f"{where} names {name!r}, which cannot be opened: {e}") from None
    if not inside:
        raise BenchError(f"{where} names {name!r}, which resolves to {path}, outside the data directory {root}; "
                         f"list files by paths inside it (no `..`, absolute paths or links out)")
    if not exists:
        raise BenchError(f"{where} names {name}, which does not exist in {root}")
    if not is_file:
        raise BenchError(f"{where} names {name}, which is not a regular file")
    return path


def _one_number_two_spellings(values: set[str]) -> tuple[str, str] | None:
    """Two labels that are the same integer spelt differently (`1` and `01`), when every label is an integer."""
    try:
        by_value = {}
        for v in sorted(values):
            by_value.setdefault(int(v), []).append(v)
    except ValueError:
        return None   # string labels: classes by name, `1` and `01` are two names
    return next((tuple(vs[:2]) for vs in by_value.values() if len(vs) > 1), None)


def encode(values: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Class indices and names: integers by value, strings alphabetically."""
    try:
        keys = sorted(set(values), key=int)
    except ValueError:
        keys = sorted(set(values))
    index = {k: i for i, k in enumerate(keys)}
    return torch.tensor([index[v] for v in values]), keys


def unsuitable(values: list[str], n_train: int) -> str | None:
    """Why a column with these labels is no default task over `n_train` training images (`RULE`), or None."""
    n = len(set(values))
    if n > MAX_CLASSES:
        # Integer labels with many values are most often a quantity (an age in years), said as such.
        kind = "distinct numbers" if all(_is_int(v) for v in set(values)) else "classes"
        return f"{n} {kind}, more than {MAX_CLASSES} classes"
    if n_train < MIN_PER_CLASS * n:
        return f"{n} classes, {n_train / n:.1f} training images per class, fewer than {MIN_PER_CLASS}"
    return None


def data_name(root: Path) -> str:
    """`root`'s name in `DATA_NAME`'s characters: a label is told apart by its digest, so a name mangled
    (`UTK Face` -> `UTK_Face`) or cut still serves."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", root.name)[:64] or "root"


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _listed(names: list[str], at_most: int = 8) -> str:
    """`names` comma-separated, cut short for a CSV with dozens of columns: the line stays one line."""
    shown = ", ".join(names[:at_most])
    return shown if len(names) <= at_most else f"{shown}, ... ({len(names)} in all)"


def _tasks_of(data: ImageDataset, target_task: str | None, private_task: str | None) -> TaskChoice:
    """The tasks a command uses on a folder dataset and the one line that says so (see the module's rule)."""
    why, root = data.meta["unsuitable"], data.meta["source"]

    def task(t: str) -> str:
        return f"'{t}' ({data.num_classes(t)} classes"

    if target_task is None:
        if data.default_task is None:
            columns = "; ".join(f"'{t}' {why[t]}" for t in data.tasks)
            raise BenchError(f"folder dataset {root}: no column is a sensible designated task ({RULE}): "
                             f"{columns}; pick one with --target-task (valid choices: {', '.join(data.tasks)})")
        target = data.default_task
    else:
        target = data.check_task(target_task)
    private = data.check_task(private_task) if private_task is not None else next(
        (t for t in data.tasks if t != target and why[t] is None), None)
    warnings = tuple(f"--{flag} {t}: {why[t]} ({RULE} is what a default needs); its scores may stay near chance"
                     for flag, t in (("target-task", target_task), ("private-task", private_task))
                     if t is not None and why[t] is not None)
    said_target = f"designated task {task(target)}, {'from --target-task' if target_task else 'by default'})"
    if private is not None:
        said_private = f"private task {task(private)}, {'from --private-task' if private_task else 'by default'})"
    else:
        said_private = ("no private task (one task column)" if len(data.tasks) == 1 else
                        "no private task (no other column is sensible; --private-task picks one)")
    passed = [t for t in data.tasks if why[t] is not None and t not in (target, private)]
    skipped = f"; passed over: {'; '.join(f'{t!r} ({why[t]})' for t in passed[:4])}" if passed else ""
    size, colour = data.meta["image_size"], "RGB" if data.meta["channels"] == 3 else "grey"
    line = (f"folder dataset {root}: {said_target}, {said_private}{skipped}; images at {size}x{size} px {colour}; "
            f"change with --target-task, --private-task, --set folder.image_size=N (tasks: {_listed(data.tasks)})")
    return TaskChoice(target, private, line, warnings)


class Folder(DatasetLoader):
    name = "folder"
    description = "your own images: a directory with labels.csv (column `file`, one column per task)"
    tasks = f"the CSV's columns (defaults: the first two with {RULE})"

    def __init__(self, image_size: int = 32, channels: int = 3, test_fraction: float = 0.2, split_seed: int = 0):
        self.image_size = image_size
        self.channels = channels
        self.test_fraction = test_fraction
        self.split_seed = split_seed

    def check_options(self) -> None:
        self.check_int("image_size", 8, 1024)
        self.check_choice("channels", (1, 3))
        f = self.test_fraction
        # `not 0 < f < 1` also refuses NaN.
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
            raise self.option_error("test_fraction", "must be strictly between 0 and 1")
        self.check_int("split_seed", 0)

    def load(self, data_dir: Path | None) -> ImageDataset:
        dirs = self.search_dirs(data_dir)
        if not dirs:
            raise BenchError("dataset folder needs --data-dir (or $BENCH_DATA_DIR): a directory holding labels.csv")
        given = dirs[0]
        if not given.is_dir():
            raise BenchError(f"--data-dir {str(given)!r} is not a directory")
        root = given.resolve()
        csv_path = given / "labels.csv"
        if not csv_path.exists() and not csv_path.is_symlink():
            raise BenchError(f"{csv_path} not found: the folder dataset needs labels.csv with a `file` column")
        # labels.csv itself may be a link out of the tree: it is read only once checked.
        csv_real = csv_path.resolve()
        if not csv_real.is_relative_to(root):
            raise BenchError(f"{csv_path} links to {csv_real}, outside the data directory {root}; "
                             f"put the file itself in the data directory")
        if not csv_real.is_file():
            raise BenchError(f"{csv_path} is not a regular file")
        files, raw, split, row_of = read_labels(csv_real)
        paths, first = [], {}
        for n, (i, f) in enumerate(zip(row_of, files)):
            path = resolve_inside(root, f, f"{csv_path} row {i}")
            if path in first:  # also `./a.png`, `sub/../a.png` or a link to a listed file
                k = first[path]
                differ = [f"`{t}` {raw[t][k]!r} vs {raw[t][n]!r}" for t in raw if raw[t][k] != raw[t][n]]
                raise BenchError(f"{csv_path} rows {row_of[k]} and {i} both list {path.relative_to(root)}"
                                 + (f" with different labels ({'; '.join(differ)})" if differ else "")
                                 + "; list each image once")
            first[path] = n
            paths.append(path)
        where = self._partition(split, len(files), csv_path)
        key = f"{files_digest(root, [csv_real] + paths)}-{self.image_size}-{self.channels}-{DECODE_VERSION}"

        def build():
            images = [decode_image(p.read_bytes(), str(p), size=self.image_size, channels=self.channels,
                                   crop_square=True)
                      for p in tqdm(paths, desc="decode folder", leave=False, disable=None)]
            out = {"images": torch.from_numpy(np.stack(images))}
            for task, values in raw.items():
                out[f"labels/{task}"], out[f"classes/{task}"] = encode(values)
            return out

        obj = cached("folder", key, build)
        tasks = list(raw)
        n_train = len(files) - len(where["test"])
        why = {t: unsuitable(raw[t], n_train) for t in tasks}
        fit = [t for t in tasks if why[t] is None]
        return ImageDataset(
            name=self.name, images=obj["images"],
            labels={t: obj[f"labels/{t}"] for t in tasks}, classes={t: obj[f"classes/{t}"] for t in tasks},
            train_idx=where["train"], test_idx=where["test"],
            val_idx=where["val"] if where["val"] is not None and len(where["val"]) else None,
            default_task=fit[0] if fit else None, private_task=fit[1] if len(fit) > 1 else None,
            meta={"source": str(root), "name": data_name(root), "unsuitable": why, "image_size": self.image_size,
                  "channels": self.channels},
        )

    @classmethod
    def resolve_tasks(cls, data: ImageDataset, target_task: str | None = None,
                      private_task: str | None = None) -> TaskChoice:
        return _tasks_of(data, target_task, private_task)

    def _partition(self, split: list[str] | None, n: int, csv_path: Path) -> dict[str, torch.Tensor | None]:
        """Indices of train / val / test, from the `split` column or a seeded `test_fraction`; before decoding."""
        if split is not None:
            where = {s: torch.tensor([i for i, v in enumerate(split) if v == s], dtype=torch.long) for s in SPLITS}
        else:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
            n_test = max(1, int(round(self.test_fraction * n)))
            where = {"test": perm[:n_test].sort().values, "train": perm[n_test:].sort().values, "val": None}
        if len(where["train"]) == 0 or len(where["test"]) == 0:
            raise BenchError(f"{csv_path}: need at least one train and one test image")
        return where
