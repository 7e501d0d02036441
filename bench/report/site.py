"""Where a report is written: the site directory, its manifest, and the only files a rebuild may
replace or remove (those the manifest lists). Never inside the results dir's own data.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bench.errors import BenchError
from bench.results.records import run_path
from bench.storage import atomic_write_bytes, check_writable_dir

# Marks an index.html written here.
GENERATOR = "repurpose-bench report"
# What a report wrote into its site, with a digest of each file: the only files a rebuild replaces or removes.
MANIFEST = ".bench-report.json"
# Subdirectories of a results dir the site must never be written into (it would copy onto itself,
# or a JSON in runs/ would become a run record).
PROTECTED = ("runs", "plots", "samples", "tuning")


def run_file(results_dir: Path, run_id: str) -> Path:
    return run_path(results_dir, run_id)


def check_out_dir(results_dir: Path, out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchError(f"--out {out_dir} is a file, not a directory; give a directory for the site "
                         f"(default {results_dir / 'report'})")
    check_writable_dir(out_dir, "--out")
    out, res = out_dir.resolve(), results_dir.resolve()
    inside = [res / d for d in PROTECTED if out == res / d or (res / d) in out.parents]
    if out == res or inside:
        raise BenchError(f"--out {out_dir} would write into the results directory {results_dir}"
                         f"{' (' + str(inside[0]) + ')' if inside else ''}, which the report only reads; give "
                         f"another directory, e.g. {results_dir / 'report'}")
    check_site_dir(out_dir)   # empty, new, or a site a report wrote: refused now, before any work


def write_site(out_dir: Path, page: str, plots: list[Path], run_files: dict[str, Path]) -> Path:
    """Copies first, index.html and the manifest last: a reader never finds a page whose files are not
    there yet. Only files this module wrote (listed in the manifest with the digest of what was written,
    and unchanged since) are ever replaced or removed."""
    index = out_dir / "index.html"
    written = check_site_dir(out_dir)
    copies = {out_dir / "plots" / p.name: p for p in plots}
    copies.update({out_dir / "runs" / f"{run_id}.json": path for run_id, path in run_files.items()})
    contents = {}
    for target, source in copies.items():
        try:
            contents[target] = source.read_bytes()
        except OSError as e:
            raise BenchError(f"cannot read {source}: {e.strerror or e}") from None
    contents[index] = page.encode("utf-8")
    foreign = [t for t in contents if t.exists() and not _ours(out_dir, t, written)]
    if foreign:
        raise BenchError(f"--out {out_dir}: {foreign[0]} exists and was not written by a report; the report never "
                         "replaces a file it did not write: give an empty or new directory")
    for target, data in contents.items():
        if target != index:
            atomic_write_bytes(target, data)
    atomic_write_bytes(index, contents[index])
    manifest = {"generator": GENERATOR,
                "files": {str(t.relative_to(out_dir)): hashlib.sha256(d).hexdigest() for t, d in contents.items()}}
    atomic_write_bytes(out_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    # A plot or run gone from the results leaves no stale copy behind: only files written here, unchanged.
    for name in sorted(set(written) - set(manifest["files"])):
        stale = out_dir / name
        if _ours(out_dir, stale, written):
            try:
                stale.unlink()
            except OSError as e:
                raise BenchError(f"cannot remove the stale copy {stale}: {e.strerror or e}") from None
    return index


def check_site_dir(out_dir: Path) -> dict[str, str]:
    """{file: sha256} of what an earlier report wrote into `out_dir` ({} for a new or empty directory).

    A directory holding anything else (a results dir given as --out by a slip, say) is refused.
    """
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return {}
    manifest = out_dir / MANIFEST
    try:
        recorded = json.loads(manifest.read_text())
        files = recorded["files"]
        if recorded.get("generator") != GENERATOR or not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and ".." not in Path(k).parts and not Path(k).is_absolute()
                for k, v in files.items()):
            raise ValueError("not a report's manifest")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BenchError(f"--out {out_dir} is not empty and holds no site a report wrote ({MANIFEST} missing or "
                         "unreadable); the report writes only into an empty directory or its own site: give "
                         "another --out (a site written by an older version has no manifest: delete it and report "
                         "again)") from None
    return files


def _ours(out_dir: Path, path: Path, written: dict[str, str]) -> bool:
    """`path` is a file an earlier report wrote into `out_dir`, unchanged since."""
    digest = written.get(str(path.relative_to(out_dir)))
    try:
        return digest is not None and path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest
    except OSError:
        return False
