import pytest

from fizzbuzz import fizzbuzz


@pytest.mark.parametrize("n, expected", [(1, "1"), (3, "Fizz"), (5, "Buzz"), (15, "FizzBuzz"), (30, "FizzBuzz")])
def test_fizzbuzz(n, expected):
    assert fizzbuzz(n) == expected
