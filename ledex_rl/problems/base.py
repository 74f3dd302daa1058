"""The one shape every problem source produces: a task, its reference solution and its unit tests.

Tests come in four kinds, because benchmarks state them in four ways. The sandbox turns each into
"values computed inside, compared outside" (see sandbox/), so the expected values stay out of reach
of the candidate wherever the test's shape allows it:

- assert: one Python `assert` statement (MBPP, most HumanEval checks); `candidate` names the entry point.
- call:   call the entry point with JSON arguments, compare the return value with `expected` (MBPP+, APPS).
- io:     feed `stdin`, compare stdout with `expected_stdout` (APPS, CodeContests).
- script: a block of test code that cannot be split (loops, helpers); it passes if it raises nothing.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from ledex_rl.errors import UserError

log = logging.getLogger(__name__)

TestKind = Literal["assert", "call", "io", "script"]


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest class

    kind: TestKind
    source: str = ""  # assert / script: Python source
    args: tuple = ()  # call: positional arguments
    expected: Any = None  # call: expected return value
    stdin: str = ""  # io
    expected_stdout: str = ""  # io
    atol: float = 0.0  # call: absolute tolerance for floats
    group: str = "base"  # "base" or "plus" (EvalPlus's extra tests)

    def describe(self, entry_point: str = "candidate") -> str:
        """A short human-readable form, used in execution feedback."""
        if self.kind in ("assert", "script"):
            return self.source.strip()
        if self.kind == "call":
            args = ", ".join(repr(a) for a in self.args)
            return f"assert {entry_point}({args}) == {self.expected!r}"
        return f"input: {self.stdin[:200]!r} expected output: {self.expected_stdout[:200]!r}"


@dataclass(frozen=True)
class Problem:
    """A coding task. `prompt` is what the model is asked; `preamble` is code (imports) that the
    task's own prompt provides and that is placed before any candidate program; `test_setup` runs
    after the candidate and before the tests."""

    task_id: str
    source: str
    prompt: str
    entry_point: str
    reference_solution: str
    tests: tuple[TestCase, ...]
    preamble: str = ""
    test_setup: str = ""
    starter_code: str = ""  # a signature the answer must complete (HumanEval, some APPS)
    metadata: dict = field(default_factory=dict)

    @property
    def io_based(self) -> bool:
        return bool(self.tests) and all(t.kind == "io" for t in self.tests)


class MalformedRow(ValueError):
    """A dataset row that cannot become a Problem; reported with its file and line, then skipped."""


@dataclass
class LoadReport:
    """What a loader read and what it skipped (and why), so that nothing is dropped silently."""

    source: str
    loaded: int = 0
    skipped: list[str] = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        message = f"{where}: skipped malformed row: {reason}"
        log.warning(message)
        self.skipped.append(message)


def read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, record) from a .jsonl[.gz], .json (a list) or .parquet file.

    A line that is not JSON is yielded as a MalformedRow so the caller can report it and go on.
    """
    suffixes = "".join(path.suffixes[-2:])
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield i, row
        return
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict):  # {"train": [...]} or {id: row}
            data = next((v for v in data.values() if isinstance(v, list)), list(data.values()))
        for i, row in enumerate(data, start=1):
            yield i, row
        return
    opener = gzip.open if suffixes.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for i, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as exc:
                yield i, MalformedRow(f"not valid JSON ({exc.msg} at column {exc.colno})")


def require(row: Any, *keys: str) -> None:
    if not isinstance(row, dict):
        raise MalformedRow(f"expected a JSON object, got {type(row).__name__}")
    missing = [k for k in keys if k not in row or row[k] is None]
    if missing:
        raise MalformedRow(f"missing field(s) {', '.join(missing)}")


class SourceUnavailable(UserError, RuntimeError):
    """A problem source that cannot be reached (no file, hub offline); the message says what to pass."""
