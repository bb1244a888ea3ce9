"""The seccomp filter every sandboxed process runs under (compiled with libseccomp, loaded by bwrap).

A denylist of system calls that model-written Python never needs and that widen the kernel
surface or reach state outside the run: keyrings, new namespaces, mounts, io_uring, ptrace and
cross-process memory access, bpf/perf, module and kexec loading. Calls that act on *another*
process's scheduling or limits (`setpriority`, `prlimit64`, `sched_set*`, `ioprio_set` with a
pid other than 0) are refused too: the worker runs as the same uid as the code, and without
this a run could renice or shrink the limits of the worker that serves the next run.
Everything else is allowed, so numpy, sympy and subprocesses work as usual. System calls of
another architecture (x86's 32-bit entry points on x86_64) kill the process, libseccomp's
default, so the filter cannot be bypassed through them.

Socket families are an allow-list: `socket` and `socketpair` may create AF_UNIX, AF_INET and
AF_INET6 sockets only (inside an empty network namespace, so loopback at most). Every other family
is refused with EAFNOSUPPORT, as if the kernel lacked it: AF_VSOCK has no network namespace at all
(it would share the VM's vsock ports and reach the hypervisor), AF_NETLINK and AF_PACKET widen
the kernel surface, and model code needs none of them. inotify is refused too: on the read-only
host trees it would show the host's own file activity.

Where the host gives no memory cgroup, `memfd_create` and SysV `shmget` are refused as well:
they pin memory that RLIMIT_AS does not count (see cgroups.py).
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile

# Refused with EPERM, whatever the arguments.
DENIED = (
    "keyctl", "add_key", "request_key",                                    # host keyrings
    "unshare", "setns",                                                     # new or foreign namespaces
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr",
    "io_uring_setup", "io_uring_enter", "io_uring_register",                # a second syscall path
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",       # other processes' memory/fds
    "bpf", "perf_event_open", "userfaultfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "syslog", "quotactl", "lookup_dcookie", "open_by_handle_at",
    "name_to_handle_at", "fanotify_init", "iopl", "ioperm",
    "inotify_init", "inotify_init1", "inotify_add_watch",                  # host file activity
)
ALLOWED_SOCKET_FAMILIES = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6
_FAMILY_LIMIT = 64  # above every AF_* the kernel knows (AF_MAX is 46 in 6.x); all larger are refused
# Refused unless their first argument (the target pid) is 0, i.e. the calling process itself
# (prlimit64 too, when it sets limits: see _filter).
SELF_ONLY = ("sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr")
# Refused only where no memory cgroup bounds what they pin.
PINNING = ("memfd_create", "shmget")

_CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                          0x40000000, 0x00000080)  # NEWNS CGROUP UTS IPC USER PID NET TIME
_PRIO_USER = 2
_IOPRIO_WHO_USER = 3


def _filter(*, block_pinning: bool):
    import pyseccomp as sc

    f = sc.SyscallFilter(sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    for name in DENIED + (PINNING if block_pinning else ()):
        f.add_rule(deny, name)
    for name in SELF_ONLY:
        f.add_rule(deny, name, sc.Arg(0, sc.NE, 0))
    # Reading another process's limits (prlimit64 with no new limit) is harmless, and psutil does it.
    f.add_rule(deny, "prlimit64", sc.Arg(0, sc.NE, 0), sc.Arg(2, sc.NE, 0))
    f.add_rule(deny, "setpriority", sc.Arg(0, sc.EQ, _PRIO_USER))
    f.add_rule(deny, "setpriority", sc.Arg(1, sc.NE, 0))
    f.add_rule(deny, "ioprio_set", sc.Arg(0, sc.EQ, _IOPRIO_WHO_USER))
    f.add_rule(deny, "ioprio_set", sc.Arg(1, sc.NE, 0))
    for flag in _CLONE_NAMESPACE_FLAGS:
        f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # An allow-list of families, written as "refuse each other value": the kernel reads the
    # family as an int, and a 64-bit value with high bits set is refused by the >= rule.
    refuse_family = sc.ERRNO(errno.EAFNOSUPPORT)
    for name in ("socket", "socketpair"):
        for family in range(_FAMILY_LIMIT):
            if family not in ALLOWED_SOCKET_FAMILIES:
                f.add_rule(refuse_family, name, sc.Arg(0, sc.EQ, family))
        f.add_rule(refuse_family, name, sc.Arg(0, sc.GE, _FAMILY_LIMIT))
    # clone3 passes its flags in memory, which seccomp cannot read: ENOSYS makes glibc use clone.
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    return f


@functools.cache
def compiled(*, block_pinning: bool) -> bytes:
    """The filter as the BPF program bwrap's `--seccomp FD` reads; ImportError/OSError if
    libseccomp is missing."""
    with tempfile.TemporaryFile() as out:
        _filter(block_pinning=block_pinning).export_bpf(out)
        out.seek(0)
        return out.read()


def program_fd(*, block_pinning: bool) -> int:
    """A fresh fd positioned at the start of the compiled program, for one bwrap start."""
    fd = os.memfd_create("torl-seccomp", os.MFD_CLOEXEC)
    os.write(fd, compiled(block_pinning=block_pinning))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
