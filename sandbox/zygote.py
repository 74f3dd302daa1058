"""The fork server ("zygote") that runs inside the sandbox, one per execution slot.

Standard library only, imported and its main() called (sandbox/isolation.py: zygote_command) with the
arguments SLOT_UID NO_FORK PIDNS SCRATCH SECCOMP MOUNT_MB MAX_FILES OWN_FS, in bubblewrap (or directly,
in weaker tiers). It reads job headers from stdin and writes frames to stdout (see "the
pipe to the host"). For every job it forks a child that reads its own job, hardens itself (new session,
rlimits, uid drop, closed fds, Landlock, its job filter on top of the slot's seccomp filter that the
zygote installed on itself; the environment is the zygote's minimal one) and then
runs the candidate and the per-test expressions, writing one JSON line per test to fd 3 (a memory file
the zygote reads and forwards once the job is over). The zygote
holds no expected value, decides nothing, and never holds a job's data: the trusted parent
(sandbox/executor.py) receives the child's output and values and compares them.

Why a fork server: forking a warm interpreter costs ~1 ms; starting Python costs ~35 ms.
"""

import ast
import builtins
import ctypes
import fcntl
import gc
import importlib.util
import io
import json
import marshal
import os
import resource
import select
import signal
import stat as stat_module
import struct
import sys
import time

# Warm the modules candidates commonly import, so the fork inherits them already loaded.
import bisect, collections, copy, decimal, fractions, functools, heapq, itertools, math, operator  # noqa: E401,F401
import random, re, statistics, string, traceback, typing  # noqa: E401,F401

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
# syscall(2) with fixed argument types (number and three arguments), for the children's calls: one with
# plain ints costs a child ~50 fewer first-touch page faults (~0.2 ms here) than one that converts
# ctypes.c_long objects.
SYSCALL = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long, use_errno=True)(("syscall", LIBC))
SYS_SECCOMP, SECCOMP_SET_MODE_FILTER = 317, 1
# fork(2) itself, with the GIL held: unlike os.fork it runs none of Python's at-fork work in the child
# (thread and lock re-initialisation, registered hooks such as `random` reseeding from the OS), which
# the zygote, with one thread and no lock held between jobs, does not need. Measured here: a child
# that does nothing takes 47 page faults and 0.37 ms instead of 110 and 0.57 ms.
FORK = ctypes.PyDLL(None, use_errno=True).fork
X86_64 = os.uname().machine == "x86_64"  # the seccomp program and Landlock's syscall numbers are x86-64's
MAX_RECORD_BYTES = 32 << 20  # all of a job's result lines together
MAX_VALUE_BYTES = 2 << 20  # one test's result line
MAX_THREADS = 64  # a job that may not fork: threads of its one process
JOB_NOFILE = 64  # descriptors a job may hold (the zygote itself holds under 40)
USAGE_EVERY_S = 0.05  # how often a running job's scratch files are counted
SCRATCH_FS = ""  # a file system of this slot's own that holds the scratch root ("": none; set in main)
DEVNULL = -1  # opened once in main: the jobs' stdin, and the judge's stdout and stderr
JOB_STDOUT = JOB_STDERR = None  # a job's sys.stdout and sys.stderr (fds 1 and 2 in its process), made in main

# --- the pipe to the host --------------------------------------------------------------------------------
#
# Host -> zygote, per job: a "!I" length and a JSON header (id, limits, `body_bytes`), then the job body
# (program, tests; marshalled), which the zygote never reads: it splices the bytes straight into the
# job's child.
# Zygote -> host: frames, "!BI" (channel, length) then the payload. Channel 0 carries the zygote's own
# JSON messages (ready, report); channels 1-4 carry the job's stdout and stderr, read from its pipes,
# and the candidate's and the judge's result lines, read from their memory files once the job is over.
# All of it passes through one buffer (Outbox) that is zeroed once sent, so nothing of a job's program,
# output or values stays in the zygote's memory, where the next job, a fork of that memory, could find
# and replay it.

HEADER = struct.Struct("!I")
FRAME = struct.Struct("!BI")
CH_MESSAGE, CH_STDOUT, CH_STDERR, CH_RECORD, CH_JUDGE = 0, 1, 2, 3, 4


def _not_json(obj):
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# json.dumps makes a JSONEncoder, a closure and a C encoder on every call; this one C encoder, made
# here and inherited warm, writes the same text (a job's result lines, the zygote's reports) with
# fewer first-touch page faults in a child. No check for cycles: what it is given is built fresh by
# the harness (values go through `encode`, which bounds their depth).
_JSON_CHUNKS = json.encoder.c_make_encoder(None, _not_json, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)


def to_json(obj):
    """json.dumps(obj), from the warm encoder."""
    return "".join(_JSON_CHUNKS(obj, 0))


def read_exact(fd, n):
    """n bytes from fd, or None at end of input."""
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_header(fd):
    size = read_exact(fd, HEADER.size)
    if size is None:
        return None
    raw = read_exact(fd, HEADER.unpack(size)[0])
    return None if raw is None else marshal.loads(raw)


