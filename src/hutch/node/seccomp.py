"""hutch's seccomp profile: allow by default, deny a list of dangerous system calls.

A deny list rather than Docker's allow list, on purpose: a sandbox runs whatever an agent
installs, and an allow list that is too tight fails in obscure ways (a new glibc calling a
new syscall). Most of what Docker's allow list keeps out is already refused by the missing
capabilities (CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_TIME...); the list below repeats those
as a second wall and adds the calls that need *no* capability but widen the kernel's attack
surface (user namespaces, io_uring, userfaultfd, bpf, perf, keyrings). Choices, including
what stays allowed (ptrace), are explained in ``docs/runtime.md``.

runc installs the profile after it has mounted the root filesystem and pivoted into it, so
denying ``mount`` or ``pivot_root`` does not break container start.
"""

from __future__ import annotations

import errno
import platform
from typing import Any, Final

from hutch.shared.errors import InvalidArgumentError

#: CLONE_NEWUSER from <linux/sched.h>.
CLONE_NEWUSER: Final = 0x10000000

#: Denied with EPERM, whatever the arguments. Grouped by why.
DENIED_SYSCALLS: Final[dict[str, tuple[str, ...]]] = {
    "load or replace the kernel": (
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "create_module",
        "query_module",
        "get_kernel_syms",
        "reboot",
    ),
    "host storage and accounting": ("swapon", "swapoff", "acct", "quotactl", "quotactl_fd"),
    "mounts and namespaces (a sandbox gets its mounts from the runtime)": (
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "move_mount",
        "open_tree",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
        "setns",
    ),
    "kernel attack surface reachable without capabilities": (
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "keyctl",
        "add_key",
        "request_key",
    ),
    "file handles bypass the mount namespace (the 'shocker' escape)": (
        "open_by_handle_at",
        "name_to_handle_at",
    ),
    "hardware and the clock are the host's": (
        "iopl",
        "ioperm",
        "settimeofday",
        "stime",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
    ),
    "obsolete or host-introspection calls": (
        "lookup_dcookie",
        "nfsservctl",
        "vm86",
        "vm86old",
        "uselib",
        "ustat",
        "sysfs",
        "_sysctl",
        "syslog",
        "fanotify_init",
    ),
}

#: The ABIs the filter covers, per host machine (as Docker's profile): a syscall through an
#: ABI not listed is killed by the kernel, so a 32-bit binary cannot sidestep the list.
ARCHITECTURES: Final[dict[str, tuple[str, ...]]] = {
    "x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
}


def denied_syscall_names() -> list[str]:
    """Every syscall name the profile refuses unconditionally, sorted."""
    return sorted({name for names in DENIED_SYSCALLS.values() for name in names})


def default_profile(*, machine: str | None = None) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object for every sandbox on a ``machine`` host.

    ``machine`` is ``platform.machine()`` (the default). A fresh dict on every call, so
    callers may adjust their copy.
    """
    machine = machine or platform.machine()
    if machine not in ARCHITECTURES:
        raise InvalidArgumentError(f"no seccomp architectures known for {machine!r}")
    new_user = {
        "index": 0,
        "value": CLONE_NEWUSER,
        "valueTwo": CLONE_NEWUSER,
        "op": "SCMP_CMP_MASKED_EQ",
    }
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": list(ARCHITECTURES[machine]),
        "syscalls": [
            {
                "names": denied_syscall_names(),
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": errno.EPERM,
            },
            # User namespaces need no capability and hand a process CAP_SYS_ADMIN over a
            # namespace of its own: the most common door to kernel bugs. Deny creating one.
            {
                "names": ["unshare", "clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": errno.EPERM,
                "args": [new_user],
            },
            # clone3 passes its flags in memory, out of seccomp's sight. ENOSYS makes glibc
            # fall back to clone(2), whose flags the rule above can see (as Docker does).
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
        ],
    }
