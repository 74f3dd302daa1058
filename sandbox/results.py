"""What an execution returns: a verdict per test, and short feedback text for the refine prompt."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class _NoValue(enum.Enum):
    """A call test that returned nothing usable (it raised, timed out, or returned an object that
    cannot leave the sandbox). An Enum, so that it stays identical after pickling through Ray."""

    NO_VALUE = "no value"


NO_VALUE = _NoValue.NO_VALUE

# Job-level outcomes. "passed" requires every test passed with a complete, well-formed report.
STATUSES = ("passed", "failed", "error", "timeout", "killed", "sandbox_error")


@dataclass(frozen=True)
class TestResult:
    status: str  # passed | failed | error | timeout
    message: str = ""
    ms: float = 0.0
    value: Any = NO_VALUE  # the value a `call` test's function returned


@dataclass(frozen=True)
class ExecutionResult:
    status: str
    tests: tuple[TestResult, ...] = ()
    message: str = ""  # job-level: load error, timeout, killed (memory, output, processes)
    stdout: str = ""
    stderr: str = ""
    wall_ms: float = 0.0
    tier: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def num_passed(self) -> int:
        return sum(t.status == "passed" for t in self.tests)

    @property
    def pass_rate(self) -> float:
        """S_ut in LeDex: the fraction of the problem's unit tests this program passes."""
        return self.num_passed / len(self.tests) if self.tests else 0.0

    def feedback(self, max_chars: int = 800, max_tests: int = 3) -> str:
        """Execution feedback as the explain-then-refine prompt shows it: what failed and how."""
        if self.passed:
            return "All tests passed."
        lines = [self.message] if self.message else []
        # Tests that never ran say nothing the job-level message does not already say.
        shown = [
            t.message
            for t in self.tests
            if t.status != "passed" and t.message and not t.message.startswith("not run") and not t.message.endswith("before this test)")
        ]
        lines += shown[:max_tests]
        if len(shown) > max_tests:
            lines.append(f"... and {len(shown) - max_tests} more failing tests")
        if self.tests:
            lines.append(f"{self.num_passed} of {len(self.tests)} tests passed.")
        stderr = self.stderr.strip()
        if stderr and self.status in ("error", "killed"):
            lines.append("stderr: " + stderr[-300:])
        text = "\n".join(lines)
        return text if len(text) <= max_chars else text[: max_chars - 4] + " ..."