def splice_exact(src, dst, n, wait=True):
    """Move n bytes from pipe `src` to pipe `dst`; without `wait`, only what moves at once (it stops at a
    full `dst` or at input not there yet). -> the bytes left to move."""
    while n > 0:
        try:
            moved = os.splice(src, dst, n, flags=0 if wait else os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            return n
        if moved == 0:
            raise EOFError("the pipe closed early")
        n -= moved
    return 0


class Outbox:
    """Frames for the host, gathered in one buffer and sent in as few writes as possible (a short job's
    output and its report in one: every extra write is a wake-up of the host). The job's output goes
    straight from its pipes into this buffer, which is zeroed after each send: once a report is out,
    nothing of that job is left in the zygote's memory."""

    def __init__(self, size=1 << 18):
        self.buf = bytearray(size)
        self.view, self.zeros = memoryview(self.buf), memoryview(bytes(size))
        self.used = 0

    def relay(self, fd, channel, allowance):
        """Read what `fd` holds (at most `allowance` bytes) into a frame of `channel`.
        -> (bytes taken, whether more came than allowed); (0, False) at end of file."""
        if len(self.buf) - self.used < FRAME.size + 4096:
            self.flush()
        start = self.used + FRAME.size
        n = os.readv(fd, [self.view[start : start + min(len(self.buf) - start, allowance + 1)]])
        if not n:
            return 0, False
        take = min(n, allowance)
        FRAME.pack_into(self.buf, self.used, channel, take)
        self.view[start + take : start + n] = self.zeros[: n - take]  # what came past the allowance
        self.used = start + take
        return take, n > take

    def message(self, obj):
        """The zygote's own JSON message (ready, report) on channel 0, then everything is sent."""
        data = to_json(obj).encode()
        if len(self.buf) - self.used < FRAME.size + len(data):
            self.flush()
        if FRAME.size + len(data) > len(self.buf):
            os.write(1, FRAME.pack(CH_MESSAGE, len(data)) + data)
            return
        FRAME.pack_into(self.buf, self.used, CH_MESSAGE, len(data))
        self.view[self.used + FRAME.size : self.used + FRAME.size + len(data)] = data
        self.used += FRAME.size + len(data)
        self.flush()

    def flush(self):
        view = self.view[: self.used]
        while view:
            view = view[os.write(1, view) :]
        self.view[: self.used] = self.zeros[: self.used]
        self.used = 0


OUTBOX = Outbox()


# --- strict value encoding (the child side; sandbox/values.py decodes) -------------------------------


class Unserializable(Exception):
    pass


MAX_LISTED = 1 << 20  # items of an iterator a test consumes (`list(f(x))`)


def items_of(value):
    """An iterator (a generator, a map) where the test consumes it: its items, as a list. Run under the
    test's timer: the candidate's generator runs here, in its own process."""
    if not hasattr(type(value), "__next__"):
        return value
    items = list(itertools.islice(value, MAX_LISTED + 1))
    if len(items) > MAX_LISTED:
        raise Unserializable(f"returned an iterator of more than {MAX_LISTED} items")
    return items


_BASES = (bool, int, float, str, bytes, complex, list, tuple, set, frozenset, dict)


# Exact standard-library types whose own __eq__ is trusted, compared as the builtin they extend.
_TRUSTED = {collections.Counter: dict, collections.OrderedDict: dict, collections.defaultdict: dict}


def _plain_base(t):
    """The builtin base of a subclass that keeps the base's equality (Counter, OrderedDict, a
    namedtuple, an IntEnum): Python compares it as that base, so it may be encoded as one. A class
    that overrides __eq__ or __ne__ (an always-equal object) has no such base."""
    for base in _BASES:
        if issubclass(t, base):
            if t.__eq__ is base.__eq__ and t.__ne__ is base.__ne__:
                return base
            return None
    return None


def encode(value, depth=0, keep=None):
    """Exact builtin types (or subclasses that keep their equality), read through the base type's own
    methods so that an overridden __iter__ or __getitem__ cannot change what is reported. Any other
    object is `keep(object)` where given (a reference the judge holds: its calls), else unencodable."""
    if depth > 64:
        raise Unserializable("value nested too deeply")
    t = type(value)
    if value is None:
        return None
    base = t if t in _BASES else _TRUSTED.get(t) or _plain_base(t)
    if t.__name__ == "deque" and t.__module__ == "collections":
        return {"t": "deque", "v": [encode(v, depth + 1, keep) for v in list(value)]}
    if base is None:
        if keep is not None:
            return keep(value)
        raise Unserializable(f"a {t.__module__}.{t.__qualname__} object cannot be compared outside the sandbox")
    if base is bool:
        return bool(value)
    if base is int:
        value = int.__index__(value)
        if abs(value) >= 1 << 4000:
            raise Unserializable("int too large")
        return value
    if base is float:
        value = float.__float__(value)
        if value != value or value in (float("inf"), float("-inf")):
            return {"t": "float", "v": repr(value)}
        return value
    if base is str:
        return str.__str__(value)
    if base is list:
        return [encode(v, depth + 1, keep) for v in list.__iter__(value)]
    if base is tuple:
        return {"t": "tuple", "v": [encode(v, depth + 1, keep) for v in tuple.__iter__(value)]}
    if base is set or base is frozenset:
        return {"t": base.__name__, "v": [encode(v, depth + 1, keep) for v in base.__iter__(value)]}
    if base is dict:
        return {"t": "dict", "v": [[encode(k, depth + 1, keep), encode(v, depth + 1, keep)] for k, v in dict.items(value)]}
    if base is bytes:
        return {"t": "bytes", "v": bytes.hex(value)}
    return {"t": "complex", "v": [complex.real.__get__(value), complex.imag.__get__(value)]}


class MalformedValue(ValueError):
    """A value record that does not follow the encoding: the sender was tampered with."""


MAX_DECODE_DEPTH = 100  # the encoder stops at 64 levels; anything deeper was forged


def decode(obj, depth=0, refs=None):
    """The inverse of `encode`: exact builtin types only, from JSON data (never pickle); a reference is
    `refs(record)` where given (the judge's and the candidate's channel), else malformed."""
    if depth > MAX_DECODE_DEPTH:
        raise MalformedValue("value nested too deeply")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [decode(v, depth + 1, refs) for v in obj]
    if isinstance(obj, dict) and set(obj) == {"t", "v"}:
        tag, raw = obj["t"], obj["v"]
        try:
            if tag == "tuple" and isinstance(raw, list):
                return tuple(decode(v, depth + 1, refs) for v in raw)
            if tag in ("set", "frozenset") and isinstance(raw, list):
                items = [decode(v, depth + 1, refs) for v in raw]
                return set(items) if tag == "set" else frozenset(items)
            if tag == "dict" and isinstance(raw, list) and all(isinstance(p, list) and len(p) == 2 for p in raw):
                return {decode(k, depth + 1, refs): decode(v, depth + 1, refs) for k, v in raw}
        except TypeError as exc:
            raise MalformedValue(f"unhashable member: {exc}") from None
        if tag == "float" and raw in ("nan", "inf", "-inf"):
            return float(raw)
        if tag == "bytes" and isinstance(raw, str):
            try:
                return bytes.fromhex(raw)
            except ValueError:
                raise MalformedValue("bad bytes value") from None
        if tag == "deque" and isinstance(raw, list):
            return collections.deque(decode(v, depth + 1, refs) for v in raw)
        if tag in ("ref", "name") and refs is not None:
            return refs(obj)
        if tag == "complex" and isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, (int, float)) for x in raw):
            return complex(*raw)
    raise MalformedValue(f"not a value record: {str(obj)[:80]}")


# --- seccomp (x86_64; raw BPF through prctl) -----------------------------------------------------------

EPERM, ENOSYS = 1, 38
RET_ALLOW, RET_KILL = 0x7FFF0000, 0x80000000
AUDIT_ARCH_X86_64 = 0xC000003E
DENIED = {  # name: number, x86_64
    "connect": 42,
    "accept": 43,
    "bind": 49,
    "listen": 50,
    "accept4": 288,
    "ptrace": 101,
    "setsid": 112,
    "setpgid": 109,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "unshare": 272,
    "setns": 308,
    "bpf": 321,
    "perf_event_open": 298,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "personality": 135,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "userfaultfd": 323,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "kexec_load": 246,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "iopl": 172,
    "ioperm": 173,
    "io_uring_setup": 425,
    "tkill": 200,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "quotactl": 179,
    "acct": 163,
    "settimeofday": 164,
    "clock_settime": 227,
    "adjtimex": 159,
    "sethostname": 170,
    "setdomainname": 171,
    "syslog": 103,
    "vhangup": 153,
    "fanotify_init": 300,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "mount_setattr": 442,
    "pidfd_send_signal": 424,
    "rt_sigqueueinfo": 129,
    "rt_tgsigqueueinfo": 297,
    # No socket at all: nothing may be reached, and an AF_UNIX datagram socket could send to a host
    # path. Connected pairs (socketpair, below) are what multiprocessing and pipes between threads use.
    "socket": 41,
    # No System V IPC and no POSIX message queues: their objects outlive the process that made them
    # (measured: a job's 64 MB segments were still there, full, for the next job on the slot, and in the
    # process tier on the host after the sandbox closed), and their memory is no process's address space,
    # so RLIMIT_AS does not bound it.
    "shmget": 29,
    "shmat": 30,
    "shmctl": 31,
    "semget": 64,
    "semop": 65,
    "semctl": 66,
    "shmdt": 67,
    "msgget": 68,
    "msgsnd": 69,
    "msgrcv": 70,
    "msgctl": 71,
    "semtimedop": 220,
    "mq_open": 240,
    "mq_unlink": 241,
    "mq_timedsend": 242,
    "mq_timedreceive": 243,
    "mq_notify": 244,
    "mq_getsetattr": 245,
    # Memory files hold memory outside the address space as well (measured: 960 MB in 60 files of
    # RLIMIT_FSIZE each, under a 256 MB RLIMIT_AS). The zygote makes the result files with it.
    "memfd_create": 319,
}
SYS_SOCKETPAIR, SYS_KILL, SYS_TGKILL, SYS_PRCTL, PR_SET_DUMPABLE = 53, 62, 234, 157, 4
SYS_CLONE, SYS_FORK, SYS_VFORK, SYS_CLONE3 = 56, 57, 58, 435
SOCK_TYPE_MASK, SOCK_STREAM, CLONE_THREAD = 0xF, 1, 0x00010000
# CLONE_NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET: no new namespaces.
CLONE_NEW_ANY = 0x80 | 0x20000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000


def _stmt(code, k):
    return (code, 0, 0, k)


def _jump(code, k, jt, jf):
    return (code, jt, jf, k)


LD_W_ABS, AND, JEQ, JSET, JGE, RET = 0x20, 0x54, 0x15, 0x45, 0x35, 0x06


# Two filters, so that a child compiles a short one: the kernel allocates and JIT-compiles a filter
# for every process that installs it (measured here, in a loop: 13 µs for one instruction, 37 µs for
# the 26 of the job filter; in a fresh child the ~100 of the whole policy cost ~80 µs more than the job
# filter), while a filter installed before a fork is inherited for free. The zygote
# installs the slot filter once it is set up (it needs nothing the filter refuses); each job process adds
# the job filter for what the zygote itself must keep (signals to others, its own process tree). The
# kernel runs every filter a process has and keeps the strictest answer, so a job gets both.
# The job's child calls setsid() itself before it adds its filter; the zygote makes each job's result files.
JOB_ONLY = ("setsid", "setpgid", "memfd_create")


