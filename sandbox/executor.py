"""The trusted side of the sandbox: execution slots (one zygote each), a batch API, and the verdicts.

    with Sandbox(slots=2) as sandbox:
        results = sandbox.run([Job.for_problem(problem, code) for code in candidates])

Jobs run in parallel across slots and come back in order. Each slot's zygote lives in the strongest
isolation tier the host allows (see isolation.py); the tier is chosen once, at start-up, and logged.
"""

from __future__ import annotations

import fcntl
import json
import marshal
import logging
import os
import queue
import select
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

from ledex_rl.config import SandboxConfig
from ledex_rl.errors import UserError
from ledex_rl.problems.base import Problem, TestCase
from sandbox import isolation, zygote
from sandbox.plans import Plan, judge, make_plan
from sandbox.results import ExecutionResult, TestResult

log = logging.getLogger(__name__)


class SandboxUnavailable(UserError, RuntimeError):
    """No isolation tier could start here; the message lists what each tier said."""


@dataclass(frozen=True)
class Limits:
    test_timeout_s: float = 3.0
    job_timeout_s: float = 30.0
    memory_mb: int = 1024
    max_output_bytes: int = 1 << 20
    max_file_bytes: int = 16 << 20
    max_processes: int = 1  # 1: no fork, so RLIMIT_AS bounds the whole job; more: forks under a slot uid
    tmpfs_mb: int = 64  # a job's scratch space
    max_files: int = 10000  # files and directories a job may create there

    @classmethod
    def from_config(cls, cfg: SandboxConfig) -> Limits:
        """The limits that `cfg` (the `sandbox:` section) sets; each field has the same name there."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Job:
    """One program and the tests it must pass. `preamble` goes before the program (a task's imports)."""

    program: str
    tests: tuple[TestCase, ...]
    entry_point: str = ""
    preamble: str = ""
    test_setup: str = ""
    metadata: dict = field(default_factory=dict)
    module: str = ""  # the name the tests may import the program by (`from stats import mean`)
    modules: dict = field(default_factory=dict)  # name -> source: the user's own modules the program and tests import

    @classmethod
    def for_problem(cls, problem: Problem, program: str, tests: Sequence[TestCase] | None = None, **metadata) -> "Job":
        return cls(
            program=program,
            tests=tuple(problem.tests if tests is None else tests),
            entry_point=problem.entry_point,
            preamble=problem.preamble,
            test_setup=problem.test_setup,
            metadata={"task_id": problem.task_id, **metadata},
        )


def wire(body: dict) -> bytes:
    """A job body as its child reads it: marshal (format 4, which the sandbox's Python, whatever its
    version, reads). Bodies hold only strings, numbers, booleans, lists and string-keyed dicts (a call
    test's arguments are made so by its plan)."""
    return marshal.dumps(body, 4)


# One JSON value per line, read by the C scanner alone: json.loads adds a Python frame and two regular
# expression matches (for whitespace our writers never put there). A line it cannot read whole is not
# a record: ValueError, or StopIteration where no value starts.
_SCAN_JSON = json.scanner.make_scanner(json.decoder.JSONDecoder())


def json_line(line: str):
    """The one JSON value `line` holds (ValueError if it holds anything else)."""
    try:
        value, end = _SCAN_JSON(line, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(line):
        raise ValueError("more than one JSON value")
    return value


PIPELINED = 2  # jobs a slot holds at once in a batch: the one it runs and the next, waiting in its pipe


@dataclass(frozen=True)
class WireJob:
    """A job on its way to a slot: its place in the caller's batch, the plans its verdict is computed
    from, the id its report must carry, and `data`, what the zygote's pipe carries (header length,
    header, the child's body, the judge's body)."""

    index: int
    job: Job
    plans: list[Plan]
    job_id: int
    data: bytes


# The zygote's channels for a job's streams, and the report keys they arrive under.
STREAMS = {zygote.CH_STDOUT: "stdout", zygote.CH_STDERR: "stderr", zygote.CH_RECORD: "record", zygote.CH_JUDGE: "judge"}


class _Slot:
    """One zygote process and the pipe to it."""

    def __init__(self, index: int, tier: str, limits: Limits, python: str | None = None, start_timeout: float = 30.0):
        self.index, self.tier, self.limits, self.python = index, tier, limits, python
        self._pending = bytearray()  # bytes from the zygote not yet parsed into frames
        self.uid = isolation.SlotUid()
        self.launch = isolation.launch(tier, index, limits.tmpfs_mb, limits.max_files, self.uid.uid, limits.max_processes <= 1, python)
        try:
            self.proc = subprocess.Popen(
                self.launch.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=dict(isolation.ZYGOTE_ENV),
                bufsize=0,
            )
        except OSError:  # an interpreter this user may not run (probing the tiers): nothing left behind
            self._release()
            raise
        ready = self._read(timeout=start_timeout)
        if not ready or not ready.get("ready"):
            err = self._stderr_tail()
            self.close()
            raise SandboxUnavailable(f"{tier}: the zygote did not start ({err or 'no output'})")
        self.landlock_abi = ready.get("landlock_abi", 0)
        # A job may wait in the zygote's pipe behind the one it runs only if neither takes more than
        # half of the pipe: writing it then never blocks (see Sandbox._serve).
        self.queue_bytes = fcntl.fcntl(self.proc.stdin.fileno(), fcntl.F_GETPIPE_SZ) // 2
        if not ready.get("stdlib_readable", True):
            self.close()
            raise SandboxUnavailable(
                f"{tier}: jobs run as an unprivileged uid that cannot read Python's standard library at "
                f"{ready.get('stdlib')}; install bubblewrap (strongest tier), or use a Python installed "
                f"where other users can read it (/usr, /opt)"
            )

    def _read(self, timeout: float) -> dict | None:
        """Frames from the zygote until its next message (channel 0): the job's stdout, stderr and
        result lines come first, in frames of their own. None when nothing whole arrives in time."""
        deadline = time.monotonic() + timeout
        streams: dict[int, bytearray] = {}  # channel -> what came on it (most jobs: result lines only)
        while True:
            if not self._fill(zygote.FRAME.size, deadline):
                return None
            channel, size = zygote.FRAME.unpack_from(self._pending)
            end = zygote.FRAME.size + size
            if (channel not in STREAMS and channel != zygote.CH_MESSAGE) or not self._fill(end, deadline):
                return None
            payload = self._pending[zygote.FRAME.size : end]
            del self._pending[:end]
            if channel != zygote.CH_MESSAGE:
                streams.setdefault(channel, bytearray()).extend(payload)
                continue
            try:
                message = json_line(payload.decode("utf-8"))
            except (ValueError, RecursionError):
                return None
            if not isinstance(message, dict):
                return None
            for channel, key in STREAMS.items():
                message[key] = streams[channel].decode("utf-8", "replace") if channel in streams else ""
            return message

    def _fill(self, n: int, deadline: float) -> bool:
        """Read from the zygote until `n` bytes are pending (in large reads: one per frame or fewer)."""
        fd = self.proc.stdout.fileno()
        while len(self._pending) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return False
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return False
            self._pending += chunk
        return True

    def _stderr_tail(self) -> str:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            data = self.proc.stderr.read() or b""
        except Exception:  # noqa: BLE001
            return ""
        return " ".join(data.decode(errors="replace").split())[-300:]

    def send(self, data: bytes) -> None:
        """Write one job (WireJob.data). A zygote that has gone ignores it: its report never comes."""
        view = memoryview(data)
        try:
            while view:
                view = view[self.proc.stdin.write(view) :]
        except (OSError, ValueError):  # ValueError: a slot closed after it failed to restart
            pass

    def receive(self) -> dict | None:
        """The report of the earliest job sent and not yet reported; None if the zygote is gone or stuck.
        The zygote enforces each job's deadline itself; this is the backstop."""
        try:
            return self._read(timeout=self.limits.job_timeout_s + 15)
        except (OSError, ValueError):  # ValueError: a slot closed after it failed to restart
            return None

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=2)
            except Exception:  # noqa: BLE001
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except Exception:  # noqa: BLE001
                    self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        self._release()

    def _release(self) -> None:
        """Give back the slot uid and remove the host's scratch directory."""
        self.uid.release()
        if self.launch.host_scratch and os.path.isdir(self.launch.host_scratch):
            zygote.wipe_scratch(self.launch.host_scratch)  # any depth, never following links
            try:
                os.rmdir(self.launch.host_scratch)
            except OSError as exc:
                log.warning("sandbox: could not remove %s: %s", self.launch.host_scratch, exc)


class Sandbox:
    """A set of execution slots. Thread-safe: `run` may be called from several threads."""

    def __init__(self, slots: int = 2, isolation_tier: str = "auto", allow_unsafe: bool = False, limits: Limits | None = None):
        if isolation_tier == "none" and not allow_unsafe:
            raise ValueError("isolation 'none' runs model code unconfined; pass allow_unsafe=True to mean it")
        self.limits = limits or Limits()
        self.python: str | None = None  # None: this process's own interpreter
        self.tier = self._choose_tier(isolation_tier)
        self._slots = [_Slot(i, self.tier, self.limits, self.python) for i in range(slots)]
        self.landlock_abi = self._slots[0].landlock_abi if self._slots else 0
        self._idle: queue.Queue[_Slot] = queue.Queue()
        for slot in self._slots:
            self._idle.put(slot)
        self._next_id = 0
        self._id_lock = threading.Lock()
        self._limits_header = {f.name: getattr(self.limits, f.name) for f in fields(Limits)}  # every job's header
        log.info(
            "sandbox: %d slots, isolation tier '%s'%s, Landlock %s",
            slots,
            self.tier,
            f" (jobs run on {self.python})" if self.python else "",
            f"ABI {self.landlock_abi}" if self.landlock_abi else "unavailable",
        )

    @classmethod
    def from_config(cls, cfg: SandboxConfig, slots: int) -> Sandbox:
        """`slots` slots with the tier, the opt-in to no isolation and the limits that `cfg` sets."""
        return cls(slots, isolation_tier=cfg.isolation, allow_unsafe=cfg.allow_unsafe, limits=Limits.from_config(cfg))

    def _choose_tier(self, requested: str) -> str:
        candidates = isolation.TIERS if requested == "auto" else (requested,)
        reasons = []
        fallback_python = isolation.system_python()
        for tier in candidates:
            for python in (None, fallback_python) if tier != "bwrap" and fallback_python else (None,):
                try:
                    probe = _Slot(0, tier, self.limits, python, start_timeout=20.0)
                except (SandboxUnavailable, OSError) as exc:
                    reasons.append(str(exc))
                    log.info("sandbox: tier %s unavailable%s: %s", tier, f" with {python}" if python else "", exc)
                    continue
                probe.close()
                self.python = python
                return tier
        raise SandboxUnavailable("no isolation tier works here: " + "; ".join(reasons))

    # --- public API ---------------------------------------------------------------------------------

    def run(self, jobs: Sequence[Job]) -> list[ExecutionResult]:
        """Execute every job; results come back in the order of `jobs`. Each slot takes jobs until none
        is left, its next job already waiting in its zygote's pipe (`_serve`); this thread serves one."""
        if not jobs:
            return []
        results: list[ExecutionResult | None] = [None] * len(jobs)
        pending = deque(enumerate(jobs))  # popleft is atomic: the slots' threads share it

        def take() -> WireJob | None:
            while True:
                try:
                    index, job = pending.popleft()
                except IndexError:
                    return None
                prepared = self._prepare(index, job)
                if isinstance(prepared, WireJob):
                    return prepared
                results[index] = prepared

        def worker() -> None:
            slot = self._idle.get()
            try:
                slot = self._serve(slot, take, results)
            finally:
                self._idle.put(slot)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(len(self._slots), len(jobs)) - 1)]
        for thread in threads:
            thread.start()
        worker()  # this thread serves a slot too
        for thread in threads:
            thread.join()
        return results  # type: ignore[return-value]

    def run_one(self, job: Job) -> ExecutionResult:
        """Execute one job. Always an ExecutionResult: whatever goes wrong on this side (a malformed or
        hostile report, a dead slot) becomes this job's error, never an exception or a lost job."""
        return self.run([job])[0]

    # --- one slot's share of a batch --------------------------------------------------------------------

    def _prepare(self, index: int, job: Job) -> WireJob | ExecutionResult:
        """The job as a slot's zygote reads it, or its error if this side cannot plan its tests."""
        try:
            setup = f"{job.preamble}\n{job.test_setup}"
            plans = [make_plan(t, job.entry_point, setup) for t in job.tests]
            with self._id_lock:
                self._next_id += 1
                job_id = self._next_id
            judged = [{"i": i, "source": p.wire["source"]} for i, p in enumerate(plans) if p.judged]
            body = {
                "program": (job.preamble + "\n" if job.preamble else "") + job.program,
                "test_setup": job.test_setup,
                "entry_point": job.entry_point,
                "serve": bool(judged),
                "module": job.module,
                "modules": job.modules,
                "plans": [{"kind": "judged"} if p.judged else p.wire for p in plans],
            }
            # The judge runs the dataset's own setup (the task's imports and helpers), never the program.
            judge_body = (
                {
                    "judged": judged,
                    "setup": "\n".join(x for x in (job.preamble, job.test_setup) if x),
                    "setup_first_line": job.preamble.count("\n") + 2 if job.preamble else 1,  # where test_setup starts
                    "entry_point": job.entry_point,
                    "module": job.module,
                    "modules": job.modules,
                }
                if judged
                else None
            )
            payload, judge_payload = wire(body), wire(judge_body) if judge_body else b""
            head = marshal.dumps({"id": job_id, **self._limits_header, "body_bytes": len(payload), "judge_bytes": len(judge_payload)})
            return WireJob(index, job, plans, job_id, zygote.HEADER.pack(len(head)) + head + payload + judge_payload)
        except Exception as exc:  # noqa: BLE001 - a test this side cannot plan
            return ExecutionResult(
                "sandbox_error",
                message=f"could not prepare the job: {type(exc).__name__}: {exc}"[:300],
                tier=self.tier,
                metadata=job.metadata,
            )

    def _serve(self, slot: _Slot, take: Callable[[], WireJob | None], results: list) -> _Slot:
        """Run jobs from `take` on `slot` until none is left; returns the slot (a fresh one if it failed).

        Pipelined: while the zygote runs one job, the next one already waits in its pipe (when both are
        small: `_Slot.queue_bytes`), so the zygote goes from one to the next without sleeping and waking,
        and this thread judges a report while the next job runs. A job is never lost to a slot that
        fails: the one it was running gets the error, and any that waited behind it (and so never ran)
        is sent again, to the slot that replaces it. A zygote whose scratch wipe failed ends after that
        job's report (zygote.main), so no job ever starts in what an earlier one left."""
        unsent: deque[WireJob] = deque()  # a failed slot's waiting jobs come back to the front
        sent: deque[WireJob] = deque()  # in the zygote's pipe or running, in order: reports come so
        while True:
            if not unsent and (fresh := take()) is not None:
                unsent.append(fresh)
            if unsent and (not sent or (len(sent) < PIPELINED and max(len(w.data) for w in (*sent, unsent[0])) <= slot.queue_bytes)):
                sent.append(unsent.popleft())
                slot.send(sent[-1].data)
                continue
            if not sent:
                return slot
            fresh_slot = self._settle(slot, sent.popleft(), results)
            if fresh_slot is not slot:
                slot = fresh_slot
                unsent.extendleft(reversed(sent))  # they never ran: the zygote runs its pipe in order
                sent.clear()

    def _settle(self, slot: _Slot, done: WireJob, results: list) -> _Slot:
        """Read `done`'s report from `slot` and give `done` its result; -> the slot to go on with (its
        replacement if it failed or could not wipe its scratch space)."""
        try:
            report = slot.receive()
            if report is None or report.get("id") != done.job_id or report.get("wiped") is not True:
                slot = self._replace(slot)
        except Exception as exc:  # noqa: BLE001 - a slot that cannot even be restarted
            log.warning("sandbox: slot %d: %s", slot.index, exc)
            results[done.index] = ExecutionResult(
                "sandbox_error", message=f"the execution slot failed: {exc}"[:300], tier=self.tier, metadata=done.job.metadata
            )
            return slot
        results[done.index] = self._verdict(report, done)
        return slot

    def _verdict(self, report: dict | None, done: WireJob) -> ExecutionResult:
        if report is None or report.get("id") != done.job_id:
            return ExecutionResult(
                "sandbox_error", message="the execution slot failed and was restarted", tier=self.tier, metadata=done.job.metadata
            )
        try:
            return to_result(report, done.plans, done.job, self.tier)
        except Exception as exc:  # noqa: BLE001 - the child's output defeated the judge: an error, not a pass
            return ExecutionResult(
                "error", message=f"the result could not be judged: {type(exc).__name__}"[:300], tier=self.tier, metadata=done.job.metadata
            )

    def _replace(self, slot: _Slot) -> _Slot:
        log.warning("sandbox: slot %d failed; restarting it", slot.index)
        slot.close()
        fresh = _Slot(slot.index, self.tier, self.limits, self.python)
        self._slots[slot.index] = fresh
        return fresh

    def close(self) -> None:
        for slot in self._slots:
            slot.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- verdicts ------------------------------------------------------------------------------------------

