from average import average


def test_three():
    assert average([1, 2, 3]) == 2


def test_one():
    assert average([4]) == 4
