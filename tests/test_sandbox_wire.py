"""The text a job's result lines and the zygote's reports are written in: the zygote's warm JSON encoder
must write exactly what json.dumps writes, which the host parses."""

from __future__ import annotations

import json

import pytest

from sandbox.zygote import to_json

VALUES = [
    {"i": 0, "values": [1, -2, 3.5, -0.0, 1e300, 5e-324, 10**40]},
    {"i": 1, "values": [float("nan"), float("inf"), float("-inf")]},
    {"i": 2, "values": ['é\n"\\\x00\u2028', "𝄞", ""]},
    {"i": 3, "values": [None, True, False, [], {}, [[{"t": "set", "v": [1, 2]}]]]},
    {"stage": "done", "n": 3},
    {"id": 7, "status": "exited", "signal": 0, "exit_code": None, "wall_ms": 1.25, "reaped": True, "wiped": True},
    {1: "int keys become strings", 2.5: "as do float keys"},
]


@pytest.mark.parametrize("value", VALUES)
def test_the_warm_encoder_writes_what_json_dumps_writes(value):
    assert to_json(value) == json.dumps(value)
    assert json.loads(to_json(value)) == json.loads(json.dumps(value))


def test_what_json_cannot_carry_is_refused_as_json_dumps_refuses_it():
    for value in ({"v": object()}, {"v": {1, 2}}, {(1, 2): "tuple key"}):
        with pytest.raises(TypeError):
            json.dumps(value)
        with pytest.raises(TypeError):
            to_json(value)
