from pytest import approx

from mean_and_spread import mean, std


def test_mean():
    assert mean([1, 2, 3, 4]) == approx(2.5)


def test_std():
    assert std([2, 4, 4, 4, 5, 5, 7, 9]) == approx(2.0)
