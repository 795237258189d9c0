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
# Address families allowed for socket(): local and the (empty) IP stack; AF_ALG, AF_RXRPC,
# AF_PACKET and the rest are refused.
ALLOWED_FAMILIES = {1, 2, 10, 16}  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
_CLONE_NEWUSER = 0x10000000


@cache
def seccomp_filter() -> bytes:
    """The compiled BPF program bubblewrap installs before it runs the kernel."""
    import pyseccomp as sc

    rules = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            rules.add_rule(sc.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            log.debug("seccomp.unknown_syscall name=%s", name)
    rules.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # glibc falls back to clone(), checked below
    rules.add_rule(
        sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_NEWUSER, _CLONE_NEWUSER)
    )
    rules.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.GT, max(ALLOWED_FAMILIES)))
    for family in set(range(max(ALLOWED_FAMILIES))) - ALLOWED_FAMILIES:
        rules.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.EQ, family))
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as sink:
        rules.export_bpf(sink)
    with os.fdopen(read_end, "rb") as source:
        return source.read()