def slot_filter():
    """What nothing in the slot may do, the zygote included (installed by the zygote, inherited)."""
    errno = lambda e: 0x00050000 | e  # noqa: E731
    prog = [
        _stmt(LD_W_ABS, 4),  # arch
        _jump(JEQ, AUDIT_ARCH_X86_64, 1, 0),
        _stmt(RET, RET_KILL),
        _stmt(LD_W_ABS, 0),  # syscall number
        _jump(JGE, 0x40000000, 0, 1),  # x32 ABI: refuse
        _stmt(RET, errno(EPERM)),
    ]
    # From here on the accumulator holds the syscall number: every block below either returns or is
    # skipped whole, so none reloads it. A short program loads faster and costs every syscall less.
    _deny_all([nr for name, nr in DENIED.items() if name not in JOB_ONLY], prog)
    # socketpair(): stream pairs only; a datagram socket could address a host path in sendto/sendmsg.
    _block(
        prog,
        SYS_SOCKETPAIR,
        [_stmt(LD_W_ABS, 24), _stmt(AND, SOCK_TYPE_MASK), _jump(JEQ, SOCK_STREAM, 0, 1), _stmt(RET, RET_ALLOW), _stmt(RET, errno(EPERM))],
    )
    # clone(): never into new namespaces.
    _block(prog, SYS_CLONE, [_stmt(LD_W_ABS, 16), _jump(JSET, CLONE_NEW_ANY, 1, 0), _stmt(RET, RET_ALLOW), _stmt(RET, errno(EPERM))])
    _block(prog, SYS_CLONE3, [_stmt(RET, errno(ENOSYS))])  # its flags live in memory BPF cannot read; glibc falls back to clone
    prog.append(_stmt(RET, RET_ALLOW))
    return prog


def job_filter(own_pid, no_fork):
    """What a job process may not do beyond the slot filter (which it also has, and which checks the
    architecture first: a call this program misreads is killed or refused there)."""
    errno = lambda e: 0x00050000 | e  # noqa: E731
    prog = [_stmt(LD_W_ABS, 0)]  # syscall number
    _deny_all([DENIED[name] for name in JOB_ONLY], prog)
    # kill()/tgkill(): only to itself or its own group (pid 0), never the zygote or the host.
    for nr in (SYS_KILL, SYS_TGKILL):
        _block(
            prog, nr, [_stmt(LD_W_ABS, 16), _jump(JEQ, own_pid, 2, 0), _jump(JEQ, 0, 1, 0), _stmt(RET, errno(EPERM)), _stmt(RET, RET_ALLOW)]
        )
    # prctl(PR_SET_DUMPABLE): the job's dumpable state is set before this filter, and stays.
    _block(prog, SYS_PRCTL, [_stmt(LD_W_ABS, 16), _jump(JEQ, PR_SET_DUMPABLE, 0, 1), _stmt(RET, errno(EPERM)), _stmt(RET, RET_ALLOW)])
    if no_fork:  # one process per job: threads only
        _block(prog, SYS_CLONE, [_stmt(LD_W_ABS, 16), _jump(JSET, CLONE_THREAD, 0, 1), _stmt(RET, RET_ALLOW), _stmt(RET, errno(EPERM))])
        _block(prog, SYS_FORK, [_stmt(RET, errno(EPERM))])
        _block(prog, SYS_VFORK, [_stmt(RET, errno(EPERM))])
    prog.append(_stmt(RET, RET_ALLOW))
    return prog


def _deny_all(numbers, prog):
    """Append one compare per syscall number, all landing on a shared "return EPERM"."""
    for i, nr in enumerate(numbers):
        last = i == len(numbers) - 1
        prog.append(_jump(JEQ, nr, len(numbers) - 1 - i, 1 if last else 0))
    prog.append(_stmt(RET, 0x00050000 | EPERM))


def _block(prog, nr, body):
    prog.append(_jump(JEQ, nr, 0, len(body)))
    prog.extend(body)


def strictest(*answers):
    """The action the kernel takes when several filters answer one call (SECCOMP_RET_ACTION_FULL
    compared as signed: kill < errno < allow)."""
    return min(answers, key=lambda ret: struct.unpack("i", struct.pack("I", ret & 0xFFFF0000))[0])


PID_PLACEHOLDER = 0x7FFFFFFE
_PREBUILT = {}


def load_filter(prog):
    """-> (filter, its sock_fprog) in C memory, ready for seccomp(2)."""
    filt = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
    return filt, ctypes.create_string_buffer(struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(filt)))


def install_filter(fprog_address):
    if SYSCALL(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, 0, fprog_address) != 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER) failed")


def install_slot_filter(no_fork):
    """In the zygote, once: the slot filter, and the job filter assembled for its children, which
    only write their own pid into the copy they inherit and load it (two stores, one system call)."""
    if not X86_64:
        return False
    filt, fprog = load_filter(slot_filter())  # `filt` must live until the kernel has copied it
    install_filter(ctypes.addressof(fprog))
    prog = job_filter(PID_PLACEHOLDER, no_fork)
    filt, fprog = load_filter(prog)
    pid_offsets = [i * 8 + 4 for i, ins in enumerate(prog) if ins[3] == PID_PLACEHOLDER]
    _PREBUILT["job"] = (filt, pid_offsets, fprog, ctypes.addressof(fprog))
    return True


def install_job_filter(own_pid):
    filt, pid_offsets, _, fprog_address = _PREBUILT["job"]
    for offset in pid_offsets:
        struct.pack_into("I", filt, offset, own_pid)
    install_filter(fprog_address)


# --- Landlock (file system and signal confinement that needs no privileges) ---------------------------

SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LL_EXECUTE, LL_WRITE_FILE, LL_READ_FILE, LL_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
LL_FILE_RIGHTS_ABI1 = LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE


def landlock_abi():
    if not X86_64:
        return 0
    abi = LIBC.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(abi, 0)


