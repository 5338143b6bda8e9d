"""The seccomp profile's shape (its effect is tested in tests/integration/runtime)."""

from __future__ import annotations

import errno

import pytest

from hutch.node.seccomp import CLONE_NEWUSER, default_profile, denied_syscall_names
from hutch.shared.errors import InvalidArgumentError


def test_default_profile_allows_by_default_and_denies_with_eperm():
    profile = default_profile(machine="x86_64")
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    deny = profile["syscalls"][0]
    assert deny["action"] == "SCMP_ACT_ERRNO" and deny["errnoRet"] == errno.EPERM
    assert deny["names"] == denied_syscall_names()


@pytest.mark.parametrize(
    "name",
    [
        "kexec_load",
        "init_module",
        "reboot",
        "swapoff",
        "mount",
        "bpf",
        "userfaultfd",
        "keyctl",
        "open_by_handle_at",
        "setns",
        "io_uring_setup",
        "clock_settime",
        "acct",
    ],
)
def test_default_profile_denies_dangerous_syscall(name):
    assert name in denied_syscall_names()


@pytest.mark.parametrize("name", ["ptrace", "chroot", "clone", "unshare", "execve", "personality"])
def test_default_profile_keeps_syscalls_workloads_need(name):
    assert name not in denied_syscall_names()


def test_default_profile_denies_new_user_namespaces_only():
    rules = default_profile(machine="x86_64")["syscalls"]
    userns = next(r for r in rules if "unshare" in r["names"])
    assert sorted(userns["names"]) == ["clone", "unshare"]
    assert userns["args"] == [
        {"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}
    ]
    clone3 = next(r for r in rules if r["names"] == ["clone3"])
    assert clone3["errnoRet"] == errno.ENOSYS  # so glibc falls back to the filterable clone


def test_default_profile_returns_fresh_copies():
    a = default_profile(machine="x86_64")
    a["syscalls"].clear()
    assert default_profile(machine="x86_64")["syscalls"]


def test_default_profile_per_machine():
    assert default_profile(machine="aarch64")["architectures"] == [
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
    ]
    with pytest.raises(InvalidArgumentError):
        default_profile(machine="sparc")
