"""The seccomp program, run through a small classic-BPF interpreter: what each syscall gets.

The attack suite checks the filter end to end in every tier; this pins down its logic (jump offsets
included) for every syscall it names, without a kernel in the loop."""

import struct

import pytest

from sandbox.zygote import (
    AND,
    AUDIT_ARCH_X86_64,
    DENIED,
    JEQ,
    JGE,
    JSET,
    LD_W_ABS,
    RET,
    RET_ALLOW,
    RET_KILL,
    SYS_CLONE,
    SYS_CLONE3,
    SYS_FORK,
    SYS_KILL,
    SYS_SOCKETPAIR,
    SYS_TGKILL,
    SYS_VFORK,
    seccomp_program,
)

OWN_PID = 4242
EPERM_RET, ENOSYS_RET = 0x00050000 | 1, 0x00050000 | 38


def run_filter(prog, nr, args=(), arch=AUDIT_ARCH_X86_64):
    """Evaluate `prog` on struct seccomp_data {nr, arch, ip, args[6]} (little-endian, x86_64)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    acc, pc = 0, 0
    for _ in range(len(prog) + 1):  # classic BPF only jumps forward: it cannot run longer than this
        code, jt, jf, k = prog[pc]
        if code == LD_W_ABS:
            (acc,) = struct.unpack_from("<I", data, k)
            pc += 1
        elif code == AND:
            acc &= k
            pc += 1
        elif code in (JEQ, JGE, JSET):
            taken = acc == k if code == JEQ else acc >= k if code == JGE else bool(acc & k)
            pc += 1 + (jt if taken else jf)
        elif code == RET:
            return k
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")
    raise AssertionError("the program ran off its end")


@pytest.fixture(params=[False, True], ids=["may-fork", "no-fork"])
def no_fork(request):
    return request.param


def test_every_denied_syscall_gets_eperm(no_fork):
    prog = seccomp_program(OWN_PID, no_fork)
    assert len(prog) < 256  # jump offsets are 8 bits
    for name, nr in DENIED.items():
        assert run_filter(prog, nr) == EPERM_RET, name


def test_ordinary_syscalls_are_allowed(no_fork):
    prog = seccomp_program(OWN_PID, no_fork)
    for nr in (0, 1, 2, 3, 9, 12, 60, 231, 257, 262):  # read write open close mmap brk exit exit_group openat newfstatat
        assert run_filter(prog, nr) == RET_ALLOW, nr


def test_wrong_architecture_is_killed_and_x32_refused():
    prog = seccomp_program(OWN_PID, False)
    assert run_filter(prog, 0, arch=0x40000003) == RET_KILL  # i386
    assert run_filter(prog, 0x40000000 | 42) == EPERM_RET  # x32 connect


def test_no_sockets_and_only_stream_pairs(no_fork):
    prog = seccomp_program(OWN_PID, no_fork)
    for family in (1, 2, 10, 16, 17):  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET
        assert run_filter(prog, DENIED["socket"], (family, 1, 0)) == EPERM_RET
    assert run_filter(prog, SYS_SOCKETPAIR, (1, 1, 0)) == RET_ALLOW  # SOCK_STREAM
    assert run_filter(prog, SYS_SOCKETPAIR, (1, 1 | 0x80000 | 0x800, 0)) == RET_ALLOW  # with CLOEXEC | NONBLOCK
    for kind in (2, 5, 2 | 0x80000):  # SOCK_DGRAM, SOCK_SEQPACKET: could address a host path
        assert run_filter(prog, SYS_SOCKETPAIR, (1, kind, 0)) == EPERM_RET


def test_no_new_namespaces_through_clone(no_fork):
    prog = seccomp_program(OWN_PID, no_fork)
    thread = 0x10000 | 0x100 | 0x800 | 0x400 | 0x200  # CLONE_THREAD | VM | SIGHAND | FILES | FS
    assert run_filter(prog, SYS_CLONE, (thread,)) == RET_ALLOW
    for flag in (0x80, 0x20000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        assert run_filter(prog, SYS_CLONE, (thread | flag,)) == EPERM_RET, hex(flag)
        assert run_filter(prog, SYS_CLONE, (0x11 | flag,)) == EPERM_RET, hex(flag)


def test_signals_only_to_itself():
    prog = seccomp_program(OWN_PID, False)
    for nr in (SYS_KILL, SYS_TGKILL):
        assert run_filter(prog, nr, (OWN_PID, 9)) == RET_ALLOW
        assert run_filter(prog, nr, (0, 9)) == RET_ALLOW  # its own process group
        for target in (1, OWN_PID + 1, 0xFFFFFFFF):  # init, a neighbour, -1 (everything)
            assert run_filter(prog, nr, (target, 9)) == EPERM_RET


def test_forking_only_where_a_uid_bounds_it():
    may, never = seccomp_program(OWN_PID, False), seccomp_program(OWN_PID, True)
    for nr in (SYS_FORK, SYS_VFORK):
        assert run_filter(may, nr) == RET_ALLOW and run_filter(never, nr) == EPERM_RET
    assert run_filter(may, SYS_CLONE, (0x11,)) == RET_ALLOW and run_filter(never, SYS_CLONE, (0x11,)) == EPERM_RET
    assert run_filter(never, SYS_CLONE, (0x10000 | 0x100,)) == RET_ALLOW  # a thread
    assert run_filter(may, SYS_CLONE3) == ENOSYS_RET == run_filter(never, SYS_CLONE3)
