"""Settings of the local sandbox, and validation of one request against them."""

from __future__ import annotations

import base64
import dataclasses
import math
import os
import posixpath
from collections.abc import Mapping, Sequence

from torl.sandbox.base import InvalidCode

DEFAULT_PRELOAD = ("math", "cmath", "fractions", "decimal", "itertools", "collections", "functools",
                   "operator", "statistics", "random", "re", "string", "heapq", "bisect", "json",
                   "numpy", "sympy")

# Touch the lazily-initialised parts of the math stack once, in the zygote, so every fork
# starts warm (sympy builds caches and imports submodules on first use).
WARMUP_CODE = """
import numpy, sympy
x = sympy.Symbol('x')
sympy.simplify(sympy.sin(x)**2 + sympy.cos(x)**2); sympy.solve(x**2 - 4, x); sympy.Rational(1, 3) + 1
sympy.factorint(360); sympy.expand((x + 1)**3); sympy.latex(x**2)
numpy.linalg.solve(numpy.eye(2), numpy.ones(2)); numpy.arange(5).sum()
"""


def _default_workers() -> int:
    # Workers mostly wait (on timeouts, on the model); a few more than cores keeps the CPUs busy
    # while one worker sits on a 10 s infinite loop. Each idle worker costs ~100 MB, mostly shared.
    return min(32, max(4, 2 * (os.cpu_count() or 1)))


