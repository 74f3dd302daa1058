import pytest

from parse_age import parse_age


def test_valid():
    assert parse_age("42") == 42


@pytest.mark.parametrize("text", ["-1", "151"])
def test_out_of_range(text):
    with pytest.raises(ValueError):
        parse_age(text)
