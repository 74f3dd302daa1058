"""Isolation tiers, strongest first, and the command that starts a zygote in each.

- bwrap:   bubblewrap namespaces (pid, net, ipc, uts), a read-only /usr and Python, a size-capped tmpfs
           /tmp, nothing else of the host (no /etc, /home, /root, /tmp/ray). Inside: uid drop (as root)
           or no-fork seccomp (unprivileged), rlimits, seccomp.
- unshare: pid/net/ipc/uts namespaces through util-linux `unshare` (root); the host file system stays
           visible but read-only to the slot's uid, and scratch space is on the host.
- process: no namespaces (a managed cluster without CAP_SYS_ADMIN): uid drop or no-fork, rlimits, seccomp.
- none:    a plain fork server; only when the user sets sandbox.isolation=none and allow_unsafe.

`auto` tries them in that order (except none) and keeps the first whose zygote starts.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ZYGOTE = Path(__file__).with_name("zygote.py")
ZYGOTE_IN_SANDBOX = "/opt/ledex_sandbox/zygote.py"
# -s -S: no site packages; -P: no script dir on sys.path. Not -I: that would also ignore PYTHONHASHSEED,
# and set/dict-of-str order must be the same in every slot, or expected outputs differ between runs.
PYTHON_FLAGS = ["-s", "-S", "-P"]


# The zygote is imported and its main() called, not run as a script: CPython keeps a script's parse
# tree (its AST arena) until the script returns, and the zygote never does. Measured here: 10.5 MB of
# anonymous memory as a script, 7.3 MB imported; every fork copies the page tables of all of it and
# every job's exit tears them down again.
def zygote_command(python: str, zygote: str, *args: str) -> list[str]:
    launcher = f"import sys; sys.path[:0] = [{os.path.dirname(zygote)!r}]; import zygote; zygote.main()"
    return [python, *PYTHON_FLAGS, "-c", launcher, *args]


# LD_BIND_NOW: the dynamic linker resolves every symbol when the zygote loads, not on first call, where
# each child would resolve again the functions it calls first (setsid, setrlimit, the syscall wrappers)
# and copy the table pages it writes (~4% of a trivial job's user time here).
ZYGOTE_ENV = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "LANG": "C.UTF-8", "LD_BIND_NOW": "1"}
TIERS = ("bwrap", "unshare", "process")
SLOT_UID_BASE = 61000


@dataclass(frozen=True)
class Launch:
    tier: str
    argv: list[str]
    scratch: str  # where job directories go (inside the sandbox for bwrap)
    host_scratch: str | None  # a host directory to delete at shutdown, if any


def python_executable() -> str:
    """The real interpreter (not the venv's symlink): the sandbox sees only its install prefix."""
    return os.path.realpath(sys.executable)


def system_python() -> str | None:
    """A Python 3 under /usr, readable by every uid: the fallback tiers' interpreter when ours lives in
    a private home (the zygote needs only the standard library)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    return None


SLOT_UIDS = 4000
UID_LOCKS = Path("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()) / "ledex-sandbox-uids"


class SlotUid:
    """An unprivileged uid of its own for one slot, unique on this node: every sandbox of every process
    claims one by locking a file named after it (flock, released when the slot closes or its process
    dies), so RLIMIT_NPROC and the end-of-job kill(-1) reach only that slot's jobs. 0 when not root
    (jobs then keep the host's uid and forking is refused instead)."""

    def __init__(self):
        self.uid, self._lock = 0, -1
        if os.getuid() != 0:
            return
        UID_LOCKS.mkdir(mode=0o700, exist_ok=True)
        for uid in range(SLOT_UID_BASE, SLOT_UID_BASE + SLOT_UIDS):
            fd = os.open(UID_LOCKS / str(uid), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._lock = uid, fd
            return
        raise RuntimeError(f"all {SLOT_UIDS} sandbox slot uids from {SLOT_UID_BASE} are in use on this node")

    def release(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)  # drops the flock
            self._lock = -1


def launch(tier: str, slot: int, tmpfs_mb: int, max_files: int, uid: int, no_fork: bool, python: str | None = None) -> Launch:
    """The command for a zygote. `no_fork`: jobs may start threads but no process (one process per
    job, so its RLIMIT_AS bounds its memory); forced where there is no slot uid to bound forking.
    Scratch space: bwrap's own tmpfs (size-capped by bwrap, files counted by statvfs); in the unshare
    tier a tmpfs the zygote mounts (size and files capped by the kernel); in the process tier a host
    directory whose files and bytes the zygote counts while a job runs."""
    python = python or python_executable()
    no_fork = "1" if no_fork or not uid else "0"
    if tier == "bwrap":
        argv = [shutil.which("bwrap") or "bwrap", *_bwrap_args(python, tmpfs_mb)]
        argv += zygote_command(python, ZYGOTE_IN_SANDBOX, str(uid), no_fork, "1", "/tmp/jobs", "1", "0", str(max_files), "/tmp")
        return Launch(tier, argv, "/tmp/jobs", None)
    scratch = tempfile.mkdtemp(prefix=f"ledex-sandbox-{slot}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    if uid:
        os.chmod(scratch, 0o711)  # the slot uid may enter its job dir, not list the others
    if tier == "unshare":
        unshare = shutil.which("unshare") or "unshare"
        argv = [unshare, "--pid", "--net", "--ipc", "--uts", "--mount", "--fork", "--kill-child", "--mount-proc"]
        argv += zygote_command(python, str(ZYGOTE), str(uid), no_fork, "1", scratch, "1", str(tmpfs_mb), str(max_files), scratch)
    elif tier == "process":
        argv = zygote_command(python, str(ZYGOTE), str(uid), no_fork, "0", scratch, "1", "0", str(max_files), "")
    elif tier == "none":
        argv = zygote_command(python, str(ZYGOTE), "0", "0", "0", scratch, "0", "0", str(max_files), "")
    else:
        raise ValueError(f"unknown isolation tier {tier!r}; accepted: {', '.join(TIERS + ('none',))}")
    return Launch(tier, argv, scratch, scratch)


def _bwrap_args(python: str, tmpfs_mb: int) -> list[str]:
    args = [
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
        "--ro-bind-try",
        "/etc/ld.so.cache",
        "/etc/ld.so.cache",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(tmpfs_mb << 20),
        "--tmpfs",
        "/tmp",
        "--perms",
        "1777",
        "--size",
        str(16 << 20),
        "--tmpfs",
        "/dev/shm",
        "--ro-bind",
        str(ZYGOTE),
        ZYGOTE_IN_SANDBOX,
        "--chdir",
        "/tmp",
        "--clearenv",
    ]
    for key, value in ZYGOTE_ENV.items():
        args += ["--setenv", key, value]
    for top in ("/bin", "/lib", "/lib64", "/lib32", "/sbin"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    prefix = str(Path(python).parent.parent)  # <prefix>/bin/python3.x
    if not prefix.startswith("/usr"):
        # bwrap would create the mount point's parents (e.g. /root/.pyenv) as 0700, which a slot's
        # uid cannot traverse to reach the standard library; create them world-traversable first.
        for parent in reversed(Path(prefix).parents[:-1]):
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", prefix, prefix]
    if os.getuid() == 0:
        # Stay real root inside (no user namespace) so that jobs can drop to a real unprivileged uid;
        # keep only the capabilities the zygote needs for that and for cleaning up after jobs.
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"):
            args += ["--cap-add", cap]
    else:
        args += ["--unshare-user"]
    return args