@dataclasses.dataclass
class SandboxConfig:
    """Limits and pool settings. Per-call `timeout`/`memory_mb` override the defaults up to the caps."""

    timeout_s: float = 10.0            # default wall-clock limit per execution (CPU limit follows it)
    memory_mb: int = 1024              # default address-space budget on top of the warm interpreter
    max_timeout_s: float = 300.0       # per-call timeout must be in (0, max_timeout_s]
    max_memory_mb: int = 8192          # per-call memory_mb must be in [32, max_memory_mb]
    max_output_bytes: int = 1_000_000  # stdout+stderr hard cap; past it the execution is killed
    max_code_bytes: int = 256_000      # larger code is rejected (InvalidCode)
    max_processes: int = 32            # processes+threads per execution
    max_open_files: int = 256
    max_file_size_mb: int = 64         # largest single file the code may write
    scratch_mb: int = 256              # private tmpfs /tmp per worker (memory-backed)
    workers: int = dataclasses.field(default_factory=_default_workers)
    max_sessions: int = 16             # each open session pins one extra worker process
    isolation: str = "bwrap"           # "bwrap" (default) or "none": UNISOLATED, opt-out only
    allow_host_root: bool = False      # as root, workers run as unprivileged host uids; True keeps them
                                       # host root (unsafe: /proc/sys, keyrings, root's files), opt-out only
    max_fetch_bytes: int = 16 * 2**20  # files copied back out of a run (fetch_files), all together
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    warmup: str = WARMUP_CODE
    start_timeout_s: float = 60.0      # a worker must be ready within this (imports included)

    def __post_init__(self) -> None:
        if self.isolation not in ("bwrap", "none"):
            raise ValueError(f"isolation must be 'bwrap' or 'none', got {self.isolation!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.max_sessions < 0:
            raise ValueError(f"max_sessions must be >= 0, got {self.max_sessions}")
        self.preload = tuple(self.preload)
        self.check_limits(self.timeout_s, self.memory_mb)

    def check_limits(self, timeout: float | None, memory_mb: int | None) -> tuple[float, int]:
        """Resolve per-call limits (None = default); raise InvalidCode for absurd values."""
        timeout = self.timeout_s if timeout is None else timeout
        memory_mb = self.memory_mb if memory_mb is None else memory_mb
        number = finite_float(timeout)
        if number is None or not 0 < number <= self.max_timeout_s:
            raise InvalidCode(f"timeout must be a number of seconds in (0, {self.max_timeout_s:g}], got {timeout!r}")
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or not 32 <= memory_mb <= self.max_memory_mb:
            raise InvalidCode(f"memory_mb must be an integer in [32, {self.max_memory_mb}], got {memory_mb!r}")
        return float(timeout), memory_mb

    def check_code(self, code: object) -> str:
        """The code as text, or InvalidCode naming what is wrong with it."""
        if isinstance(code, (bytes, bytearray, memoryview)):
            raise InvalidCode("code must be str (decoded UTF-8 text), got bytes: decode it first")
        if not isinstance(code, str):
            raise InvalidCode(f"code must be str, got {type(code).__name__}")
        if "\x00" in code:
            raise InvalidCode("code contains a NUL character, which Python source cannot hold: strip it")
        try:
            size = len(code.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise InvalidCode(f"code is not valid Unicode text ({e.reason} at index {e.start}): "
                              "decode the model output with errors='replace'") from None
        if size > self.max_code_bytes:
            raise InvalidCode(f"code is {size} bytes, over the limit of {self.max_code_bytes} "
                              "(SandboxConfig.max_code_bytes)")
        return code

    def check_io(self, stdin: object, files: object, fetch_files: object) -> dict:
        """`encode_io`'s fields, within this sandbox's limits; InvalidCode otherwise."""
        fields = encode_io(stdin, files, fetch_files)
        if fields.get("stdin"):
            self.check_code(fields["stdin"])  # the same bounds as code: no NUL, at most max_code_bytes
        if "files" in fields:
            total = sum(len(data) for data in files.values())
            if total > self.max_file_size_mb * 2**20:
                raise InvalidCode(f"files hold {total} bytes, over the limit of {self.max_file_size_mb} MB "
                                  "(SandboxConfig.max_file_size_mb)")
        if "fetch_files" in fields:
            fields["max_fetch_bytes"] = self.max_fetch_bytes
        return fields

    def worker_limits(self) -> dict:
        """The caps the worker applies to every child (per-call values come with each request)."""
        return {"max_output_bytes": self.max_output_bytes, "max_processes": self.max_processes,
                "max_open_files": self.max_open_files, "max_file_size_mb": self.max_file_size_mb,
                "max_timeout_s": self.max_timeout_s, "max_memory_mb": self.max_memory_mb}


def check_utf8(field: str, text: str) -> None:
    """InvalidCode unless `text` is valid Unicode text (no lone surrogates): JSON cannot carry it
    otherwise. One wording for the local sandbox, the remote client and the server."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidCode(f"{field} is not valid UTF-8 ({e.reason} at index {e.start}); fix the text") from None


def finite_float(value: object) -> float | None:
    """`value` as a finite float, or None when it is not a number or not finite (nan, 1e400, 10**400)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) else None


def encode_io(stdin: object, files: object, fetch_files: object) -> dict:
    """A run's stdin, input files and files to fetch as request fields (files base64-encoded,
    paths normalized, empty ones left out); InvalidCode names the first bad one. Shared by the
    local sandbox and the remote client, so both refuse the same requests in the same words."""
    fields: dict = {}
    if stdin is not None:
        if not isinstance(stdin, str):
            raise InvalidCode(f"stdin must be a str (or None), got {type(stdin).__name__}")
        check_utf8("stdin", stdin)
        fields["stdin"] = stdin
    if files:
        if not isinstance(files, Mapping):
            raise InvalidCode(f"files must be a mapping {{path: bytes}}, got {type(files).__name__}")
        encoded = {}
        for path, content in files.items():
            if not isinstance(path, str) or not isinstance(content, (bytes, bytearray, memoryview)):
                raise InvalidCode(f"files must map str paths to bytes, got {type(path).__name__}: "
                                  f"{type(content).__name__} (encode text first)")
            norm = check_relative_path(path)
            if norm in encoded:
                raise InvalidCode(f"files: {path!r} names the same file as another path given ({norm!r}): "
                                  "give each file once")
            encoded[norm] = base64.b64encode(content).decode("ascii")
        _check_no_collisions(encoded)
        fields["files"] = encoded
    if isinstance(fetch_files, (str, bytes)):  # a lone path would be sent as one path per character
        raise InvalidCode(f"fetch_files must be a sequence of paths, got the {type(fetch_files).__name__} "
                          f"{fetch_files[:100]!r}: wrap it in a list")
    if fetch_files:
        if not isinstance(fetch_files, Sequence) or not all(isinstance(path, str) for path in fetch_files):
            raise InvalidCode("fetch_files must be a sequence of str paths")
        fields["fetch_files"] = [check_relative_path(path) for path in fetch_files]
    return fields


def _check_no_collisions(paths: Mapping[str, object]) -> None:
    """InvalidCode when one input file would have to be the directory of another ('a' and 'a/b')."""
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in paths:
                raise InvalidCode(f"files: {parent!r} and {path!r} collide: {parent!r} cannot be both a file "
                                  "and a directory; rename one of them")


def check_relative_path(path: object) -> str:
    """A path inside the run's working directory, normalized; InvalidCode otherwise."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise InvalidCode(f"file paths must be non-empty strings, got {path!r}")
    norm = posixpath.normpath(path)
    if posixpath.isabs(norm) or norm == "." or norm.split("/")[0] == "..":
        raise InvalidCode(f"file path {path!r} must be relative to the run's working directory, without '..'")
    return norm
