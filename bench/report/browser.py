"""A headless Chromium, when one is installed: a screenshot of the report page.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.errors import BenchError
from bench.storage import atomic_write_bytes

CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_TIMEOUT_S = 180
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, CHROMIUMS) if path), None)


def run_chromium(page: Path, *flags: str, timeout: float = BROWSER_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Headless Chromium on the local file `page` with `flags`; BenchError when there is none or it fails.

    --no-sandbox: Chromium refuses to start as root otherwise (CI containers), and the page is our own
    static file with no script. A throwaway profile keeps the user's (and parallel runs') apart.
    """
    browser = find_chromium()
    if browser is None:
        raise BenchError(f"no Chromium on PATH (looked for {', '.join(CHROMIUMS)}); install it, e.g. "
                         "apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile:
        cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", *flags, Path(page).resolve().as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "LANG": "C.UTF-8"})
        except subprocess.TimeoutExpired:
            raise BenchError(f"{browser} did not finish within {timeout:g} s on {page}") from None
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise BenchError(f"{browser} failed on {page} (exit {proc.returncode}): {tail}")
    return proc


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 1700,
               flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The top `width` x `height` pixels of `page` as a PNG at `png` (written atomically); Chromium's run.

    `flags`: more Chromium switches, e.g. ("--enable-logging=stderr", "--v=0") to see console messages.
    """
    with tempfile.TemporaryDirectory(prefix="bench-shot-") as tmp:
        shot = Path(tmp) / "shot.png"
        proc = run_chromium(page, f"--window-size={width},{height}", f"--screenshot={shot}", *flags)
        data = shot.read_bytes() if shot.is_file() else b""
    if not data.startswith(PNG_SIGNATURE):
        raise BenchError(f"Chromium wrote no PNG screenshot of {page}: {proc.stderr.strip()[-300:]}")
    atomic_write_bytes(Path(png), data)
    return proc
