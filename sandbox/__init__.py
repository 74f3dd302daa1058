"""Run hostile, model-generated Python safely: a fork server per slot inside namespaces, seccomp and
rlimits, with every verdict computed outside the sandbox. See executor.py for the API."""

from sandbox.executor import Job, Limits, Sandbox, SandboxUnavailable
from sandbox.results import ExecutionResult, TestResult

__all__ = ["ExecutionResult", "Job", "Limits", "Sandbox", "SandboxUnavailable", "TestResult"]
