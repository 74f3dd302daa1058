"""Decode the values a sandboxed child returned, and compare them with expected values.

This runs in the trusted parent. Decoding builds only exact builtin types from JSON (never pickle),
so whatever a candidate returns, the comparison below is plain Python equality on plain data.
"""

from __future__ import annotations

import math
from typing import Any

# One definition, shared with the sandbox side (the zygote is standard library only, and decodes the
# arguments a judged test passes to the candidate).
from sandbox.zygote import MalformedValue, decode, encode  # noqa: F401


def contains_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(contains_float(v) for v in value)
    if isinstance(value, dict):
        return any(contains_float(v) for v in value.values())
    return False


def equal(got: Any, expected: Any, atol: float = 0.0) -> bool:
    """Python equality, except that floats (anywhere inside) may differ by `atol`.

    As EvalPlus does, an expected value containing floats is compared with atol 1e-6 when none is given.
    """
    if atol == 0.0 and contains_float(expected):
        atol = 1e-6
    return _equal(got, expected, atol)


def _equal(got: Any, expected: Any, atol: float) -> bool:
    if isinstance(expected, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if math.isnan(expected):
            return isinstance(got, float) and math.isnan(got)
        return got == expected or (atol > 0 and abs(got - expected) <= atol)
    if type(got) is not type(expected) and not (isinstance(got, (int, float)) and isinstance(expected, (int, float))):
        return got == expected
    if isinstance(expected, (list, tuple)):
        return len(got) == len(expected) and all(_equal(g, e, atol) for g, e in zip(got, expected))
    if isinstance(expected, dict):
        return got.keys() == expected.keys() and all(_equal(got[k], expected[k], atol) for k in expected)
    return got == expected


def show(value: Any, limit: int = 120) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int past Python's int-to-str limit
        return f"<an int of {value.bit_length()} bits>" if isinstance(value, int) else "<a value too large to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
