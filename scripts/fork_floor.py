"""What one forked execution must cost on this machine, whatever the sandbox does around it.

    python3 -I -S scripts/fork_floor.py [--json]

Standard library only (it loads sandbox/zygote.py for its warm imports), so it runs on a machine
that has nothing else installed: use it to tell whether the sandbox's 10x target (issue #3) can be
met on given hardware before setting up the whole stack there. It prints:

- the cost of one page fault, zero-fill and copy-on-write (a forked child pays one per page it writes);
- fork + exit + reap of a bare interpreter and of the warm zygote (the warm imports of sandbox/zygote.py);
- the same with the trivial benchmark program compiled and run in the child (no hardening, no I/O).

CPU time is this process's and its children's (getrusage), user and kernel, per execution.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import mmap
import os
import resource
import sys

PAGE = mmap.PAGESIZE
TRIVIAL_PROGRAM = "def add(a, b):\n    return a + b\n"
TRIVIAL_TESTS = ("add(1, 2) == 3", "add(0, 0) == 0", "add(-1, 1) == 0")


def cpu_ms() -> float:
    """CPU of this process and of its reaped children, in ms."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime) * 1000


def fork_cost(n: int, child_work) -> float:
    """CPU ms per fork of this process whose child runs `child_work` and exits; the parent reaps it."""
    start = cpu_ms()
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                child_work()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    return (cpu_ms() - start) / n


def nothing() -> None:
    pass


def run_trivial() -> None:
    namespace: dict = {}
    exec(compile(TRIVIAL_PROGRAM, "<candidate>", "exec"), namespace)
    for test in TRIVIAL_TESTS:
        assert eval(compile(test, "<test>", "eval"), namespace)


def page_fault_us(pages: int = 4096, rounds: int = 10) -> tuple[float, float]:
    """(zero-fill, copy-on-write) µs per page: write one byte per page of fresh memory, then of
    memory shared with the parent after a fork (the child's cost beyond a bare fork)."""
    area = mmap.mmap(-1, pages * PAGE)
    start = cpu_ms()
    for offset in range(0, pages * PAGE, PAGE):
        area[offset] = 1
    zero_fill = (cpu_ms() - start) * 1000 / pages

    def write_every_page() -> None:
        for offset in range(0, pages * PAGE, PAGE):
            area[offset] = 2

    bare = fork_cost(rounds, nothing)
    touched = fork_cost(rounds, write_every_page)
    area.close()
    return zero_fill, (touched - bare) * 1000 / pages


def load_zygote_imports() -> None:
    """Import sandbox/zygote.py as the sandbox's fork server does (its module level: the warm imports),
    then freeze the heap as it does."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sandbox", "zygote.py")
    spec = importlib.util.spec_from_file_location("zygote", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    compile("def f(x):\n    return [i for i in range(x)]\n", "<warm>", "exec")  # as the zygote warms up
    gc.collect()
    gc.freeze()  # as the zygote does: children share the warm heap


def serve(batch: int) -> None:
    """The warm-zygote floor on demand: `batch` forks, each running the trivial program, per line read;
    "done" after each. A caller can then time the same work the same way it times a sandbox."""
    load_zygote_imports()
    print("ready", flush=True)
    for _ in sys.stdin:
        fork_cost(batch, run_trivial)
        print("done", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forks", type=int, default=1000, help="forks per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--serve",
        type=int,
        help="with the warm imports loaded, fork and run the trivial program this many times per line read (for a benchmark that times it from outside)",
    )
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)

    zero_fill, copy_on_write = page_fault_us()
    gc.collect()
    gc.freeze()
    figures = {
        "page_fault_zero_fill_us": zero_fill,
        "page_fault_copy_on_write_us": copy_on_write,
        "bare_fork_exit_ms": fork_cost(args.forks, nothing),
        "bare_fork_trivial_ms": fork_cost(args.forks, run_trivial),
    }
    load_zygote_imports()
    figures["zygote_fork_exit_ms"] = fork_cost(args.forks, nothing)
    figures["zygote_fork_trivial_ms"] = fork_cost(args.forks, run_trivial)
    if args.json:
        print(json.dumps(figures))
        return
    print(f"Python {sys.version.split()[0]}, {os.uname().release}, CPU ms are user + kernel, per execution")
    print(f"  page fault, zero-fill:                      {zero_fill:6.2f} µs")
    print(f"  page fault, copy-on-write:                  {copy_on_write:6.2f} µs")
    print(f"  bare interpreter: fork, exit, reap          {figures['bare_fork_exit_ms']:6.3f} ms")
    print(f"  bare interpreter: + run the trivial program {figures['bare_fork_trivial_ms']:6.3f} ms")
    print(f"  warm zygote: fork, exit, reap               {figures['zygote_fork_exit_ms']:6.3f} ms")
    print(f"  warm zygote: + run the trivial program      {figures['zygote_fork_trivial_ms']:6.3f} ms")


if __name__ == "__main__":
    main()
