"""Per-worker cgroups: a process-count bound (`pids`) and a bound on all memory a run can pin.

RLIMIT_AS caps a process's address space, but not what it can pin outside it: memfd files,
tmpfs inodes, SysV shared memory, page-cache pages of its own files. The memory controller
charges all of those to the cgroup of the process that created them, so a memory cgroup per
worker bounds every kind of memory a run holds. RLIMIT_NPROC is kept as well, but the pids
controller is the bound that also holds for processes started by a root torl.

Socket buffers are kernel memory a run can pin too (loopback TCP buffers can grow to gigabytes,
up to the host-wide `tcp_mem`). cgroup v2 charges them to `memory.max` by default. cgroup v1 does
not: there they have a counter of their own, `memory.kmem.tcp.limit_in_bytes`, which is only
active once written, so it is written when the cgroup is made (before the worker starts, since
sockets are charged to the cgroup they were created in from then on) and set to the run's bound
with each memory limit, to the run's own budget (the worker holds no TCP sockets). A run can thus
hold at most its limit in ordinary memory and, on v1, its memory_mb again in socket buffers. Where v1 lacks that file, `socket_memory_bounded` is False.

Both cgroup v1 (one hierarchy per controller, as in many GPU containers) and v2 (one unified
hierarchy, the controllers delegated to our own cgroup) are supported. Where a controller is
missing or not writable, `WorkerCgroups.missing` says so and the caller decides (isolation.py
falls back to blocking memfd/SysV shm with seccomp, see there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

from torl.errors import CgroupError

_PARENT_NAME = "torl-sandbox"


@dataclasses.dataclass(frozen=True)
class _Hierarchy:
    """Where we may create child cgroups for one controller, and how its files are named."""

    controller: str
    parent: Path          # the directory our per-worker cgroups go into
    v2: bool


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, options) of the cgroup file systems."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                found.append((parts[1], parts[2], set(parts[3].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Our own cgroup per controller ('' key: the v2 unified one), from /proc/self/cgroup."""
    own: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                own[name] = path
    return own


def _find(controller: str) -> _Hierarchy | None:
    own = _own_paths()
    mounts = _mounts()
    for mount, kind, options in mounts:  # v1: a hierarchy with this controller
        if kind == "cgroup" and controller in options:
            base = Path(mount) / own.get(controller, "/").lstrip("/")
            for candidate in (base, Path(mount)):
                if (candidate / "cgroup.procs").exists() and os.access(candidate, os.W_OK):
                    return _Hierarchy(controller, candidate / _PARENT_NAME, v2=False)
    for mount, kind, _ in mounts:  # v2: our cgroup must delegate the controller to children
        if kind == "cgroup2":
            base = Path(mount) / own.get("", "/").lstrip("/")
            with contextlib.suppress(OSError):
                if controller in (base / "cgroup.subtree_control").read_text().split() \
                        and os.access(base, os.W_OK):
                    return _Hierarchy(controller, base, v2=True)
    return None