def build_landlock(abi, readable, writable):
    """A ruleset in which only `readable` paths may be read (and executed), only `writable` ones
    written (never executed), and TCP and signals to processes outside the job are refused (ABI >= 4 and >= 6).
    Built once by the zygote; every child enters it with `enter_landlock`, becoming its own domain."""
    handled = (1 << 13) - 1  # ABI 1: execute .. make_sym
    if abi >= 2:
        handled |= 1 << 13  # refer
    if abi >= 3:
        handled |= 1 << 14  # truncate
    if abi >= 5:
        handled |= 1 << 15  # ioctl_dev
    net = 3 if abi >= 4 else 0  # bind_tcp | connect_tcp, with no rule allowing either
    scoped = 3 if abi >= 6 else 0  # abstract unix sockets, signals
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    attr = ctypes.create_string_buffer(struct.pack("QQQ", handled, net, scoped)[:size])
    ruleset = LIBC.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), attr, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    file_rights = handled & (LL_FILE_RIGHTS_ABI1 | (1 << 14) | (1 << 15))
    # Nothing written may be executed: a job's own file of mode 0111, executed, would leave it
    # non-dumpable, out of a zygote's sight without root (see harden).
    for paths, rights in ((readable, LL_EXECUTE | LL_READ_FILE | LL_READ_DIR), (writable, handled & ~LL_EXECUTE)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            allowed = rights if os.path.isdir(path) else rights & file_rights
            rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd))
            LIBC.syscall(ctypes.c_long(SYS_LANDLOCK_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(1), rule, ctypes.c_uint32(0))
            os.close(fd)
    return ruleset


def enter_landlock(ruleset):
    if SYSCALL(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")


LANDLOCK_ABI = 0
LANDLOCK_RULESET = -1  # the zygote's ruleset fd: read the Python install, write the slot's scratch root
JOB_DIR = "job"  # every job runs in <scratch root>/job, made afresh for it and wiped after it


# --- the child: harden, then run the candidate and the test expressions ---------------------------------


def write_line(fd, text):
    """One result line, written at once: a job killed later keeps every line it wrote."""
    data = memoryview((text + "\n").encode())
    while data:
        data = data[os.write(fd, data) :]


class TestTimeout(BaseException):
    """Raised by SIGALRM when one test runs past its time; a BaseException so `except Exception` in
    candidate code cannot swallow it."""


def _alarm(signum, frame):
    raise TestTimeout()


def harden(job, slot_uid, no_fork, workdir, use_seccomp, judge):
    os.chdir(workdir)
    mem = job["memory_mb"] << 20
    limits = [
        (resource.RLIMIT_AS, mem),
        (resource.RLIMIT_DATA, mem),
        (resource.RLIMIT_CPU, int(job["job_timeout_s"]) + 1),
        (resource.RLIMIT_FSIZE, job["max_file_bytes"]),
    ]  # and, inherited from the zygote: JOB_NOFILE descriptors, no core dumps, no supplementary groups
    if slot_uid and os.getuid() == 0:
        # The slot uid's tasks: processes and threads when it may fork; threads of its one process
        # when it may not (their memory is that process's, under RLIMIT_AS).
        limits.append((resource.RLIMIT_NPROC, MAX_THREADS if no_fork else job["max_processes"]))
    for which, value in limits:
        resource.setrlimit(which, (value, value))
    if slot_uid and os.getuid() == 0:
        os.setgid(slot_uid)
        os.setuid(slot_uid)
    if LANDLOCK_RULESET >= 0:  # built only in the tiers that use seccomp
        enter_landlock(LANDLOCK_RULESET)
        os.close(LANDLOCK_RULESET)
    # Set after the uid drop (which resets it), and final: the job filter refuses a job this call. The
    # judge is not dumpable (no /proc/<pid>/mem, no descriptors: it holds the tests). The candidate is,
    # although it inherits the zygote's "not dumpable", so that a zygote without root may look at its
    # descriptors (deleted files it holds count toward its scratch space) and the job cannot hide them.
    LIBC.prctl(PR_SET_DUMPABLE, 0 if judge else 1, 0, 0, 0)
    if use_seccomp and X86_64:
        install_job_filter(os.getpid())


def run_child(job, result_fd):
    """Runs in the hardened child. Everything it writes to `result_fd` is data for the parent."""

    def emit(record):
        line = to_json(record)
        if len(line) > MAX_VALUE_BYTES and "i" in record:
            line = to_json(
                {"i": record["i"], "error": "unserializable", "message": f"returned a value too large to compare ({len(line)} bytes)"}
            )
        write_line(result_fd, line)

    test_timeout = float(job["test_timeout_s"])

    def timed(fn):
        signal.setitimer(signal.ITIMER_REAL, test_timeout)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def error_text(exc):
        """`ValueError: bad input (line 3: x = int(s))`, pointing at the candidate's own line."""
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<candidate>"]
        if isinstance(exc, SyntaxError) and exc.filename == "<candidate>" and exc.lineno:
            frames, lineno = [], exc.lineno
        else:
            lineno = frames[-1].lineno if frames else 0
        where = ""
        program_lines = job["program"].splitlines()
        if lineno and 0 < lineno <= len(program_lines):
            where = f" (line {lineno}: {program_lines[lineno - 1].strip()[:120]})"
        text = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        return f"{type(exc).__name__}: {text[:300]}{where}"

    if job.get("modules"):
        sys.meta_path.insert(0, SourceModules(job["modules"]))

    def load_program(stdin_text=None):
        module = type(sys)("__main__")
        module.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = module
        if job.get("module"):
            sys.modules[job["module"]] = module
        code = compile(job["program"], "<candidate>", "exec")
        exec(code, module.__dict__)
        if job.get("test_setup"):
            exec(compile(job["test_setup"], "<test>", "exec"), module.__dict__)
        entry = job.get("entry_point")
        if entry:
            fn = module.__dict__.get(entry)
            if fn is None and isinstance(module.__dict__.get("Solution"), type):
                fn = getattr(module.__dict__["Solution"](), entry, None)  # APPS call-based
            if fn is not None:
                module.__dict__["candidate"] = fn
        return module.__dict__

    plans = job["plans"]
    io_mode = any(p["kind"] == "io" for p in plans)
    namespace = None
    if not io_mode:
        try:
            namespace = timed(load_program)
        except TestTimeout:
            emit({"stage": "load_error", "error": "timeout", "message": f"loading the program took over {test_timeout:g}s"})
            return
        except BaseException as exc:  # noqa: BLE001 - the candidate's failure is data
            emit({"stage": "load_error", "error": type(exc).__name__, "message": error_text(exc)})
            return

    for i, plan in enumerate(plans):
        started = time.perf_counter()
        record = {"i": i}
        try:
            if plan["kind"] == "eval":
                exprs = [compile(src, "<test>", "eval") for src in plan["exprs"]]
                listed = plan.get("iterable") or [False] * len(exprs)
                values = timed(lambda: [items_of(eval(c, namespace)) if it else eval(c, namespace) for c, it in zip(exprs, listed)])
                truthy = plan.get("truthy") or [False] * len(values)
                # In a truth position only truthiness matters (a re.Match, say); a lying __bool__
                # gains nothing over returning True.
                record["values"] = [(True if v else False) if t else encode(v) for v, t in zip(values, truthy)]
            elif plan["kind"] == "call":
                args = plan["args"]
                value = timed(lambda: namespace["candidate"](*args))
                record["values"] = [encode(value)]
            elif plan["kind"] == "judged":
                continue  # run by the judge, which calls in through `serve_calls`
            elif plan["kind"] == "io":
                captured = io.StringIO()
                sys.stdin, sys.stdout = io.StringIO(plan["stdin"]), captured
                try:
                    timed(load_program)
                except SystemExit:
                    pass
                finally:
                    sys.stdin, sys.stdout = sys.__stdin__, sys.__stdout__
                record["values"] = [captured.getvalue()[: 1 << 20]]
        except TestTimeout:
            record["error"] = "timeout"
        except Unserializable as exc:
            record["error"] = "unserializable"
            record["message"] = str(exc)
        except BaseException as exc:  # noqa: BLE001
            record["error"] = type(exc).__name__
            record["message"] = error_text(exc)
        record["ms"] = round((time.perf_counter() - started) * 1000, 2)
        emit(record)
    emit({"stage": "done", "n": len(plans)})
    if job.get("serve"):
        serve_calls(namespace, CALLS_IN, CALLS_OUT, timed, error_text)


# --- judged tests: a second child runs the test code and calls into the candidate's ---------------------
#
# A test that cannot be split into values (loops, helpers: HumanEval/32's `check`) would give a verdict
# the candidate could forge if it ran in the candidate's process (shadow a builtin, patch `exec`,
# write an "ok" and exit). It runs instead in a judge: a child forked from the zygote that never runs
# the candidate's code. The judge executes the dataset's setup and the test, with every name the test
# takes from the program bound to a proxy: a call sends its arguments, encoded, to the candidate's
# process and gets back a value, decoded into plain data, a numbered reference to an object that is
# not a value (kept in the candidate: `Remote`), or the exception's type and message. The
# judge's result pipe, memory and signals are out of the candidate's reach (another process, not
# dumpable, seccomp), so an "ok" on it means the test's own assertions held.

CALLS_IN, CALLS_OUT = 4, 5  # in the candidate: requests from the judge, answers to it
TO_CANDIDATE, FROM_CANDIDATE = 4, 5  # in the judge


def serve_calls(namespace, requests_fd, answers_fd, timed, error_text):
    """In the candidate: answer the judge's requests until it closes the pipe."""
    kept = KeptObjects(namespace)
    for line in os.fdopen(requests_fd, "rb"):
        try:
            request = json.loads(line)
            value = timed(lambda: kept.perform(request))
            if hasattr(type(value), "__next__"):  # a generator: its items, and in the judge an iterator over them
                answer = {"items": encode(timed(lambda: items_of(value)), keep=kept.keep)}
            else:
                answer = {"value": encode(value, keep=kept.keep)}
        except TestTimeout:
            answer = {"error": "timeout"}
        except Unserializable as exc:
            answer = {"error": "unserializable", "message": str(exc)}
        except BaseException as exc:  # noqa: BLE001 - the candidate's failure is data
            answer = {"error": type(exc).__name__, "message": error_text(exc)}
        data = (to_json(answer) + "\n").encode()
        if len(data) > MAX_VALUE_BYTES:
            data = b'{"error": "unserializable", "message": "returned a value too large to compare"}\n'
        os.write(answers_fd, data)


MAX_KEPT = 1 << 16  # the program's objects one job's judge may hold


class KeptObjects:
    """In the candidate: the program's objects that are not values (a tree node a test built, a bound
    method, a closure), kept here and known to the judge by number; and what the judge asks of them.
    Everything runs in this process, under the test's timer; only values and numbers go back."""

    def __init__(self, namespace):
        self.namespace, self.objects, self.numbers = namespace, [], {}

    def keep(self, value):
        number = self.numbers.get(id(value))
        if number is None:
            if len(self.objects) >= MAX_KEPT:
                raise Unserializable(f"the program returned more than {MAX_KEPT} objects that are not values")
            number = self.numbers[id(value)] = len(self.objects)
            self.objects.append(value)  # alive while kept, so its id is not reused
        kind = type(value)
        return {"t": "ref", "v": [number, kind.__qualname__[:100], kind.__eq__ is not object.__eq__]}

    def resolve(self, record):
        raw = record["v"]
        if record["t"] == "name":
            if not isinstance(raw, str) or raw not in self.namespace:
                raise NameError(f"the program does not define {str(raw)[:100]!r}")
            return self.namespace[raw]
        if not isinstance(raw, list) or not raw or type(raw[0]) is not int or not 0 <= raw[0] < len(self.objects):
            raise MalformedValue("unknown object reference")
        return self.objects[raw[0]]

    def perform(self, request):
        target = self.resolve(request["target"])
        args = [decode(a, refs=self.resolve) for a in request.get("args", ())]
        op = request["op"]
        if op == "call":
            return target(*args, **{k: decode(v, refs=self.resolve) for k, v in request.get("kwargs", {}).items()})
        if op == "getattr":
            return getattr(target, str(request["attr"]))
        if op == "setattr":
            return setattr(target, str(request["attr"]), args[0])
        if op == "setitem":
            target[args[0]] = args[1]
            return None
        return REMOTE_OPERATIONS[op](target, *args)


# What the judge may ask of one of the program's objects besides calls and attributes (each answer is a
# value the builtin itself made, or an iterator whose items are sent).
REMOTE_OPERATIONS = {"bool": bool, "len": len, "iter": iter, "getitem": operator.getitem, "contains": operator.contains}


class CandidateFailed(Exception):
    """What a call into the candidate raised, or why it gave no value."""


class Remote:
    """In the judge: a name the test takes from the program (a function, a class), or an object the
    program returned that is not a value. Calling it, reading or setting its attributes, its items, its
    truth, length and iteration are asked of the candidate's process, which answers with values or more
    references. Equality is identity, as for Python's own objects, and an object whose class defines
    `__eq__` cannot be compared here (the candidate would decide the verdict: an always-equal object)."""

    __slots__ = ("_channel", "_target", "_kind", "_own_eq")

    def __init__(self, channel, target, kind, own_eq=False):
        for slot, value in zip(self.__slots__, (channel, target, kind, own_eq)):
            object.__setattr__(self, slot, value)

    def _ask(self, op, *args, **extra):
        return self._channel.request(self._target, op, args, **extra)

    def __call__(self, *args, **kwargs):
        return self._ask("call", *args, kwargs=kwargs)

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return self._ask("getattr", attr=attr)

    def __setattr__(self, attr, value):
        self._ask("setattr", value, attr=attr)

    def __bool__(self):
        return self._ask("bool") is True

    def __len__(self):
        return self._ask("len")

    def __iter__(self):
        return iter(self._ask("iter"))

    def __getitem__(self, key):
        return self._ask("getitem", key)

    def __setitem__(self, key, value):
        self._ask("setitem", key, value)

    def __contains__(self, item):
        return self._ask("contains", item) is True

    def _identity(self):
        if self._own_eq:
            raise CandidateFailed(f"a {self._kind} object cannot be compared outside the sandbox (its class defines __eq__)")
        return id(self)

    def __eq__(self, other):
        return self._identity() == (other._identity() if isinstance(other, Remote) else None)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return self._identity()

    def __lt__(self, other):
        raise CandidateFailed(f"a {self._kind} object cannot be ordered outside the sandbox")

    __le__ = __gt__ = __ge__ = __lt__

    def __repr__(self):
        return f"<the program's {self._kind}>"


class CallChannel:
    """In the judge: requests to the candidate's process, one at a time; the references it returns are
    one `Remote` each (the same object each time, so `is` and `==` mean what they mean in Python)."""

    def __init__(self, out_fd, in_fd, timeout):
        self.out_fd, self.in_fd, self.timeout, self.pending, self.remotes = out_fd, in_fd, timeout, b"", {}

    def name(self, name):
        return Remote(self, {"t": "name", "v": name}, name)

    def request(self, target, op, args=(), kwargs=None, attr=None):
        request = {"target": target, "op": op, "args": [encode(a, keep=self._reference) for a in args]}
        if kwargs:
            request["kwargs"] = {k: encode(v, keep=self._reference) for k, v in kwargs.items()}
        if attr is not None:
            request["attr"] = attr
        os.write(self.out_fd, (to_json(request) + "\n").encode())
        answer = json.loads(self._line())
        if "value" in answer:
            return decode(answer["value"], refs=self._remote)
        if "items" in answer:
            return iter(decode(answer["items"], refs=self._remote))
        kind, message = str(answer.get("error")), str(answer.get("message", ""))
        if kind == "timeout":
            raise TestTimeout()
        known = getattr(builtins, kind, None)
        if isinstance(known, type) and issubclass(known, Exception) and kind not in ("StopIteration", "StopAsyncIteration"):
            raise known(message.removeprefix(f"{kind}: "))  # the same exception type, so a test expecting it sees it
        shown = target["v"] if target["t"] == "name" else repr(self._remote(target))
        raise CandidateFailed(f"{shown}{'(...)' if op == 'call' else ''} {message or kind}")

    def _reference(self, value):
        if not isinstance(value, Remote):
            raise Unserializable(f"a {type(value).__qualname__} object of the tests cannot be passed to the program")
        return value._target

    def _remote(self, record):
        raw = record["v"]
        if record["t"] != "ref" or not (isinstance(raw, list) and len(raw) == 3 and type(raw[0]) is int):
            raise MalformedValue("not an object reference")
        if raw[0] not in self.remotes:
            if len(self.remotes) >= MAX_KEPT:
                raise MalformedValue("too many object references")
            self.remotes[raw[0]] = Remote(self, {"t": "ref", "v": raw}, str(raw[1])[:100], raw[2] is not False)
        return self.remotes[raw[0]]

    def _line(self):
        deadline = time.monotonic() + self.timeout + 1
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.in_fd], [], [], remaining)[0]:
                raise CandidateFailed("the program did not answer in time")
            chunk = os.read(self.in_fd, 1 << 16)
            if not chunk:
                raise CandidateFailed("the program stopped before answering")
            self.pending += chunk
            if len(self.pending) > MAX_VALUE_BYTES:
                raise CandidateFailed("the program answered with a value too large to compare")
        line, _, self.pending = self.pending.partition(b"\n")
        return line