SIGNAL_TEXT = {
    signal.SIGKILL: "killed (memory, CPU or process limit)",
    signal.SIGXCPU: "killed: CPU time limit",
    signal.SIGSEGV: "crashed: segmentation fault",
    signal.SIGXFSZ: "killed: file size limit",
    signal.SIGABRT: "crashed: aborted",
    signal.SIGSYS: "killed: forbidden system call",
}


# What a result keeps of a job's output: it may print up to `max_output_bytes` (1 MB), and a batch's
# results travel through Ray together. The start of stdout; the end of stderr, where a traceback ends.
KEPT_OUTPUT_CHARS = 8192


def to_result(report: dict, plans: list[Plan], job: Job, tier: str) -> ExecutionResult:
    """The whole verdict, computed here from the child's values; a missing record is never a pass."""
    common = dict(
        stdout=report.get("stdout", "")[:KEPT_OUTPUT_CHARS],
        stderr=report.get("stderr", "")[-KEPT_OUTPUT_CHARS:],
        wall_ms=report.get("wall_ms", 0.0),
        tier=tier,
        metadata=job.metadata,
    )
    if report.get("status") == "sandbox_error":
        return ExecutionResult("sandbox_error", message=report.get("message", ""), **common)
    judged = {i for i, p in enumerate(plans) if p.judged}
    cut = report.get("status") == "output_limit"
    records, stages, tampered = parse_records(report.get("record", ""), set(range(len(plans))) - judged, cut)
    if judged and not tampered:  # the judge's verdicts, from the judge's own channel only
        judge_records, judge_stages, tampered = parse_records(report.get("judge", ""), judged, cut)
        records.update(judge_records)
        stages += [{"stage": "judged-" + str(s.get("stage")), "n": s.get("n")} for s in judge_stages]
    entry = job.entry_point or "candidate"
    if tampered:
        tests = tuple(TestResult("error", f"not judged: {tampered}") for _ in plans)
        return ExecutionResult("error", tests, message=f"error: {tampered}", **common)
    load_error = next((s for s in stages if s.get("stage") == "load_error"), None)
    if load_error is not None:
        text = f"the program failed before any test ran: {load_error.get('message') or load_error.get('error')}"
        tests = tuple(TestResult("error", "not run: the program failed to load") for _ in plans)
        status = "timeout" if load_error.get("error") == "timeout" else "error"
        return ExecutionResult(status, tests, message=text, **common)
    tests = []
    for i, plan in enumerate(plans):
        verdict = judge(plan, records.get(i), entry)
        ms = float(records.get(i, {}).get("ms", 0.0) or 0.0)
        tests.append(TestResult(verdict.status, verdict.message, ms, value=verdict.value))
    done = any(s.get("stage") == "done" and s.get("n") == len(plans) for s in stages) and (
        not judged or any(s.get("stage") == "judged-judged" and s.get("n") == len(judged) for s in stages)
    )
    message = ""
    status_word = report.get("status")
    if status_word == "timeout":
        message = f"timed out: the program ran past {job_timeout_text(report)}"
        status = "timeout"
    elif status_word == "output_limit":
        message = "killed: the program printed more output than allowed"
        status = "killed"
    elif status_word == "disk_limit":
        message = "killed: the program wrote more files or bytes than its scratch space allows (sandbox.max_files, sandbox.tmpfs_mb)"
        status = "killed"
    elif report.get("signal"):
        message = SIGNAL_TEXT.get(report["signal"], f"killed by signal {report['signal']}")
        status = "killed"
    elif all(t.status == "passed" for t in tests) and done:
        status = "passed"
    elif not done:
        message = "the program exited before finishing the tests"
        status = "error"
    elif any(t.status == "error" for t in tests):
        status = "error"
    elif any(t.status == "timeout" for t in tests) and not any(t.status == "failed" for t in tests):
        status = "timeout"
    else:
        status = "failed"
    if status != "passed" and tests and all(t.status == "passed" for t in tests):
        status = "error"  # every value was right but the run did not end cleanly: still not a pass
    return ExecutionResult(status, tuple(tests), message=message, **common)


def parse_records(text: str, allowed: set[int], cut: bool) -> tuple[dict[int, dict], list[dict], str]:
    """(test index -> record, stage records, why the channel is not to be trusted: "" if it is).
    Only tests in `allowed` may be reported on this channel, each once."""
    records: dict[int, dict] = {}
    stages: list[dict] = []
    lines = text.splitlines()
    if cut and lines and not text.endswith("\n"):
        lines.pop()  # the line cut by the output limit
    for line in lines:
        try:
            record = json_line(line)
        except (ValueError, RecursionError):  # not JSON, an int past the int-to-str limit, nesting past the parser's
            return records, stages, "the result channel carried something that is not a result"
        if not isinstance(record, dict):
            return records, stages, "the result channel carried something that is not a result"
        if "stage" in record:
            stages.append(record)
        elif isinstance(record.get("i"), int) and record["i"] in allowed:
            if record["i"] in records:
                return records, stages, "a test was reported twice (forged results)"
            records[record["i"]] = record
        else:
            return records, stages, "the result channel carried an unknown record"
    return records, stages, ""


def job_timeout_text(report: dict) -> str:
    return f"its time limit ({report.get('wall_ms', 0) / 1000:.1f}s)"
