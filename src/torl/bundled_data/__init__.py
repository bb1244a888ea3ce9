"""Data that ships inside the package: six math benchmarks and the MATH training split.

A clone (or an installed wheel) has them, so evaluation, decontamination and the GPU recipes work
offline with nothing beside the repository. `SOURCES.md` says where each file comes from and under
which licence; `SHA256SUMS` holds their checksums, checked by `verified` whenever torl reads one,
so an edited or truncated copy stops the run instead of changing its numbers quietly.

Only `torl.errors` is imported: eval, data and train all read from here.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from torl.errors import UserError

ROOT = Path(__file__).resolve().parent
BENCHMARKS_DIR = ROOT / "benchmarks"
MATH_TRAIN = ROOT / "train" / "math_train.jsonl.gz"
BENCHMARK_NAMES = ("aime24", "amc23", "math500", "minerva_math", "olympiadbench", "gsm8k")
DATA_DIR_ENV = "TORL_DATA_DIR"  # a folder of <benchmark>.jsonl files used instead of the shipped ones


def benchmark_dir(override: str | Path | None = None) -> Path:
    """Where benchmarks named without a path are read: `override` (a command's --data-dir or
    --benchmark-dir), else ``$TORL_DATA_DIR``, else the shipped folder."""
    if override:
        return Path(override)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    return BENCHMARKS_DIR


@functools.cache
def expected_sha256() -> dict[str, str]:
    """`SHA256SUMS` as {path relative to this folder: hex digest}."""
    sums = {}
    for line in (ROOT / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name:
            sums[name.strip()] = digest.strip()
    return sums


@functools.cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified(path: str | Path) -> Path:
    """`path`, after checking it against `SHA256SUMS` when it is one of the shipped files.

    Any other file is returned unchecked (a user's own data has no recorded checksum).
    """
    path = Path(path)
    try:
        name = path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path
    want = expected_sha256().get(name)
    if want is None or not path.is_file():
        return path
    stat = path.stat()
    got = _sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)
    if got != want:
        raise UserError(f"shipped data file {path} has sha256 {got[:12]}…, not {want[:12]}… as recorded in "
                        f"{ROOT / 'SHA256SUMS'}; restore it (git checkout -- {path}, or reinstall torl)")
    return path
