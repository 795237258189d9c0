"""The seccomp filter every sandbox runs under: syscalls user code never needs are refused."""

from __future__ import annotations

import errno
import logging
import os
from functools import cache

log = logging.getLogger(__name__)

# Syscalls user code never needs and kernel exploits love (anchors §C.2 and §D row 17).
DENIED_SYSCALLS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "bpf",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "mount",
    "umount2",
    "pivot_root",
    "unshare",
    "setns",
    "chroot",
    "swapon",
    "swapoff",
    "reboot",
    "open_by_handle_at",
    "name_to_handle_at",
    "acct",
    "quotactl",
    "fanotify_init",
    "syslog",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
)
# Kernel-wide or per-uid pools one session could drain for every other (all sessions share the
# sandbox user): AIO contexts (fs.aio-max-nr), inotify instances, POSIX message queues. ENOSYS,
# so libraries fall back to what they do without them.
POOLED_SYSCALLS = (
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    "inotify_init",
    "inotify_init1",
    "mq_open",
    "timer_create",
)
SIGCONT = 18
F_SETSIG = 10
F_SETPIPE_SZ = 1031
PR_SET_PDEATHSIG = 1
LOW32 = 0xFFFF_FFFF  # the kernel reads int arguments as 32 bits: compare only those
CSIGNAL = 0xFF  # clone(): the low byte of the flags is the signal sent at the child's exit
# Where each signal-sending syscall takes its signal number. SIGCONT is refused, or one process
# could undo the host's SIGSTOP of the others between cells; so are real-time signals (32-64),
# which queue without bound against the sandbox user's one RLIMIT_SIGPENDING budget (a session
# could leave none for the others). Every other way to have SIGCONT sent is refused too: a POSIX
# timer (timer_create, whose signal seccomp cannot read), F_SETSIG, PR_SET_PDEATHSIG and a
# clone() exit signal.
_SIGNAL_ARG = {
    "kill": 1,
    "tkill": 1,
    "tgkill": 2,
    "rt_sigqueueinfo": 1,
    "rt_tgsigqueueinfo": 2,
    "pidfd_send_signal": 1,
}
# Address families allowed for socket(): local and the (empty) IP stack; AF_ALG, AF_RXRPC,
# AF_PACKET and the rest are refused.
ALLOWED_FAMILIES = {1, 2, 10, 16}  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
_CLONE_NEWUSER = 0x10000000


@cache
def seccomp_filter() -> bytes:
    """The compiled BPF program bubblewrap installs before it runs the kernel."""
    import pyseccomp as sc

    rules = sc.SyscallFilter(sc.ALLOW)
    # A syscall of another ABI (x32, i386) ends the whole process, not only its thread: a
    # kernel whose main thread died would hold its cell until the time limit.
    rules.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    for name in DENIED_SYSCALLS:
        try:
            rules.add_rule(sc.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            log.debug("seccomp.unknown_syscall name=%s", name)
    for name in POOLED_SYSCALLS:
        try:
            rules.add_rule(sc.ERRNO(errno.ENOSYS), name)
        except (OSError, ValueError, RuntimeError):
            log.debug("seccomp.unknown_syscall name=%s", name)
    refused = sc.ERRNO(errno.EPERM)
    for name, arg in _SIGNAL_ARG.items():
        rules.add_rule(refused, name, sc.Arg(arg, sc.MASKED_EQ, LOW32, SIGCONT))
        rules.add_rule(refused, name, sc.Arg(arg, sc.MASKED_EQ, 0x20, 0x20))  # 32-63
        rules.add_rule(refused, name, sc.Arg(arg, sc.MASKED_EQ, LOW32, 64))
    # Pipe buffers count against a per-uid budget (fs.pipe-user-pages-soft): no growing them.
    rules.add_rule(refused, "fcntl", sc.Arg(1, sc.MASKED_EQ, LOW32, F_SETPIPE_SZ))
    rules.add_rule(refused, "fcntl", sc.Arg(1, sc.MASKED_EQ, LOW32, F_SETSIG))
    rules.add_rule(
        refused,
        "prctl",
        sc.Arg(0, sc.MASKED_EQ, LOW32, PR_SET_PDEATHSIG),
        sc.Arg(1, sc.MASKED_EQ, LOW32, SIGCONT),
    )
    rules.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # glibc falls back to clone(), checked below
    rules.add_rule(refused, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_NEWUSER, _CLONE_NEWUSER))
    rules.add_rule(refused, "clone", sc.Arg(0, sc.MASKED_EQ, CSIGNAL, SIGCONT))
    rules.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.GT, max(ALLOWED_FAMILIES)))
    for family in set(range(max(ALLOWED_FAMILIES))) - ALLOWED_FAMILIES:
        rules.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.EQ, family))
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as sink:
        rules.export_bpf(sink)
    with os.fdopen(read_end, "rb") as source:
        return source.read()
