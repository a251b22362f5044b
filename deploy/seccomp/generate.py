#!/usr/bin/env python3
"""Writes stockade's two container seccomp profiles (x86_64) from one syscall list.

- deploy/seccomp-stockade.json: for running stockade in a container. An allowlist as strict
  as a container runtime's default (everything below in DENIED fails with EPERM, clone3 with
  ENOSYS so that libc falls back to clone, whose flags a filter can read), except that it lets
  stockade create the namespaces it needs: unshare with only CLONE_NEWUSER, CLONE_NEWNS and
  CLONE_NEWNET; setns into a user or mount namespace; mount and umount2 (bind mounts and
  read-only remounts inside its namespaces). stockade's own filter takes all of these away
  again from every process it confines.
- deploy/podman/seccomp-docker-like.json: what the CI test runs stockade under to show it fails
  closed and says why: the same allowlist without unshare, setns, mount and umount2, and with
  clone's namespace flags (and those four syscalls) allowed only to holders of CAP_SYS_ADMIN,
  the way runtimes' default profiles gate them.

Usage: deploy/seccomp/generate.py [UNISTD_64_H]  (default: the system's asm/unistd_64.h);
run from the repository root. The syscall names come from the kernel headers; the policy
(DENIED, the argument rules) is this file.
"""
import json
import re
import sys

HEADER = sys.argv[1] if len(sys.argv) > 1 else "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"

# Denied by runtime defaults and by stockade's own hardening: kernel and system state,
# other processes' memory, keys, BPF, perf, modules, time, swap, accounting, io_uring (its
# submissions bypass seccomp), handle-based opens, NUMA and personality tricks.
DENIED = {
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
    "delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
    "get_kernel_syms", "get_mempolicy", "init_module", "io_uring_enter",
    "io_uring_register", "io_uring_setup", "ioperm", "iopl", "kcmp", "kexec_file_load",
    "kexec_load", "keyctl", "lookup_dcookie", "mbind", "migrate_pages", "mount_setattr",
    "move_mount", "move_pages", "name_to_handle_at", "nfsservctl", "open_by_handle_at",
    "open_tree", "perf_event_open", "personality", "pivot_root", "process_vm_readv",
    "process_vm_writev", "ptrace", "query_module", "quotactl", "quotactl_fd", "reboot",
    "request_key", "set_mempolicy", "set_mempolicy_home_node", "settimeofday", "swapoff",
    "swapon", "sysfs", "_sysctl", "syslog", "tuxcall", "uselib", "userfaultfd", "ustat",
    "vhangup", "vserver", "afs_syscall", "getpmsg", "putpmsg", "security", "epoll_ctl_old",
    "epoll_wait_old", "lsm_set_self_attr", "clone3",
    # Namespaces and mounts: never allowed outright (see the argument rules below).
    "unshare", "setns", "mount", "umount2", "clone", "chroot",
}

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
# Every namespace flag clone(2) and unshare(2) know: NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
# NEWUSER, NEWPID, NEWNET (and CLONE_NEWTIME, 0x80).
NAMESPACE_FLAGS = 0x7E020000 | 0x80
U64 = (1 << 64) - 1


def names():
    text = open(HEADER).read()
    return sorted(set(re.findall(r"#define __NR_(\w+)\s+\d+", text)))


def masked_eq(index, mask, value=0):
    return {"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}


def profile(stockade):
    allowed = [n for n in names() if n not in DENIED]
    rules = [
        {"names": allowed, "action": "SCMP_ACT_ALLOW"},
        # clone without namespace flags (fork, threads): allowed to everyone.
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [masked_eq(0, NAMESPACE_FLAGS)]},
        # clone3's flags are behind a pointer: ENOSYS, libc falls back to clone.
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    ]
    if stockade:
        rules += [
            # unshare of the user, mount and network namespaces only.
            {"names": ["unshare"], "action": "SCMP_ACT_ALLOW",
             "args": [masked_eq(0, U64 & ~(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET))]},
            # setns into a user or mount namespace (stockade passes the type).
            {"names": ["setns"], "action": "SCMP_ACT_ALLOW", "args": [masked_eq(1, U64, CLONE_NEWUSER)]},
            {"names": ["setns"], "action": "SCMP_ACT_ALLOW", "args": [masked_eq(1, U64, CLONE_NEWNS)]},
            {"names": ["mount", "umount2"], "action": "SCMP_ACT_ALLOW"},
        ]
    else:
        rules += [
            {"names": ["clone", "unshare", "setns", "mount", "umount2"],
             "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        ]
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []}],
        "syscalls": rules,
    }


for path, stockade in [("deploy/seccomp-stockade.json", True),
                       ("deploy/podman/seccomp-docker-like.json", False)]:
    with open(path, "w") as f:
        json.dump(profile(stockade), f, indent=1)
        f.write("\n")
