"""The seccomp filters, run through a small classic-BPF interpreter: what each syscall gets.

A job process has two filters, the slot filter it inherits from the zygote and the job filter it adds,
and the kernel keeps the strictest answer of the two; `job_gets` does the same. The attack suite checks
the filters end to end in every tier; this pins down their logic (jump offsets included) for every
syscall they name, without a kernel in the loop."""

import struct

import pytest

from sandbox.zygote import (
    AND,
    PR_SET_DUMPABLE,
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
    SYS_PRCTL,
    SYS_SOCKETPAIR,
    SYS_TGKILL,
    SYS_VFORK,
    job_filter,
    slot_filter,
    strictest,
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


def job_gets(nr, args=(), no_fork=False, arch=AUDIT_ARCH_X86_64):
    """What a job process's call gets: the strictest answer of its two filters."""
    return strictest(run_filter(slot_filter(), nr, args, arch), run_filter(job_filter(OWN_PID, no_fork), nr, args, arch))


@pytest.fixture(params=[False, True], ids=["may-fork", "no-fork"])
def no_fork(request):
    return request.param


def test_every_denied_syscall_gets_eperm(no_fork):
    assert len(slot_filter()) < 256 and len(job_filter(OWN_PID, no_fork)) < 256  # jump offsets are 8 bits
    for name, nr in DENIED.items():
        assert job_gets(nr, no_fork=no_fork) == EPERM_RET, name


def test_ordinary_syscalls_are_allowed(no_fork):
    for nr in (0, 1, 2, 3, 9, 12, 60, 231, 257, 262):  # read write open close mmap brk exit exit_group openat newfstatat
        assert job_gets(nr, no_fork=no_fork) == RET_ALLOW, nr


def test_wrong_architecture_is_killed_and_x32_refused(no_fork):
    assert job_gets(0, no_fork=no_fork, arch=0x40000003) == RET_KILL  # i386
    assert job_gets(0x40000000 | 42, no_fork=no_fork) == EPERM_RET  # x32 connect
    assert job_gets(0x40000000 | SYS_KILL, (0xFFFFFFFF, 9), no_fork=no_fork) == EPERM_RET  # x32 kill(-1)


def test_the_strictest_answer_wins():
    assert strictest(RET_ALLOW, EPERM_RET) == EPERM_RET == strictest(EPERM_RET, RET_ALLOW)
    assert strictest(EPERM_RET, RET_KILL) == RET_KILL == strictest(RET_ALLOW, RET_KILL)
    assert strictest(RET_ALLOW, RET_ALLOW) == RET_ALLOW


def test_no_sockets_and_only_stream_pairs(no_fork):
    for family in (1, 2, 10, 16, 17):  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET
        assert job_gets(DENIED["socket"], (family, 1, 0), no_fork) == EPERM_RET
    assert job_gets(SYS_SOCKETPAIR, (1, 1, 0), no_fork) == RET_ALLOW  # SOCK_STREAM
    assert job_gets(SYS_SOCKETPAIR, (1, 1 | 0x80000 | 0x800, 0), no_fork) == RET_ALLOW  # with CLOEXEC | NONBLOCK
    for kind in (2, 5, 2 | 0x80000):  # SOCK_DGRAM, SOCK_SEQPACKET: could address a host path
        assert job_gets(SYS_SOCKETPAIR, (1, kind, 0), no_fork) == EPERM_RET


def test_no_new_namespaces_through_clone(no_fork):
    thread = 0x10000 | 0x100 | 0x800 | 0x400 | 0x200  # CLONE_THREAD | VM | SIGHAND | FILES | FS
    assert job_gets(SYS_CLONE, (thread,), no_fork) == RET_ALLOW
    for flag in (0x80, 0x20000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        assert job_gets(SYS_CLONE, (thread | flag,), no_fork) == EPERM_RET, hex(flag)
        assert job_gets(SYS_CLONE, (0x11 | flag,), no_fork) == EPERM_RET, hex(flag)
        assert run_filter(slot_filter(), SYS_CLONE, (0x11 | flag,)) == EPERM_RET, hex(flag)  # nor the zygote


def test_signals_only_to_itself(no_fork):
    for nr in (SYS_KILL, SYS_TGKILL):
        assert job_gets(nr, (OWN_PID, 9), no_fork) == RET_ALLOW
        assert job_gets(nr, (0, 9), no_fork) == RET_ALLOW  # its own process group
        for target in (1, OWN_PID + 1, 0xFFFFFFFF):  # init, a neighbour, -1 (everything)
            assert job_gets(nr, (target, 9), no_fork) == EPERM_RET


def test_forking_only_where_a_uid_bounds_it():
    for nr in (SYS_FORK, SYS_VFORK):
        assert job_gets(nr) == RET_ALLOW and job_gets(nr, no_fork=True) == EPERM_RET
    assert job_gets(SYS_CLONE, (0x11,)) == RET_ALLOW and job_gets(SYS_CLONE, (0x11,), no_fork=True) == EPERM_RET
    assert job_gets(SYS_CLONE, (0x10000 | 0x100,), no_fork=True) == RET_ALLOW  # a thread
    assert job_gets(SYS_CLONE3) == ENOSYS_RET == job_gets(SYS_CLONE3, no_fork=True)


def test_a_job_cannot_change_whether_it_is_dumpable(no_fork):
    """Set before the job filter (the judge: not dumpable; the candidate: dumpable, so that a zygote
    without root can count what it holds), and final; other prctl calls (thread names) stay allowed."""
    assert job_gets(SYS_PRCTL, (PR_SET_DUMPABLE, 0), no_fork) == EPERM_RET
    assert job_gets(SYS_PRCTL, (PR_SET_DUMPABLE, 1), no_fork) == EPERM_RET
    assert job_gets(SYS_PRCTL, (15, 0), no_fork) == RET_ALLOW  # PR_SET_NAME
    assert run_filter(slot_filter(), SYS_PRCTL, (PR_SET_DUMPABLE, 0)) == RET_ALLOW  # the zygote sets it on itself


def test_the_zygote_keeps_what_it_needs_to_manage_jobs():
    """The slot filter, which the zygote runs under, leaves it forking, signalling everything in the
    slot (kill(-1) ends a job), making sessions and memory files, and refuses it the rest."""
    zygote = slot_filter()
    assert run_filter(zygote, SYS_CLONE, (0x11,)) == RET_ALLOW  # fork
    assert run_filter(zygote, SYS_KILL, (0xFFFFFFFF, 9)) == RET_ALLOW
    assert run_filter(zygote, DENIED["setsid"]) == RET_ALLOW
    assert run_filter(zygote, DENIED["memfd_create"]) == RET_ALLOW  # each job's result files
    assert run_filter(zygote, DENIED["shmget"]) == EPERM_RET
    assert run_filter(zygote, DENIED["socket"], (1, 2, 0)) == EPERM_RET
    assert run_filter(zygote, DENIED["ptrace"]) == EPERM_RET