STDLIB_MODULES = frozenset(getattr(sys, "stdlib_module_names", ()))


def _plain_names(source):
    """The names `source` uses as names (not as attributes)."""
    try:
        return {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
    except SyntaxError:
        return set()


def _global_names(code):
    """Every name a code object (and the functions inside it) may load as a global."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, type(code)):
            names |= _global_names(const)
    return names


_COMPARISONS = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}


class ExplainAsserts(ast.NodeTransformer):
    """`assert L op R` (without a message of its own) -> `assert (_ledex_left := L) op (_ledex_right := R),
    _ledex_explain(_ledex_left, "op", _ledex_right)`: a failing assert reports its operands, as pytest's
    do. The operands are evaluated once, in the same order; the message only when the assert fails."""

    def visit_Assert(self, node):
        test = node.test
        if node.msg is not None or not isinstance(test, ast.Compare) or len(test.ops) != 1:
            return node
        left = ast.NamedExpr(ast.Name("_ledex_left", ast.Store()), test.left)
        right = ast.NamedExpr(ast.Name("_ledex_right", ast.Store()), test.comparators[0])
        message = ast.Call(
            ast.Name("_ledex_explain", ast.Load()),
            [ast.Name("_ledex_left", ast.Load()), ast.Constant(_COMPARISONS[type(test.ops[0])]), ast.Name("_ledex_right", ast.Load())],
            [],
        )
        return ast.copy_location(ast.Assert(ast.Compare(left, test.ops, [right]), message), node)


def explain_assert(left, op, right):
    def shown(value):
        try:
            text = repr(value)
        except Exception:  # noqa: BLE001 - an int past the str limit, a broken __repr__ in the tests
            text = f"<a {type(value).__name__}>"
        return text if len(text) <= 200 else text[:197] + "..."

    return f"{shown(left)} {op} {shown(right)} is false"


def compile_tests(source, name):
    """The judge's tests, with their asserts made to explain themselves (plain compile if they cannot parse)."""
    try:
        tree = ast.fix_missing_locations(ExplainAsserts().visit(ast.parse(source, name)))
    except SyntaxError:
        return compile(source, name, "exec")
    return compile(tree, name, "exec")


def failing_line(exc, job):
    """`line N (<source>)` of the test setup (the tests file, without the task's preamble) where `exc`
    was raised, or None."""
    line, tb = 0, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<setup>":
            line = tb.tb_lineno
        tb = tb.tb_next
    lines, first = (job.get("setup") or "").splitlines(), int(job.get("setup_first_line", 1))
    if not first <= line <= len(lines):
        return None
    return f"line {line - first + 1} ({lines[line - 1].strip()[:200]})"


class SourceModules:
    """An import finder for the modules a job brings as source (`ledex-rl debug`: the user's files beside
    the program and the tests), loaded when imported, in the process that imports them."""

    def __init__(self, sources):
        self.sources = {str(k): str(v) for k, v in dict(sources).items()}

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in self.sources else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(compile(self.sources[module.__name__], f"<{module.__name__}.py>", "exec"), module.__dict__)


def program_module(name, channel):
    """In the judge, the program as a module the tests import: each attribute a proxy."""
    module = type(sys)(name)

    def attribute(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return channel.name(attr)

    module.__getattr__ = attribute
    return module


def run_judge(job, result_fd):
    """In the judge: the dataset's setup, then each judged test with the program's names as proxies."""
    test_timeout = float(job["test_timeout_s"])
    channel = CallChannel(TO_CANDIDATE, FROM_CANDIDATE, test_timeout)
    namespace = {"__builtins__": builtins, "__name__": "__main__", "_ledex_explain": explain_assert}
    if job.get("module"):  # `from stats import mean` in the tests: proxies, as for the names they use directly
        sys.modules[job["module"]] = program_module(job["module"], channel)
    if job.get("modules"):  # the user's helper modules (never the program: it is a proxy above)
        sys.meta_path.insert(0, SourceModules(job["modules"]))
    setup = compile_tests(job.get("setup") or "", "<setup>")
    try:
        signal.setitimer(signal.ITIMER_REAL, test_timeout)
        exec(setup, namespace)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)

    program_own = {job.get("entry_point") or "candidate", "candidate", job.get("module") or "candidate"}

    def bind_program_names(code, source):
        """The program's names the tests use (setup's functions too: they look them up in this same
        namespace), as proxies. Builtins stay builtins, except the function under test itself (MBPP's
        task 126 is a function called `sum`), and so do standard modules the tests name without
        importing them (MBPP's `sys.getsizeof(x)`): the judge's own, never the program's, which may
        have replaced them or their functions to choose an expected value."""
        names, plain = _global_names(code) - set(namespace) - set(dir(builtins)), _plain_names(source)
        for name in names & plain & STDLIB_MODULES - program_own:  # not `x.copy()`'s `copy`
            try:
                namespace[name] = importlib.import_module(name)
            except Exception:  # noqa: BLE001 - not importable here: the program's, as before
                pass
        # Module names that are only attributes or imports here (`from collections import Counter`) are
        # left unbound, for a later test that names the module itself.
        for name in names - set(namespace) - (STDLIB_MODULES - plain) | program_own:
            namespace[name] = channel.name(name)

    bind_program_names(setup, job.get("setup") or "")
    for test in job["judged"]:
        started = time.perf_counter()
        record = {"i": test["i"]}
        try:
            code = compile_tests(test["source"], "<test>")
            bind_program_names(code, test["source"])
            signal.setitimer(signal.ITIMER_REAL, test_timeout)
            try:
                exec(code, namespace)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            record["ok"] = True
        except TestTimeout:
            record["error"] = "timeout"
        except BaseException as exc:  # noqa: BLE001 - the test failed, whatever it raised
            record["error"] = type(exc).__name__
            record["message"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            where = failing_line(exc, job)
            if where:
                record["where"] = where
        record["ms"] = round((time.perf_counter() - started) * 1000, 2)
        write_line(result_fd, to_json(record))
    write_line(result_fd, to_json({"stage": "judged", "n": len(job["judged"])}))


# --- pytest's helpers, for users' tests files (`ledex-rl debug`) --------------------------------------
#
# pytest itself is not in the sandbox (standard library only). A tests file that imports it gets this
# module instead, in the candidate (which only defines the tests) and in the judge (which runs them):
# `raises`, `approx`, `param`, `fail`, `skip` and `mark.parametrize`; the host expands literal
# parameters into one test each (ledex_rl/debugger.py) and calls the function with them.


class Raises:
    """`with pytest.raises(ValueError, match="..."):`"""

    def __init__(self, expected, match=None):
        self.expected, self.match, self.value = expected, match, None

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        names = getattr(self.expected, "__name__", None) or " or ".join(e.__name__ for e in self.expected)
        if kind is None:
            raise AssertionError(f"DID NOT RAISE {names}")
        if not issubclass(kind, self.expected):
            return False
        if self.match is not None and not re.search(self.match, str(value)):
            raise AssertionError(f"{names} was raised, but its message {str(value)!r} does not match {self.match!r}")
        self.value = value
        return True


def raises(expected, *args, match=None, **kwargs):
    if not args:
        return Raises(expected, match)
    with Raises(expected, match) as caught:
        args[0](*args[1:], **kwargs)
    return caught


class Approx:
    """`x == pytest.approx(expected, rel=1e-6, abs=1e-12)`, for numbers and lists, tuples and dicts of them."""

    __hash__ = None

    def __init__(self, expected, rel=None, abs=None):  # noqa: A002 - pytest's names
        self.expected, self.rel, self.abs = expected, rel, abs

    def __eq__(self, other):
        return self._close(other, self.expected)

    def _close(self, got, expected):
        if isinstance(expected, dict):
            return isinstance(got, dict) and got.keys() == expected.keys() and all(self._close(got[k], expected[k]) for k in expected)
        if isinstance(expected, (list, tuple)):
            return isinstance(got, (list, tuple)) and len(got) == len(expected) and all(map(self._close, got, expected))
        if isinstance(expected, bool) or not isinstance(expected, (int, float)) or not isinstance(got, (int, float)):
            return got == expected
        rel = self.rel if self.rel is not None else (0.0 if self.abs is not None else 1e-6)
        return got == expected or abs(got - expected) <= max(rel * abs(expected), 1e-12 if self.abs is None else self.abs)

    def __repr__(self):
        return f"approx({self.expected!r})"


class Parametrized:
    """A test function under `@pytest.mark.parametrize`: called with its arguments, it is the function;
    called without them, it runs every case."""

    def __init__(self, fn, names, cases):
        self.fn, self.names, self.cases = fn, names, cases

    def __call__(self, **given):
        if all(name in given for name in self.names):
            return self.fn(**given)
        for case in self.cases:
            values = case.values if isinstance(case, Param) else case if len(self.names) > 1 else (case,)
            self(**given, **dict(zip(self.names, values)))


class Mark:
    def parametrize(self, names, cases, **_options):
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        return lambda fn: Parametrized(fn, names, list(cases))

    def __getattr__(self, name):  # skip, xfail, slow, ...: markers without effect here
        return lambda *args, **kwargs: args[0] if len(args) == 1 and callable(args[0]) and not kwargs else (lambda fn: fn)


class Param:
    """`pytest.param(1, 2, id="...")`: one case's values."""

    def __init__(self, *values, **_options):
        self.values = values


class Skipped(Exception):
    """`pytest.skip()` inside a test: not a pass."""


def fail(reason=""):
    raise AssertionError(reason)


def skip(reason=""):
    raise Skipped(reason)


def pytest_module():
    module = type(sys)("pytest")
    module.__dict__.update(raises=raises, approx=Approx, mark=Mark(), param=Param, fail=fail, skip=skip)
    return module


# --- the zygote: fork, watch, kill, reap, report -------------------------------------------------------


def kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_everything(leaders, slot_uid, pid_namespace):
    """Nothing the job started may survive it: every process of the slot (in our own pid namespace, one
    call: it reaches every process but the zygote and the namespace's init, whatever its group), or
    elsewhere the job's groups, then every process of the slot uid."""
    if pid_namespace:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
    for pgid in leaders:
        kill_group(pgid)
    if slot_uid and os.getuid() == 0:
        helper = os.fork()
        if helper == 0:  # become the slot uid and kill everything that uid owns
            try:
                os.setgid(slot_uid)
                os.setuid(slot_uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(helper, 0)


def reap_all(deadline):
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)


def wipe_scratch(scratch_root, workdir=None):
    """Empty the slot's scratch root, whatever the job left there. Most jobs leave an empty `workdir`
    and nothing else: two calls. Otherwise the wipe goes without recursion: a non-empty
    directory has its entries moved up into the root, so any depth costs a pass per level and no
    stack, path or descriptor per level. Modes the job set are overridden; links are never followed.
    Returns False when something could not be removed (the host then replaces the slot)."""
    try:
        if workdir:
            os.rmdir(workdir)
            if not os.listdir(scratch_root):
                return True
    except OSError:
        pass
    root = os.open(scratch_root, os.O_RDONLY | os.O_DIRECTORY)
    prefix = f".wipe-{os.urandom(6).hex()}-"
    moved = 0
    try:
        while True:
            names = os.listdir(root)
            if not names:
                return True
            progress = False
            for name in names:
                try:
                    st = os.stat(name, dir_fd=root, follow_symlinks=False)
                    if not stat_module.S_ISDIR(st.st_mode):
                        os.unlink(name, dir_fd=root)
                        progress = True
                        continue
                    try:
                        os.rmdir(name, dir_fd=root)
                        progress = True
                        continue
                    except OSError:
                        pass
                    os.chmod(name, 0o700, dir_fd=root)  # a directory (not a link), so this changes only it
                    inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
                    try:
                        for child in os.listdir(inner):
                            moved += 1
                            os.rename(child, f"{prefix}{moved}", src_dir_fd=inner, dst_dir_fd=root)
                            progress = True
                    finally:
                        os.close(inner)
                except FileNotFoundError:
                    progress = True
            if not progress:
                return False
    except OSError:
        return False
    finally:
        os.close(root)


def spawn(meta, body_fd, fds, slot_uid, no_fork, workdir, use_seccomp, judge):
    """Fork a hardened child that reads its job from `body_fd`, has `fds` (target: source) as its
    only descriptors, and runs as the candidate or, with `judge`, as the judge."""
    pid = FORK()
    if pid:
        if pid < 0:
            raise OSError(ctypes.get_errno(), "fork failed")
        return pid
    try:
        gc.disable()
        # This job's own program and tests (the judge: its tests), marshalled by the host: a child
        # decodes marshal with ~40 fewer first-touch page faults than JSON (~0.15 ms a job here).
        job = marshal.loads(read_exact(body_fd, meta["judge_bytes" if judge else "body_bytes"]))
        job.update(meta)
        os.setsid()
        for target, source in fds.items():  # every source is >= 10 (reserve_low_fds): none is overwritten
            os.dup2(source, target)
        keep = LANDLOCK_RULESET  # >= 10 when set; harden() closes it once entered
        top = max(fds) + 1
        if keep >= 0:
            os.closerange(top, keep)
        os.closerange(max(keep + 1, top), 65536)  # every other pipe end of the job, the body's included
        sys.stdout, sys.stderr = JOB_STDOUT, JOB_STDERR
        harden(job, slot_uid, no_fork, workdir, use_seccomp, judge)
        if judge:
            run_judge(job, 3)
        else:
            run_child(job, 3)
    except BaseException:  # noqa: BLE001 - a harness failure: say so on stderr, never a verdict
        try:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(0)
    finally:
        os._exit(0)  # a child must never fall through into the zygote's loop


def reserve_low_fds():
    """Hold descriptors 3-9 (on /dev/null) so that every pipe and file the zygote opens later is >= 10,
    above the targets (0-5) a child moves its own onto: it can then dup2 them in any order."""
    for fd in range(3, 10):
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            os.dup2(DEVNULL, fd, inheritable=False)


def run_job(meta, slot_uid, no_fork, pid_namespace, scratch_root, use_seccomp):
    """Fork the job's child (and its judge, when the job has judged tests), hand each its part of the
    job, forward what they write, enforce the limits, kill and reap everything they started, wipe the
    scratch space; return the report (which holds no job data)."""
    workdir = os.path.join(scratch_root, JOB_DIR)
    os.mkdir(workdir, 0o700)
    if slot_uid and os.getuid() == 0:
        os.chown(workdir, slot_uid, slot_uid)
    judged = meta.get("judge_bytes", 0) > 0
    pipes = {name: os.pipe() for name in ("body", "out", "err", *(("judge_body", "calls", "answers") if judged else ()))}
    # Result lines go to memory files, read once the job is over: a job's tests no longer wake the
    # zygote once each (a select, a read and this loop's Python), and a line written is kept whatever
    # happens to its writer later. RLIMIT_FSIZE bounds each, as it bounds any file the job writes.
    records = {CH_RECORD: os.memfd_create("records"), **({CH_JUDGE: os.memfd_create("judge")} if judged else {})}
    # Each body goes into its child's pipe before the fork, as far as it fits (all of it, for most jobs):
    # the child finds it there, with no wait and wake-up, and the zygote does that work before its pages
    # are shared with the child (each page it writes after the fork is then copied).
    bodies = [("body", "body_bytes"), *((("judge_body", "judge_bytes"),) if judged else ())]
    left = {}
    for name, size in bodies:
        left[name] = meta[size] if any(left.values()) else splice_exact(0, pipes[name][1], meta[size], wait=False)
        if not left[name]:
            os.close(pipes[name][1])
    devnull = DEVNULL
    started = time.monotonic()
    candidate_fds = {0: devnull, 1: pipes["out"][1], 2: pipes["err"][1], 3: records[CH_RECORD]}
    if judged:
        candidate_fds.update({CALLS_IN: pipes["calls"][0], CALLS_OUT: pipes["answers"][1]})
    leaders = [spawn(meta, pipes["body"][0], candidate_fds, slot_uid, no_fork, workdir, use_seccomp, judge=False)]
    if judged:
        judge_fds = {0: devnull, 1: devnull, 2: devnull, 3: records[CH_JUDGE]}
        judge_fds.update({TO_CANDIDATE: pipes["calls"][1], FROM_CANDIDATE: pipes["answers"][0]})
        leaders.append(spawn(meta, pipes["judge_body"][0], judge_fds, slot_uid, no_fork, workdir, use_seccomp, judge=True))
    for name, (r, w) in pipes.items():
        if name in ("body", "judge_body"):
            os.close(r)
        elif name in ("calls", "answers"):
            os.close(r)
            os.close(w)
        else:
            os.close(w)
    for name, _ in bodies:
        if left[name]:  # the rest, now that the child reads
            splice_exact(0, pipes[name][1], left[name])
            os.close(pipes[name][1])
    pidfds = {os.pidfd_open(p): p for p in leaders}
    channels = {pipes["out"][0]: CH_STDOUT, pipes["err"][0]: CH_STDERR}
    allowance = meta["max_output_bytes"]  # stdout and stderr together
    deadline = started + float(meta["job_timeout_s"])
    status = "exited"
    running = dict(pidfds)
    next_check = started + USAGE_EVERY_S
    while (channels or running) and status == "exited":
        now = time.monotonic()
        if now >= deadline:
            status = "timeout"
            break
        if now >= next_check:  # a job that runs a while: its files and bytes in the scratch space
            files, size = scratch_usage(scratch_root, SCRATCH_FS, meta["max_files"], leaders[0])
            if files > meta["max_files"] or size > meta["tmpfs_mb"] << 20:
                status = "disk_limit"
                break
            next_check = now + USAGE_EVERY_S
        ready, _, _ = select.select(list(channels) + list(running), [], [], min(deadline, next_check) - now)
        for fd in ready:
            if fd in running:
                pgid = running.pop(fd)
                if running:  # the other leader goes on: kill now what this one left holding the pipes open
                    kill_group(pgid)
                else:  # the job is over: nothing it started may go on
                    kill_everything(leaders, slot_uid, pid_namespace)
                continue
            moved, over = OUTBOX.relay(fd, channels[fd], allowance)
            allowance -= moved
            if over:
                status = "output_limit"
                break
            if not moved:
                os.close(fd)
                del channels[fd]
    if running or status != "exited":  # a limit ended the job (otherwise the loop already did this)
        kill_everything(leaders, slot_uid, pid_namespace)
    for fd in list(channels) + list(pidfds):
        os.close(fd)
    _, wait_status = os.waitpid(leaders[0], 0)
    for other in leaders[1:]:
        os.waitpid(other, 0)
    reaped = reap_all(time.monotonic() + 2.0)
    if not relay_records(records) and status == "exited":
        status = "output_limit"
    return {
        "id": meta["id"],
        "status": status,
        "signal": os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else 0,
        "exit_code": os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None,
        "wall_ms": round((time.monotonic() - started) * 1000, 2),
        "reaped": reaped,
        "wiped": wipe_scratch(scratch_root, workdir),
    }


def relay_records(records):
    """Send the result lines the job's processes wrote (all of them, now that none runs), at most
    MAX_RECORD_BYTES in all, and close the files. -> False when there was more."""
    allowance, complete = MAX_RECORD_BYTES, True
    for channel, fd in records.items():
        os.lseek(fd, 0, os.SEEK_SET)
        moved = 1
        while moved and complete:
            moved, over = OUTBOX.relay(fd, channel, allowance)
            allowance -= moved
            complete = not over
        os.close(fd)
    return complete


def scratch_usage(scratch_root, own_fs, limit_files, holder=0):
    """(files, bytes) the job has under the slot's scratch root. On a file system of the slot's own
    (`own_fs`: bwrap's /tmp, the unshare tier's mount) one statvfs; otherwise a walk without recursion
    that stops once past `limit_files` (the caller kills the job then), and the files that the job's
    process `holder` keeps open after deleting them, which no walk finds."""
    if own_fs:
        st = os.statvfs(own_fs)
        return st.f_files - st.f_ffree, (st.f_blocks - st.f_bfree) * st.f_frsize
    files, size = deleted_but_open(holder, os.stat(scratch_root).st_dev) if holder else (0, 0)
    pending = [scratch_root]
    while pending and files <= limit_files:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    files += 1
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    else:
                        size += entry.stat(follow_symlinks=False).st_blocks * 512
        except OSError:
            files += 1  # a directory it made unreadable still counts
    return files, size


def deleted_but_open(pid, device):
    """(files, bytes) of the files on `device` that process `pid` holds open and no directory lists
    (deleted, or made with O_TMPFILE). Measured before this count: a job held 960 MB of the host's
    /dev/shm in deleted files, past a 64 MB limit. A job is one process unless it may fork (then
    what its other processes hold is not counted)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # it has just exited (a job cannot make itself non-dumpable: see harden)
        return 0, 0
    files = size = 0
    for fd in fds:
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if st.st_nlink == 0 and st.st_dev == device:
            files, size = files + 1, size + st.st_blocks * 512
    return files, size


def mount_scratch(scratch_root, size_mb, max_files):
    """In a mount namespace of our own (the unshare tier), a tmpfs for the slot's scratch space: the
    kernel then caps its bytes and files. False where that is not permitted."""
    options = f"size={size_mb}m,nr_inodes={max_files + 16},mode=0711".encode()
    return LIBC.mount(b"tmpfs", scratch_root.encode(), b"tmpfs", 2 | 4, options) == 0  # MS_NOSUID | MS_NODEV


def stdlib_readable_by(slot_uid):
    """Can a job that dropped to `slot_uid` import the standard library? (Not where Python lives
    under a 0700 home such as /root and the host file system is visible.)"""
    if not slot_uid or os.getuid() != 0:
        return True
    probe = os.fork()
    if probe == 0:
        try:
            os.setgid(slot_uid)
            os.setuid(slot_uid)
            os._exit(0 if os.access(os.path.join(os.path.dirname(os.__file__), "socket.py"), os.R_OK) else 1)
        finally:
            os._exit(1)
    _, status = os.waitpid(probe, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def main():
    slot_uid = int(sys.argv[1])
    no_fork = sys.argv[2] == "1"
    pid_namespace = sys.argv[3] == "1"
    scratch_root = sys.argv[4]
    use_seccomp = sys.argv[5] == "1"
    mount_mb, max_files, own_fs = int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
    global LANDLOCK_ABI, LANDLOCK_RULESET, SCRATCH_FS, DEVNULL
    DEVNULL = os.open(os.devnull, os.O_RDWR)
    reserve_low_fds()
    DEVNULL = fcntl.fcntl(DEVNULL, fcntl.F_DUPFD, 10)
    LANDLOCK_ABI = landlock_abi()
    os.makedirs(scratch_root, exist_ok=True)
    if mount_mb and not mount_scratch(scratch_root, mount_mb, max_files):
        own_fs = ""  # not permitted here: count instead
    SCRATCH_FS = own_fs
    # The environment jobs see, set once here: the job directory's path never changes, so a child
    # inherits it as is rather than rebuilding os.environ (costly copy-on-write page faults).
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": os.path.join(scratch_root, JOB_DIR), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"})
    if use_seccomp and LANDLOCK_ABI:
        # Writable: the slot's own scratch root, which holds nothing but the running job's directory.
        readable = sorted({sys.prefix, sys.exec_prefix, "/usr", "/lib", "/lib64", "/etc/ld.so.cache"})
        ruleset = build_landlock(LANDLOCK_ABI, readable, [scratch_root])
        # Above the descriptors a child rewires (0-3), so that the ruleset survives its dup2 calls.
        LANDLOCK_RULESET = fcntl.fcntl(ruleset, fcntl.F_DUPFD, 10)
        os.close(ruleset)
    # Inherited by every job process, and required by Landlock and seccomp: set once here (setuid
    # still works, without exec; nothing here executes a program).
    if LIBC.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    # Limits of every job that the zygote lives within as well: set here once and inherited, not by
    # each child (a system call and its Python apiece).
    for which, value in ((resource.RLIMIT_NOFILE, JOB_NOFILE), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value))
    if slot_uid and os.getuid() == 0:
        os.setgroups([])  # the jobs' uid drop then keeps no supplementary group
    signal.signal(signal.SIGALRM, _alarm)  # a job's per-test timer; the zygote itself never sets one
    try:  # orphans of a job re-parent to us, so that we can reap them
        LIBC.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:  # noqa: BLE001
        pass
    sys.modules["pytest"] = pytest_module()
    # Warm the compiler and the encoder so the first job in every child costs what the others do.
    compile("def f(x):\n    return [i for i in range(x)]\n", "<warm>", "exec")
    json.loads(to_json(encode({"a": (1, 2.5, {3}), "b": [None, True, b"x"], "c": "x\ny"})))
    global JOB_STDOUT, JOB_STDERR  # built once: each would cost a child ~50 page faults (~0.15 ms)
    JOB_STDOUT = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    JOB_STDERR = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    # Every job starts from this state of `random` (a child does not reseed): the same draws in every
    # slot and run, as PYTHONHASHSEED=0 gives the same set and dict order.
    random.seed(0)
    gc.collect()
    gc.freeze()  # children share the warm heap; the collector would otherwise copy it page by page
    LIBC.malloc_trim(0)
    sys.stdout = sys.stderr  # nothing but frames may reach the protocol pipe (fd 1)
    ready = {
        "ready": True,
        "pid": os.getpid(),
        "uid": os.getuid(),
        "stdlib": os.path.dirname(os.__file__),
        "stdlib_readable": stdlib_readable_by(slot_uid),
        "landlock_abi": LANDLOCK_ABI if use_seccomp else 0,
    }
    # Not dumpable: a process of the same uid (a job, where no slot uid separates them) cannot open our
    # /proc entries, such as fd/0, where the host's next job may already wait (executor: Sandbox._serve).
    LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if use_seccomp:  # last: the set-up above mounts and probes
        install_slot_filter(no_fork)
    OUTBOX.message(ready)
    while True:
        meta = read_header(0)
        if meta is None:
            return
        try:
            report = run_job(meta, slot_uid, no_fork, pid_namespace, scratch_root, use_seccomp)
        except Exception as exc:  # noqa: BLE001 - report, then stop: the host replaces this slot
            OUTBOX.message({"id": meta.get("id"), "status": "sandbox_error", "message": f"{type(exc).__name__}: {exc}", "wiped": False})
            return
        OUTBOX.message(report)
        if not report["wiped"]:  # the next job, maybe already in our pipe, must not start in what this one left
            return


if __name__ == "__main__":
    main()
