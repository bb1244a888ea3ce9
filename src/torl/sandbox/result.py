"""What one execution of untrusted code produced."""

from __future__ import annotations

import base64
import dataclasses
import enum


class ExecStatus(str, enum.Enum):
    OK = "ok"                          # ran to completion, exit status 0
    ERROR = "error"                    # the code raised or exited non-zero
    TIMEOUT = "timeout"                # wall-clock or CPU-time limit hit
    MEMORY = "memory"                  # memory limit hit (MemoryError or killed for memory)
    OUTPUT_LIMIT = "output_limit"      # wrote more than the hard output cap; killed
    SANDBOX_ERROR = "sandbox_error"    # OUR failure (worker died, isolation broke...), never the code's


# The statuses where the model's CODE failed (the model sees it and may fix it), as plain strings so
# trajectory dicts read from JSON compare too. SANDBOX_ERROR is ours, never the code's: not here.
FAILED_STATUSES = frozenset(s.value for s in (ExecStatus.ERROR, ExecStatus.TIMEOUT, ExecStatus.MEMORY,
                                              ExecStatus.OUTPUT_LIMIT))


@dataclasses.dataclass
class ExecResult:
    status: ExecStatus
    stdout: str = ""
    stderr: str = ""                   # raw stderr, traceback included, kept for debugging
    exit_code: int | None = None       # negative = killed by that signal
    duration_s: float = 0.0
    stdout_truncated: bool = False     # output cut by the sandbox (head + tail kept)
    stderr_truncated: bool = False
    sandbox_message: str = ""          # the sandbox's own note: for SANDBOX_ERROR what went wrong on our
                                       # side; for TIMEOUT/MEMORY/OUTPUT_LIMIT which limit was hit
                                       # ("TimeoutError: execution exceeded 10 s")
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)  # fetch_files found after the run

    @property
    def ok(self) -> bool:
        return self.status is ExecStatus.OK

    def to_dict(self) -> dict:
        """JSON-ready: file contents as base64 text."""
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        d["files"] = {name: base64.b64encode(data).decode("ascii") for name, data in self.files.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ExecResult:
        d = dict(d)
        d["status"] = ExecStatus(d["status"])
        d["files"] = {name: base64.b64decode(data) for name, data in d.get("files", {}).items()}
        return cls(**d)