@dataclasses.dataclass
class WorkerCgroups:
    """The cgroups of one worker: enter them before exec, set the memory bound per run."""

    name: str
    dirs: dict[str, Path]                  # controller -> its cgroup directory for this worker
    v2: dict[str, bool]
    missing: tuple[str, ...] = ()

    @property
    def has_memory(self) -> bool:
        return "memory" in self.dirs

    @property
    def socket_memory_bounded(self) -> bool:
        """Socket buffers count against the memory bound (v2), or have a bound of their own (v1)."""
        if not self.has_memory:
            return False
        return self.v2["memory"] or (self.dirs["memory"] / _V1_TCP_LIMIT).exists()

    def enter(self) -> None:
        """Move the *calling* process in. Runs in a preexec_fn: plain os calls only."""
        for path in dict.fromkeys(self.dirs.values()):  # v2: one directory for both
            fd = os.open(str(path / "cgroup.procs"), os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def set_memory_limit(self, limit_bytes: int, socket_bytes: int | None = None) -> None:
        """Bound everything the worker's processes hold in memory (swap included, where set);
        on v1, socket buffers to socket_bytes (default: limit_bytes)."""
        path = self.dirs["memory"]
        if self.v2["memory"]:
            _write(path / "memory.max", str(limit_bytes))
            with contextlib.suppress(CgroupError):  # no swap accounting on this host: nothing to bound
                _write(path / "memory.swap.max", "0")
        else:
            # v1 wants memsw >= limit at every moment: raise memsw first, or lower it after.
            memsw = path / "memory.memsw.limit_in_bytes"
            with contextlib.suppress(CgroupError):
                _write(memsw, str(limit_bytes))
            _write(path / "memory.limit_in_bytes", str(limit_bytes))
            with contextlib.suppress(CgroupError):
                _write(memsw, str(limit_bytes))
            if (path / _V1_TCP_LIMIT).exists():
                _write(path / _V1_TCP_LIMIT, str(limit_bytes if socket_bytes is None else socket_bytes))

    def memory_usage(self) -> int:
        path = self.dirs["memory"]
        name = "memory.current" if self.v2["memory"] else "memory.usage_in_bytes"
        return int((path / name).read_text())

    def oom_kills(self) -> int:
        """How many processes the kernel has killed for this cgroup's memory bound so far."""
        path = self.dirs["memory"]
        name = "memory.events" if self.v2["memory"] else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in (path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def remove(self) -> bool:
        """Remove the (empty) cgroups; False while processes are still inside."""
        gone = True
        for path in dict.fromkeys(self.dirs.values()):
            with contextlib.suppress(FileNotFoundError):
                try:
                    path.rmdir()
                except OSError:
                    gone = False
        return gone


_V1_TCP_LIMIT = "memory.kmem.tcp.limit_in_bytes"
_V1_TCP_START = 64 * 2**20  # until the first run sets the real bound: the worker itself needs no TCP


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise CgroupError(f"cannot write {value!r} to {path}: {e}") from None


def available() -> dict[str, bool]:
    """Which of the controllers torl uses this process can delegate to its workers."""
    return {c: _find(c) is not None for c in ("pids", "memory")}


def create(name: str, *, max_pids: int) -> WorkerCgroups:
    """Create the worker's pids and memory cgroups where available; record the missing ones."""
    dirs, v2, missing = {}, {}, []
    for controller in ("pids", "memory"):
        hierarchy = _find(controller)
        if hierarchy is None:
            missing.append(controller)
            continue
        path = hierarchy.parent / name
        try:
            hierarchy.parent.mkdir(exist_ok=True)
            path.mkdir(exist_ok=True)
        except OSError as e:
            raise CgroupError(f"cannot create the {controller} cgroup {path}: {e}") from None
        dirs[controller], v2[controller] = path, hierarchy.v2
    cgroups = WorkerCgroups(name, dirs, v2, tuple(missing))
    if "pids" in dirs:
        _write(dirs["pids"] / "pids.max", str(max_pids))
    if "memory" in dirs and not v2["memory"] and (dirs["memory"] / _V1_TCP_LIMIT).exists():
        _write(dirs["memory"] / _V1_TCP_LIMIT, str(_V1_TCP_START))  # turns v1 socket accounting on
    return cgroups


def remove_stale() -> None:
    """Remove empty worker cgroups left by torl processes that died without cleaning up."""
    for controller in ("pids", "memory"):
        hierarchy = _find(controller)
        if hierarchy is None or not hierarchy.parent.is_dir():
            continue
        with contextlib.suppress(OSError):
            for child in hierarchy.parent.iterdir():
                owner = child.name.split("-", 1)[0]
                if child.is_dir() and owner.isdigit() and not Path(f"/proc/{owner}").exists():
                    with contextlib.suppress(OSError):
                        child.rmdir()
