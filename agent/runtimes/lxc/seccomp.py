"""The seccomp deny list every container runs under (LXC's policy format, version 2).

At least as strict as Docker's default profile, written as a deny list
because LXC's format is: what Docker refuses a container without extra
capabilities is refused here, plus what the issue of sandbox escapes named
(io_uring, userfaultfd, the new mount API). Namespace creation is refused
whatever the call (``unshare``, ``setns``, ``clone`` with a namespace flag;
``clone3``, whose flags a filter cannot read, answers ENOSYS so libc falls
back to ``clone``). Refused calls fail with EPERM, as Docker's do.
"""

from __future__ import annotations

# Calls refused outright.
DENIED = (
    # namespaces and the kernel keyring (shared with the host's uid)
    "unshare", "setns", "keyctl", "add_key", "request_key",
    # kernel attack surface a container has no use for
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "fanotify_init", "lookup_dcookie", "kcmp", "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl",
    "personality", "iopl", "ioperm", "vhangup",
    # mounts of any filesystem, old API and new
    "mount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
    "mount_setattr", "quotactl", "quotactl_fd",
    # the kernel itself: modules, kexec, reboot, swap, clock, accounting, logs
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "acct",
    "syslog",
    # handles that bypass path lookup, and other processes' memory
    "open_by_handle_at", "name_to_handle_at", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    # NUMA memory policy and page moves (Docker allows them only with CAP_SYS_NICE, which containers lack)
    "mbind", "set_mempolicy", "get_mempolicy", "migrate_pages", "move_pages",
)  # fmt: skip

# clone(2) flags that make a namespace (<linux/sched.h>).
NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
_EPERM = 1
_ENOSYS = 38


def policy() -> str:
    """The policy file's text."""
    lines = ["2", "denylist", "reject_force_umount", "[all]"]
    lines += [f"{name} errno {_EPERM}" for name in DENIED]
    # LXC's argument rule is [index, value, op, mask]: refused when flags & mask == value.
    lines += [f"clone errno {_EPERM} [0,{flag},SCMP_CMP_MASKED_EQ,{flag}]" for flag in NAMESPACE_FLAGS.values()]
    lines.append(f"clone3 errno {_ENOSYS}")
    return "\n".join(lines) + "\n"
